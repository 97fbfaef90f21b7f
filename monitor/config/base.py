"""Configuration basics: the error type, the strict frozen base model, names, points and secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Coordinate = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # image pixels, origin top-left
Point = tuple[Coordinate, Coordinate]


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
        hint = "" if path.is_absolute() else (
            " ($CREDENTIALS_DIRECTORY is not set: outside the systemd unit, point it at the credential files, "
            "e.g. CREDENTIALS_DIRECTORY=/etc/monitor/credentials)"
        )
        raise ConfigError([f"cannot read secret file {path}: {exc.strerror}{hint}"]) from exc


