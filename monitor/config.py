"""Configuration: config.yaml validated once at start-up into typed, frozen objects.

Every error names the key path and what was expected, e.g.
``cameras.dock.zones.cart.polygon: needs at least 3 points``.
"""

from __future__ import annotations

import logging
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
Coordinate = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # image pixels, origin top-left
Point = tuple[Coordinate, Coordinate]


class ConfigError(Exception):
    """A configuration problem; ``str()`` lists one ``key.path: message`` per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _LocatedError(ValueError):
    """A validation error raised by an outer model about one of its inner keys (``loc`` relative to it)."""

    def __init__(self, loc: tuple, message: str):
        self.loc = loc
        super().__init__(message)


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


class OutboxConfig(Strict):
    """The durable store-and-forward outbox (monitor/outbox.py has the size policy)."""

    enabled: bool = True
    path: Path | None = Field(None, description="default: <state_dir>/outbox-<client_id>.sqlite")
    max_messages: int = Field(100_000, ge=100, description="hard limit; then count history, then the oldest events go")
    count_history: int = Field(1000, ge=1, description="unsent counts messages kept per topic")
    inflight: int = Field(100, ge=1, le=65535, description="messages handed to the broker before their PUBACK")
    synchronous: Literal["full", "normal"] = Field("full", description="full: survives power cuts")


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
    outbox: OutboxConfig = OutboxConfig()

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
    on_gpu_failure: Literal["cpu", "exit"] = Field("cpu", description="after a CUDA error: go on on the CPU, or exit for systemd")
    engine: Literal["none", "onnx", "openvino", "tensorrt"] = Field(
        "none", description="run an export of the model, built once and cached next to it (none: the file as given)"
    )
    threads: int | None = Field(None, ge=1, le=256, description="torch intra-op threads for CPU inference; default: Ultralytics' (cores - 1, at most 8)")

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
    crossing = _crossing_edges(points)
    if crossing:
        raise ValueError(f"edges {crossing[0]} and {crossing[1]} cross (the outline must not intersect itself)")
    if _polygon_area(points) == 0:
        raise ValueError("points are collinear (zero area)")
    return points


def _crossing_edges(points: list[Point]) -> tuple[int, int] | None:
    """The first two non-adjacent edges (edge i runs from point i to i+1) that properly cross, if any."""
    edges = list(zip(points, points[1:] + points[:1]))
    for i in range(len(edges)):
        for j in range(i + 2, len(edges)):
            if i == 0 and j == len(edges) - 1:
                continue  # the last edge and the first share point 0
            if _segments_cross(*edges[i], *edges[j]):
                return i, j
    return None


def _segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    def side(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


def _polygon_area(points: list[Point]) -> float:
    twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))
    return abs(twice) / 2


class ZoneConfig(Strict):
    polygon: list[Point]
    classes: list[str] | None = Field(None, description="labels counted here; default: the camera's")
    description: str = Field("", description="what the zone is, for people and for the escalation prompt")

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


class EscalationThresholds(Strict):
    grey_margin: float = Field(0.15, gt=0, le=1, description="a detection this close to its class threshold is unsure")
    grey_classes: list[str] | None = Field(None, description="model classes whose unsure detections count; default: all")
    flicker_window: int = Field(10, ge=2, le=1000, description="frames over which raw count changes are counted")
    flicker_changes: int = Field(4, ge=1, description="raw count changes in the window that make a frame fully ambiguous")
    trigger: float = Field(0.5, gt=0, le=1, description="ambiguity score (0-1) at which a stretch starts")
    stretch_s: float = Field(2.0, ge=0, description="send the best frame of a stretch after at most this long")
    cooldown_s: float = Field(60.0, ge=0, description="quiet time after an ambiguity escalation of this camera")


class CameraEscalationConfig(Strict):
    enabled: bool = True
    off_site: bool = Field(True, description="frames of this camera may leave the site (false: on-site endpoints only)")
    max_per_hour: int = Field(30, ge=0)
    audit_every_s: float | None = Field(3600.0, gt=0, description="escalate a frame this often even when all is clear")
    thresholds: EscalationThresholds = EscalationThresholds()
    blur_people: bool = Field(False, description="blur the detector's person boxes before the frame leaves the host")
    person_labels: list[str] = Field(["person"], description="labels whose boxes blur_people blurs")
    draw_zones: bool = Field(True, description="outline and name the zones on the image sent")
    policy: Literal["report_only", "override_until_change"] = "report_only"
    override_max_s: float = Field(600.0, gt=0, description="an override ends after this long even if nothing changed")


# --- safety rules (monitor/safety.py) ------------------------------------------------------


class SafetyRuleBase(Strict):
    """What every safety rule has; times are seconds of the camera's stream (video time for files)."""

    name: Name | None = Field(None, description="unique per camera; default: the rule kind")
    classes: list[str] | None = Field(None, description="labels or raw model classes the rule watches; default: all")
    zones: list[Name] | None = Field(None, description="zones the rule watches; default: the whole image")
    min_seconds: float = Field(1.0, ge=0, description="the condition must hold this long before an event starts")
    clear_seconds: float = Field(2.0, ge=0, description="and be absent this long before it ends")
    cooldown_s: float = Field(30.0, ge=0, description="no new event for the same object/zone this long after one ends")
    ambiguous_conf: tuple[float, float] | None = Field(None, description="[lo, hi): detections scoring here are unsure")
    unreviewed_after_s: float | None = Field(
        30.0, ge=0, description="an ambiguous event waits this long for a review, then starts unconfirmed (null: forever)"
    )

    @field_validator("ambiguous_conf")
    @classmethod
    def _band(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 <= value[0] < value[1] <= 1:
            raise ValueError("needs 0 <= lo < hi <= 1")
        return value

    @property
    def key(self) -> str:
        return self.name or self.rule


class IntrusionRule(SafetyRuleBase):
    rule: Literal["intrusion"]
    zones: list[Name] = Field(min_length=1, description="the restricted zones")
    per: Literal["object", "zone"] = Field(
        "object", description="one event per tracked object, or one per zone while anyone is in it (survives id switches)"
    )


class PersonDownRule(SafetyRuleBase):
    rule: Literal["person_down"]
    fall_classes: list[str] = Field(["Fall"], description="raw model classes that mean a fallen person")
    wide_ratio: float | None = Field(1.3, gt=0, description="a tracked box this much wider than tall is down (null: off)")
    tall_ratio: float = Field(1.5, gt=0, description="...if it was this much taller than wide before")
    tall_within_s: float = Field(5.0, gt=0, description="...within this many seconds before it turned wide")
    min_seconds: float = Field(3.0, ge=0)
    ambiguous_conf: tuple[float, float] | None = (0.3, 0.6)


class OccupancyRule(SafetyRuleBase):
    rule: Literal["occupancy"]
    above: int | None = Field(None, ge=0, description="an event while more than this many are in the zone")
    below: int | None = Field(None, ge=1, description="an event while fewer than this many are in the zone")

    @model_validator(mode="after")
    def _one_bound(self) -> OccupancyRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above, below")
        return self


class DwellRule(SafetyRuleBase):
    rule: Literal["dwell"]
    max_seconds: float = Field(gt=0, description="an event when a tracked object stays in a zone longer than this")
    min_seconds: float = Field(0.0, ge=0)


class StaleCameraRule(SafetyRuleBase):
    rule: Literal["stale_camera"]
    no_frame_s: float = Field(10.0, gt=0, description="no frame for this long (checked on the wall clock)")
    black_level: float | None = Field(12.0, ge=0, le=255, description="mean brightness below this is black (null: off)")
    frozen_diff: float | None = Field(0.2, ge=0, description="mean pixel change below this is frozen (null: off)")
    min_seconds: float = Field(10.0, ge=0, description="black or frozen this long")
    cooldown_s: float = Field(0.0, ge=0)


SafetyRule = Annotated[IntrusionRule | PersonDownRule | OccupancyRule | DwellRule | StaleCameraRule, Field(discriminator="rule")]


class EvidenceConfig(Strict):
    """Where event snapshots go; the oldest are deleted beyond either bound, so the disk never fills."""

    enabled: bool = True
    dir: Path | None = Field(None, description="default: <state_dir>/evidence; relative: to the config file's folder")
    max_mb: float = Field(500.0, gt=0)
    max_age_days: float = Field(30.0, gt=0)
    min_free_mb: float = Field(200.0, ge=0, description="skip a snapshot when the disk has less free space than this")
    jpeg_quality: int = Field(85, ge=10, le=100)


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
    escalation: CameraEscalationConfig = CameraEscalationConfig()
    safety: list[SafetyRule] = Field([], description="safety rules (monitor/safety.py)")

    @model_validator(mode="after")
    def _safety_rules_fit(self) -> CameraConfig:
        names: set[str] = set()
        for i, rule in enumerate(self.safety):
            if rule.key in names:
                raise _LocatedError(("safety", i, "name"), f"duplicate rule name {rule.key!r} (give each rule its own name)")
            names.add(rule.key)
            for zone in rule.zones or []:
                if zone not in self.zones:
                    raise _LocatedError(("safety", i, "zones"), f"unknown zone {zone!r} (defined: {', '.join(self.zones) or 'none'})")
        return self

    @model_validator(mode="after")
    def _names_fit_topics(self) -> CameraConfig:
        from monitor.counting import ALL_ZONES  # late: counting imports this module
        from monitor.publishing import RESERVED_TOPIC_NAMES

        reserved = RESERVED_TOPIC_NAMES | {ALL_ZONES}
        for kind, names in (("zones", self.zones), ("lines", self.lines)):
            for name in names:
                if name in reserved:
                    raise _LocatedError(
                        (kind, name), f"{name!r} is reserved for MQTT topics (reserved: {', '.join(sorted(reserved))})"
                    )
        return self

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


class HomeAssistantConfig(Strict):
    enabled: bool = Field(False, description="publish retained MQTT discovery messages for Home Assistant")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+\s]+$")

    @field_validator("discovery_prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")


