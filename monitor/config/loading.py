"""Loading: YAML -> validated, frozen ``AppConfig``; every problem named by its key path; paths resolved."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from monitor.config.app import AppConfig, ModelConfig
from monitor.config.base import NAME_PATTERN, ConfigError, LocatedError
from monitor.config.rules import PersonDownRule

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
    except LocatedError as exc:
        raise ConfigError([f"{_dotted(exc.loc)}: {exc}"]) from None
    return _resolve_paths(config, base_dir)


def _describe(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        context = error.get("ctx", {}).get("error")
        if isinstance(context, LocatedError):  # its loc is relative to the model that raised it
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
    cache_dir = _relative_to(base_dir, config.cache_dir) if config.cache_dir else state_dir / "cache"
    return {"state_dir": state_dir, "cache_dir": cache_dir, "mqtt": mqtt}


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
            if isinstance(rule, PersonDownRule):
                problems += _unknown_labels(f"{where}.fall_classes", rule.fall_classes, model_names[camera.model])
    if problems:
        raise ConfigError(problems)


def model_labels(model: ModelConfig, class_names: list[str]) -> list[str]:
    """The labels a model reports: its class names after aliases, in order, without repeats."""
    return list(dict.fromkeys(model.aliases.get(name, name) for name in class_names))


def _unknown_labels(where: str, wanted: list[str] | None, labels: list[str]) -> list[str]:
    return [f"{where}: unknown class {label!r} (known: {', '.join(labels)})" for label in wanted or [] if label not in labels]
