"""Loading: YAML -> validated, frozen ``AppConfig``; every problem named by its key path; paths resolved."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from monitor.config.app import AppConfig, ModelConfig, MqttConfig
from monitor.config.base import NAME_PATTERN, ConfigError, LocatedError
from monitor.config.camera import StreamSource
from monitor.config.host import check_host
from monitor.config.rules import PersonDownRule

TLS_FILES = ("ca_file", "cert_file", "key_file")


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config; raise ConfigError naming every problem's key path.

    Besides the schema: duplicate keys, and what the host must provide (TLS files that load, a
    metrics address this host can listen on)."""
    path = Path(path)
    data = read_yaml(path)
    config = parse_config(data, base_dir=path.parent, source_path=path)
    problems = check_host(config)
    if problems:
        raise ConfigError(problems)
    warning = check_secret_permissions(path, data, config)
    if warning:
        logging.getLogger("monitor").warning("%s", warning)
    return config


def read_yaml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8"]) from None
    try:
        duplicates = duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if duplicates:
        raise ConfigError([f"{where}: {problem} in {path}" for where, problem in duplicates])
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return data


def duplicate_keys(node: yaml.Node | None, where: tuple = ()) -> list[tuple[str, str]]:
    """Keys given twice in one mapping (YAML would silently keep the last), as (key path, problem)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in first_line:
                found.append((_dotted(where + (key,)), f"duplicate key (lines {first_line[key]} and {key_node.start_mark.line + 1}; "
                                                       f"the second would silently replace the first)"))
            elif key is not None:
                first_line[key] = key_node.start_mark.line + 1
            found += duplicate_keys(value_node, where + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += duplicate_keys(item, where + (index,))
    return found


def parse_config(data: dict, base_dir: Path = Path("."), source_path: Path | None = None) -> AppConfig:
    try:
        config = AppConfig.model_validate({**data, "source_path": source_path})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except LocatedError as exc:
        raise ConfigError([f"{_dotted(exc.loc)}: {exc}"]) from None
    if "live_view" in data:
        logging.getLogger("monitor").warning("live_view: deprecated name of the web section; rename it to web (it works as before)")
    return _resolve_paths(config, base_dir)


def _describe(exc: ValidationError) -> list[str]:
    problems = []
    errors = exc.errors()
    for error in errors:
        if _other_union_member(error, errors):
            continue
        context = error.get("ctx", {}).get("error")
        if isinstance(context, LocatedError):  # its loc is relative to the model that raised it
            problems.append(f"{_dotted(_drop_union_tags(error['loc']) + context.loc)}: {context}")
            continue
        problems.append(f"{_dotted(_drop_union_tags(error['loc']))}: {_message(error)}")
    return sorted(set(problems), key=problems.index)


def _other_union_member(error: dict, errors: list[dict]) -> bool:
    """'not a string' about a mapping given for ``str | int | a model``: the model's own errors say what is wrong."""
    if error["type"] not in ("string_type", "int_type") or not isinstance(error["input"], dict):
        return False
    where = _drop_union_tags(error["loc"])
    return any(other is not error and _drop_union_tags(other["loc"])[: len(where)] == where and other["type"] not in
               ("string_type", "int_type") for other in errors)


def _drop_union_tags(loc: tuple) -> tuple:
    # pydantic adds the tried type ('str', 'int', 'tuple[float, float]'...) to the path of union errors
    return tuple(part for part in loc if not (isinstance(part, str) and ("[" in part or part in {"str", "int", "float"})))


def _dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