class LiveViewConfig(Strict):
    enabled: bool = Field(False, description="a read-only page with each camera's latest annotated frame")
    host: str = "127.0.0.1"
    port: int = Field(8099, ge=0, le=65535)
    refresh_s: float = Field(2.0, ge=0.2, le=3600)


class CircuitBreakerConfig(Strict):
    failures: int = Field(5, ge=1, description="consecutive failed calls that open the circuit")
    cooldown_s: float = Field(120.0, gt=0, description="how long an open circuit refuses calls before one trial")


class DatasetConfig(Strict):
    dir: Path | None = Field(None, description="save escalated frames here (none: do not save)")
    max_mb: float = Field(500.0, gt=0, description="oldest saved frames are deleted beyond this size")


class EscalationConfig(Strict):
    """The multimodal model endpoint (any OpenAI-compatible API) and the global limits."""

    enabled: bool = True
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; default: api.openai.com")
    model: str = Field("gpt-4o-mini", min_length=1)
    api: Literal["chat", "responses"] = Field("chat", description="Chat Completions (everywhere) or the Responses API")
    api_key: SecretSource | None = Field(None, description="{env: VAR} | {file: path} | {value: ...}; none for local servers")
    on_site: bool | None = Field(None, description="the endpoint is on this site; default: true for loopback/private hosts")
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10, description="retries on 429/5xx/timeouts, honouring Retry-After")
    image_long_side: int = Field(768, ge=64, le=4096)
    jpeg_quality: int = Field(85, ge=10, le=100)
    max_output_tokens: int = Field(600, ge=50)
    temperature: float | None = Field(0.0, ge=0, le=2, description="null: the provider's default (reasoning models)")
    price_input_per_1m: float = Field(0.15, ge=0, description="money per 1M input tokens")
    price_output_per_1m: float = Field(0.60, ge=0, description="money per 1M output tokens")
    price_per_image: float = Field(0.0, ge=0, description="flat money per request image, if the provider bills so")
    daily_budget: float = Field(1.0, ge=0, description="estimated money per UTC day, all cameras together")
    queue_size: int = Field(8, ge=1, le=1000)
    workers: int = Field(1, ge=1, le=16)
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    dataset: DatasetConfig = DatasetConfig()


