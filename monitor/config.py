"""Configuration: config.yaml validated once at start-up into typed, frozen objects.

Every error names the key path and what was expected, e.g.
``cameras.dock.zones.cart.polygon: needs at least 3 points``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Point = tuple[float, float]


class ConfigError(Exception):
    """A configuration problem; ``str()`` lists one ``key.path: message`` per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- secrets -------------------------------------------------------------------------------


class SecretSource(Strict):
    """A secret given inline, from a file (e.g. a systemd credential) or from an environment variable."""

    value: SecretStr | None = None
    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        given = [n for n in ("value", "file", "env") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value, file, env")
        return self

    def reveal(self) -> str:
        if self.value is not None:
            return self.value.get_secret_value()
        if self.file is not None:
            return _read_secret_file(self.file)
        if self.env not in os.environ:
            raise ConfigError([f"environment variable {self.env} is not set"])
        return os.environ[self.env]


def _read_secret_file(path: Path) -> str:
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and credentials:
        path = Path(credentials) / path
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError([f"cannot read secret file {path}: {exc.strerror}"]) from exc


# --- MQTT and metrics -----------------------------------------------------------------------


class TlsConfig(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip hostname verification (testing only)")

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("monitor", pattern=r"^[^#+\s]+$")
    client_id: str = "monitor"
    username: str | None = None
    password: SecretSource | None = None
    tls: TlsConfig | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(30, ge=5, le=3600)
    heartbeat_s: float = Field(30.0, gt=0)
    bare_topics: bool = Field(True, description="also publish <prefix>/<camera>/<zone>/<class> integers")
    queue_size: int = Field(10000, ge=10)

    @field_validator("prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")


class MetricsConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


# --- models ---------------------------------------------------------------------------------


class ModelConfig(Strict):
    path: Path
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|\d+|mps)$")
    half: bool | None = Field(None, description="FP16 inference; default: on for CUDA, off for CPU")
    imgsz: int = Field(640, ge=32, le=4096)
    conf: float = Field(0.25, ge=0, le=1, description="default confidence threshold per class")
    class_conf: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    iou: float = Field(0.5, gt=0, le=1)
    agnostic_nms: bool = Field(True, description="one box per object even when two classes overlap")
    aliases: dict[str, Name] = Field({}, description="report model class X as label Y")
    max_batch: int = Field(8, ge=1, le=256)
    batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    warmup: bool = True

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32, got {value}")
        return value


# --- cameras, zones, lines ------------------------------------------------------------------


def _check_polygon(points: list[Point]) -> list[Point]:
    if len(points) < 3:
        raise ValueError("needs at least 3 points")
    if len(set(points)) < 3:
        raise ValueError("needs at least 3 distinct points")
    if _polygon_area(points) == 0:
        raise ValueError("points are collinear (zero area)")
    return points


def _polygon_area(points: list[Point]) -> float:
    twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))
    return abs(twice) / 2


class ZoneConfig(Strict):
    polygon: list[Point]
    classes: list[str] | None = Field(None, description="labels counted here; default: the camera's")

    _polygon = field_validator("polygon")(classmethod(lambda cls, v: _check_polygon(v)))


class LineConfig(Strict):
    points: tuple[Point, Point]
    classes: list[str] | None = None

    @field_validator("points")
    @classmethod
    def _distinct(cls, value: tuple[Point, Point]) -> tuple[Point, Point]:
        if value[0] == value[1]:
            raise ValueError("the two points must differ")
        return value


class SmoothingConfig(Strict):
    method: Literal["median", "hysteresis", "none"] = "median"
    window: int = Field(5, ge=1, le=300, description="frames (median window or hold frames)")


class ReconnectConfig(Strict):
    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(30.0, gt=0)
    stall_s: float = Field(10.0, gt=0, description="no frame for this long counts as a drop")

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self


class MotionConfig(Strict):
    enabled: bool = False
    threshold: float = Field(0.002, ge=0, le=1, description="fraction of changed pixels that counts as motion")
    keepalive_s: float = Field(2.0, gt=0, description="re-check a still scene at least this often")
    scale_width: int = Field(160, ge=16, le=1920)


class CameraConfig(Strict):
    source: str | int
    model: Name
    description: str = ""
    fps: float | None = Field(None, gt=0, le=240, description="target processing rate; default: source rate")
    realtime: bool = Field(True, description="play files at their native rate (False: as fast as possible)")
    loop: bool = False
    classes: list[str] | None = Field(None, description="labels to count; default: all")
    tracker: Literal["bytetrack", "botsort", "none"] = "bytetrack"
    anchor: Literal["bottom_center", "center"] = "bottom_center"
    smoothing: SmoothingConfig = SmoothingConfig()
    zones: dict[Name, ZoneConfig] = {}
    lines: dict[Name, LineConfig] = {}
    reconnect: ReconnectConfig = ReconnectConfig()
    motion: MotionConfig = MotionConfig()

    @field_validator("source")
    @classmethod
    def _source_kind(cls, value: str | int) -> str | int:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("a device index must be >= 0")
            return value
        if not value.strip():
            raise ValueError("must not be empty")
        if re.match(r"^[a-z][a-z0-9+.-]*://", value) and not re.match(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|file)://", value):
            raise ValueError(f"unsupported URL scheme in {value!r} (rtsp, http(s), rtmp, udp, tcp, file)")
        return value


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    interval_s: float = Field(10.0, gt=0, description="one line per camera per interval")


