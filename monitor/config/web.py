"""The operator's page (``web``, formerly ``live_view``): where it listens and how it is protected."""

from __future__ import annotations

import ipaddress

from pydantic import Field, model_validator

from monitor.config.base import ConfigError, SecretSource, Strict

MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; anything else (0.0.0.0, a LAN address, a name) is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(Strict):
    enabled: bool = Field(False, description="the read-only operator's page and its JSON API")
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8099, ge=0, le=65535)
    refresh_s: float = Field(2.0, ge=0.2, le=3600, description="how often the page asks for new data")
    token: SecretSource | None = Field(None, description="access token; required when host is not a loopback address")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebConfig:
        if self.enabled and self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host} is not a loopback address: give token ({{file: web-token}}) or bind 127.0.0.1"
            )
        return self

    def reveal_token(self) -> str | None:
        """The token, read now (from its file or variable); ConfigError naming ``web.token`` when unusable."""
        if self.token is None:
            return None
        try:
            token = self.token.reveal()
        except ConfigError as error:
            raise ConfigError([f"web.token: {problem}" for problem in error.problems]) from None
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError([f"web.token: {len(token)} characters; use at least {MIN_TOKEN_CHARS} (openssl rand -hex 16)"])
        return token