def default_state_dir() -> Path:
    """systemd's StateDirectory= (the first, if several), else ./state next to the config file."""
    given = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(given) if given else Path("state")


class ServiceConfig(Strict):
    watchdog_stall_s: float = Field(120.0, gt=0, description="a camera loop, inference or publisher stuck this long stops the keep-alive")
    secrets_in_readable_config: Literal["refuse", "warn"] = Field(
        "refuse", description="an inline secret in a config file that other users can read"
    )


class AppConfig(Strict):
    state_dir: Path = Field(default_factory=default_state_dir, description="outbox and other durable state")
    service: ServiceConfig = ServiceConfig()
    mqtt: MqttConfig = MqttConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    live_view: LiveViewConfig = LiveViewConfig()
    models: dict[Name, ModelConfig]
    cameras: dict[Name, CameraConfig]
    escalation: EscalationConfig | None = Field(None, description="the multimodal model; none: never escalate")
    evidence: EvidenceConfig = EvidenceConfig()
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
                raise _LocatedError(
                    ("cameras", name, "model"),
                    f"unknown model {camera.model!r} (defined: {', '.join(self.models)})",
                )
        return self


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
    config = parse_config(data, base_dir=path.parent, source_path=path)
    warning = check_secret_permissions(path, data, config)
    if warning:
        logging.getLogger("monitor").warning("%s", warning)
    return config


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
        if isinstance(context, _LocatedError):  # its loc is relative to the model that raised it
            problems.append(f"{_dotted(_drop_union_tags(error['loc']) + context.loc)}: {context}")
            continue
        problems.append(f"{_dotted(_drop_union_tags(error['loc']))}: {_message(error)}")
    return sorted(set(problems), key=problems.index)