class AppConfig(Strict):
    mqtt: MqttConfig = MqttConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    models: dict[Name, ModelConfig]
    cameras: dict[Name, CameraConfig]
    source_path: Path | None = Field(None, exclude=True)

    @field_validator("models", "cameras")
    @classmethod
    def _not_empty(cls, value: dict) -> dict:
        if not value:
            raise ValueError("needs at least one entry")
        return value

    @model_validator(mode="after")
    def _models_exist(self) -> AppConfig:
        for name, camera in self.cameras.items():
            if camera.model not in self.models:
                raise _located_error(
                    ("cameras", name, "model"),
                    f"unknown model {camera.model!r} (defined: {', '.join(self.models)})",
                )
        return self


class _LocatedError(ValueError):
    def __init__(self, loc: tuple, message: str):
        self.loc = loc
        super().__init__(message)


def _located_error(loc: tuple, message: str) -> _LocatedError:
    return _LocatedError(loc, message)


# --- loading --------------------------------------------------------------------------------


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config; raise ConfigError naming every problem's key path."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return parse_config(data, base_dir=path.parent, source_path=path)


def parse_config(data: dict, base_dir: Path = Path("."), source_path: Path | None = None) -> AppConfig:
    try:
        config = AppConfig.model_validate({**data, "source_path": source_path})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except _LocatedError as exc:
        raise ConfigError([f"{_dotted(exc.loc)}: {exc}"]) from None
    return _resolve_paths(config, base_dir)


def _describe(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        context = error.get("ctx", {}).get("error")
        if isinstance(context, _LocatedError):
            problems.append(f"{_dotted(context.loc)}: {context}")
            continue
        problems.append(f"{_dotted(_drop_union_tags(error['loc']))}: {_message(error)}")
    return sorted(set(problems), key=problems.index)


def _drop_union_tags(loc: tuple) -> tuple:
    # pydantic adds the tried type ('str', 'int', 'tuple[float, float]'...) to the path of union errors
    return tuple(part for part in loc if not (isinstance(part, str) and ("[" in part or part in {"str", "int", "float"})))


def _dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _message(error: dict) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling)"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{error['input']!r} must use only letters, digits, '_' and '-'"
    return re.sub(r"^(Value error|Assertion failed), ", "", message)


def _resolve_paths(config: AppConfig, base_dir: Path) -> AppConfig:
    """Model paths and file sources are relative to the config file's folder."""
    models = {
        name: model.model_copy(update={"path": _relative_to(base_dir, model.path)}) for name, model in config.models.items()
    }
    cameras = {name: camera.model_copy(update={"source": _source_path(base_dir, camera.source)}) for name, camera in config.cameras.items()}
    return config.model_copy(update={"models": models, "cameras": cameras})


def _relative_to(base_dir: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base_dir / path)


def _source_path(base_dir: Path, source: str | int) -> str | int:
    if isinstance(source, int) or "://" in source or source.startswith("/dev/"):
        return source
    if source.isdigit():
        return int(source)
    return str(_relative_to(base_dir, Path(source)))


def check_model_classes(config: AppConfig, model_names: dict[str, list[str]]) -> None:
    """Check class names in the config against the loaded models' labels (after aliases)."""
    problems = []
    for name, model in config.models.items():
        for cls in list(model.class_conf) + list(model.aliases):
            if cls not in model_names[name]:
                where = "class_conf" if cls in model.class_conf else "aliases"
                problems.append(f"models.{name}.{where}.{cls}: unknown class (model has: {', '.join(model_names[name])})")
    for cam_name, camera in config.cameras.items():
        labels = model_labels(config.models[camera.model], model_names[camera.model])
        problems += _unknown_labels(f"cameras.{cam_name}.classes", camera.classes, labels)
        for zone_name, zone in camera.zones.items():
            problems += _unknown_labels(f"cameras.{cam_name}.zones.{zone_name}.classes", zone.classes, labels)
        for line_name, line in camera.lines.items():
            problems += _unknown_labels(f"cameras.{cam_name}.lines.{line_name}.classes", line.classes, labels)
    if problems:
        raise ConfigError(problems)


def model_labels(model: ModelConfig, class_names: list[str]) -> list[str]:
    """The labels a model reports: its class names after aliases, in order, without repeats."""
    return list(dict.fromkeys(model.aliases.get(name, name) for name in class_names))


def _unknown_labels(where: str, wanted: list[str] | None, labels: list[str]) -> list[str]:
    return [f"{where}: unknown class {label!r} (known: {', '.join(labels)})" for label in wanted or [] if label not in labels]