PATTERN_MEANINGS = {
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
    """What the monitor reads (models, file sources, TLS files, ``state_dir`` itself) is relative to the config file's
    folder; what it writes (outbox, evidence, escalated frames, model exports) is relative to ``state_dir``, which is writable under
    the systemd unit while the config folder is not. Every path comes out absolute."""
    base_dir = base_dir.absolute()
    models = {
        name: model.model_copy(update={"path": _relative_to(base_dir, model.path) if model.path else None})
        for name, model in config.models.items()
    }
    cameras = {name: camera.model_copy(update={"source": _source_path(base_dir, camera.source)}) for name, camera in config.cameras.items()}
    _check_file_sources(cameras)
    state_dir = _relative_to(base_dir, config.state_dir)
    update = {"models": models, "cameras": cameras, "state_dir": state_dir, "mqtt": _resolve_mqtt(config, base_dir, state_dir)}
    update["cache_dir"] = _relative_to(state_dir, config.cache_dir or Path("cache"))
    if config.escalation and config.escalation.dataset.dir:
        dataset = config.escalation.dataset.model_copy(update={"dir": _relative_to(state_dir, config.escalation.dataset.dir)})
        update["escalation"] = config.escalation.model_copy(update={"dataset": dataset})
    evidence_dir = _relative_to(state_dir, config.evidence.dir or Path("evidence"))
    update["evidence"] = config.evidence.model_copy(update={"dir": evidence_dir})
    return config.model_copy(update=update)


def _check_file_sources(cameras: dict) -> None:
    """A file source that is not there would only be retried for ever: name it now."""
    problems = [
        f"cameras.{name}.source: file not found: {camera.source}"
        for name, camera in cameras.items()
        if is_file_path(camera.source) and not Path(camera.source.removeprefix("file://")).is_file()
    ]
    if problems:
        raise ConfigError(problems)


def is_file_path(source: object) -> bool:
    """A source that names a video file (a path or file:// URL), not a stream or a device."""
    return isinstance(source, str) and ("://" not in source or source.startswith("file://")) and not source.startswith("/dev/")


def _resolve_mqtt(config: AppConfig, base_dir: Path, state_dir: Path) -> MqttConfig:
    mqtt, outbox = config.mqtt, config.mqtt.outbox
    path = _relative_to(state_dir, outbox.path) if outbox.path else state_dir / f"outbox-{mqtt.client_id}.sqlite"
    update: dict = {"outbox": outbox.model_copy(update={"path": path})}
    if mqtt.tls:
        files = {key: _relative_to(base_dir, getattr(mqtt.tls, key)) for key in TLS_FILES if getattr(mqtt.tls, key)}
        update["tls"] = mqtt.tls.model_copy(update=files)
    return mqtt.model_copy(update=update)


def check_secret_permissions(path: Path, data: dict, config: AppConfig) -> str | None:
    """A problem when the file holds a secret and other users can read it (None: fine). An inline ``{value: ...}``
    is refused (or a warning, by ``service.secrets_in_readable_config``); a password inside a camera URL, the
    older way to give one, is a warning."""
    inline, in_urls = _inline_secret_keys(data), _url_password_keys(data)
    mode = path.stat().st_mode
    if not (inline or in_urls) or not mode & 0o004:
        return None
    where = f"in {path}, which every user can read (mode {mode & 0o777:o})"
    instead = ("use {file: NAME} (a systemd credential, LoadCredential=) or {env: VAR} instead; chmod 600 helps only "
               "where the monitor runs as the file's owner, not under the unit's DynamicUser=")
    if not inline:
        return f"{', '.join(in_urls)}: a password inside the URL {where}; give the login as {{url, username, password}} and {instead}"
    problem = f"{', '.join(inline)}: inline secret {where}; {instead}"
    if config.service.secrets_in_readable_config == "refuse":
        raise ConfigError([problem])
    return problem


def _url_password_keys(data: dict) -> list[str]:
    cameras = data.get("cameras") if isinstance(data.get("cameras"), dict) else {}
    return [
        f"cameras.{name}.source"
        for name, camera in cameras.items()
        if isinstance(camera, dict) and isinstance(camera.get("source"), str) and urlsplit(camera["source"]).password
    ]


def _inline_secret_keys(data: object, where: tuple = ()) -> list[str]:
    if isinstance(data, dict):
        if "value" in data and where and where[-1] in {"password", "api_key", "token", "secret"}:
            return [_dotted(where + ("value",))]
        return [k for key, value in data.items() for k in _inline_secret_keys(value, where + (key,))]
    if isinstance(data, list):
        return [k for i, value in enumerate(data) for k in _inline_secret_keys(value, where + (i,))]
    return []


def _relative_to(base_dir: Path, path: Path) -> Path:
    """Absolute, without ``..`` parts (a path shown in logs and payloads; no link is followed)."""
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))


def _source_path(base_dir: Path, source: str | int | StreamSource) -> str | int | StreamSource:
    if not is_file_path(source) or source.startswith("file://"):
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
            if isinstance(rule, PersonDownRule):
                problems += _unknown_labels(f"{where}.fall_classes", rule.fall_classes, model_names[camera.model])
    if problems:
        raise ConfigError(problems)


def model_labels(model: ModelConfig, class_names: list[str]) -> list[str]:
    """The labels a model reports: its class names after aliases, in order, without repeats."""
    return list(dict.fromkeys(model.aliases.get(name, name) for name in class_names))


def _unknown_labels(where: str, wanted: list[str] | None, labels: list[str]) -> list[str]:
    return [f"{where}: unknown class {label!r} (known: {', '.join(labels)})" for label in wanted or [] if label not in labels]