def _drop_union_tags(loc: tuple) -> tuple:
    # pydantic adds the tried type ('str', 'int', 'tuple[float, float]'...) to the path of union errors
    return tuple(part for part in loc if not (isinstance(part, str) and ("[" in part or part in {"str", "int", "float"})))


def _dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


PATTERN_MEANINGS = {
    r"^[^#+\s]+$": "expected a topic prefix without '#', '+' or whitespace",
    r"^(auto|cpu|cuda(:\d+)?|\d+|mps)$": "expected auto, cpu, cuda, cuda:N, a GPU index N or mps",
}


def _message(error: dict) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling)"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{error['input']!r} must use only letters, digits, '_' and '-'"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") in PATTERN_MEANINGS:
        return f"{error['input']!r}: {PATTERN_MEANINGS[error['ctx']['pattern']]}"
    return re.sub(r"^(Value error|Assertion failed), ", "", message)


def _resolve_paths(config: AppConfig, base_dir: Path) -> AppConfig:
    """Model paths and file sources are relative to the config file's folder."""
    models = {
        name: model.model_copy(update={"path": _relative_to(base_dir, model.path)}) for name, model in config.models.items()
    }
    cameras = {name: camera.model_copy(update={"source": _source_path(base_dir, camera.source)}) for name, camera in config.cameras.items()}
    update = {"models": models, "cameras": cameras, **_resolve_state_paths(config, base_dir)}
    if config.escalation and config.escalation.dataset.dir:
        dataset = config.escalation.dataset.model_copy(update={"dir": _relative_to(base_dir, config.escalation.dataset.dir)})
        update["escalation"] = config.escalation.model_copy(update={"dataset": dataset})
    evidence_dir = _relative_to(base_dir, config.evidence.dir) if config.evidence.dir else update["state_dir"] / "evidence"
    update["evidence"] = config.evidence.model_copy(update={"dir": evidence_dir})
    return config.model_copy(update=update)


def _resolve_state_paths(config: AppConfig, base_dir: Path) -> dict:
    state_dir = _relative_to(base_dir, config.state_dir)
    outbox = config.mqtt.outbox
    path = _relative_to(base_dir, outbox.path) if outbox.path else state_dir / f"outbox-{config.mqtt.client_id}.sqlite"
    mqtt = config.mqtt.model_copy(update={"outbox": outbox.model_copy(update={"path": path})})
    return {"state_dir": state_dir, "mqtt": mqtt}


def check_secret_permissions(path: Path, data: dict, config: AppConfig) -> str | None:
    """A problem when the file holds an inline secret and other users can read it (None: fine)."""
    inline = _inline_secret_keys(data)
    if not inline:
        return None
    mode = path.stat().st_mode
    if not mode & 0o004:
        return None
    problem = (
        f"{', '.join(inline)}: inline secret in {path}, which every user can read (mode {mode & 0o777:o}); "
        f"chmod 600 it, or use {{file: ...}} (systemd LoadCredential=) or {{env: ...}}"
    )
    if config.service.secrets_in_readable_config == "refuse":
        raise ConfigError([problem])
    return problem


def _inline_secret_keys(data: object, where: tuple = ()) -> list[str]:
    if isinstance(data, dict):
        if "value" in data and where and where[-1] in {"password", "api_key", "token", "secret"}:
            return [_dotted(where + ("value",))]
        return [k for key, value in data.items() for k in _inline_secret_keys(value, where + (key,))]
    if isinstance(data, list):
        return [k for i, value in enumerate(data) for k in _inline_secret_keys(value, where + (i,))]
    return []


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
        for i, rule in enumerate(camera.safety):  # rules may name labels or the model's own classes
            where = f"cameras.{cam_name}.safety.{i}"
            problems += _unknown_labels(f"{where}.classes", rule.classes, list(dict.fromkeys(labels + model_names[camera.model])))
            problems += _unknown_labels(f"{where}.fall_classes", getattr(rule, "fall_classes", None), model_names[camera.model])
    if problems:
        raise ConfigError(problems)


def model_labels(model: ModelConfig, class_names: list[str]) -> list[str]:
    """The labels a model reports: its class names after aliases, in order, without repeats."""
    return list(dict.fromkeys(model.aliases.get(name, name) for name in class_names))


def _unknown_labels(where: str, wanted: list[str] | None, labels: list[str]) -> list[str]:
    return [f"{where}: unknown class {label!r} (known: {', '.join(labels)})" for label in wanted or [] if label not in labels]
