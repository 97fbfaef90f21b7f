"""Configuration basics: the error type, the strict frozen base model, names, points and secrets."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
MAX_PIXELS = 100_000  # no camera frame is wider or taller
Coordinate = Annotated[float, Field(ge=0, le=MAX_PIXELS, allow_inf_nan=False)]  # image pixels, origin top-left
DAY_S = 86_400.0  # the upper bound of most durations: longer ones are typos (or .inf)
MAX_MB = 1_000_000_000.0  # a petabyte: larger sizes are typos (or .inf)
Point = tuple[Coordinate, Coordinate]


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def topic_prefix(value: str) -> str:
    """An MQTT topic prefix without its outer slashes; never empty, never with control characters."""
    if has_control_characters(value):
        raise ValueError(f"{value!r}: control characters are not allowed in MQTT topics")
    if any(c in "#+" or c.isspace() for c in value):
        raise ValueError(f"{value!r}: expected a topic prefix without '#', '+' or whitespace")
    value = value.strip("/")
    if not value:
        raise ValueError("must not be empty or only '/' (every topic would start at the root)")
    return value


class ConfigError(Exception):
    """A configuration problem; ``str()`` lists one ``key.path: message`` per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class LocatedError(ValueError):
    """A validation error raised by an outer model about one of its inner keys (``loc`` relative to it)."""

    def __init__(self, loc: tuple, message: str):
        self.loc = loc
        super().__init__(message)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf and .nan are never meant


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
        hint = "" if path.is_absolute() else (
            " ($CREDENTIALS_DIRECTORY is not set: outside the systemd unit, point it at the credential files, "
            "e.g. CREDENTIALS_DIRECTORY=/etc/monitor/credentials)"
        )
        raise ConfigError([f"cannot read secret file {path}: {exc.strerror}{hint}"]) from exc


