"""What a valid config asks of this host, checked before anything starts: TLS files that load, and addresses
this host can listen on. Each problem names its key."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from monitor.config.app import AppConfig, TlsConfig


def check_host(config: AppConfig) -> list[str]:
    problems = tls_problems(config.mqtt.tls) if config.mqtt.tls else []
    if config.metrics.enabled:
        problems += listen_problems("metrics.host", config.metrics.host)
    if config.web.enabled:
        problems += listen_problems("web.host", config.web.host)
    return problems


def tls_problems(tls: TlsConfig) -> list[str]:
    problems = [
        f"mqtt.tls.{key}: cannot read {path} ({problem})"
        for key, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file))
        if path is not None and (problem := unreadable(path))
    ]
    if problems:
        return problems
    context = ssl.create_default_context()
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except ssl.SSLError as exc:
            problems.append(f"mqtt.tls.ca_file: {tls.ca_file} holds no usable CA certificate ({exc.reason or exc})")
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except ssl.SSLError as exc:
            problems.append(f"mqtt.tls.cert_file: {tls.cert_file} and key_file {tls.key_file} do not load ({exc.reason or exc})")
    return problems


def unreadable(path: Path) -> str | None:
    """Why a file cannot be read, or None."""
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def listen_problems(key: str, host: str) -> list[str]:
    """Can this host listen on ``host`` at all (any free port; the configured one is checked at start)?"""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return [f"{key}: cannot listen on {host!r} ({reason}); use an address of this host, e.g. 127.0.0.1 or 0.0.0.0"]
    return []
