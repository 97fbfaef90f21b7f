"""The operator's page over HTTP: read-only (GET and HEAD), bounded, and locked when it leaves loopback.

- bound to ``web.host`` (127.0.0.1 by default); any other address needs ``web.token`` (checked by the config);
- with a token every request must carry it (``Authorization: Bearer <token>``, or HTTP Basic with the token
  as the password, which browsers ask for by themselves); a missing or wrong one gets 401;
- without a token only loopback ``Host`` names are answered (a web page elsewhere cannot rebind a name to
  127.0.0.1 and read the API through the operator's browser);
- at most ``MAX_CLIENTS`` requests at a time (more get 503 at once), each socket times out after
  ``SOCKET_TIMEOUT_S``; answers are built from bounded state, so memory does not grow with requests;
- evidence only from the evidence store, by event id; static files are read once from the package.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from monitor.config import WebConfig
from monitor.web.api import WebApi

log = logging.getLogger(__name__)

MAX_CLIENTS = 8
SOCKET_TIMEOUT_S = 10.0
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
CAMERA_IMAGE = re.compile(r"/camera/([A-Za-z0-9_-]+)\.jpg")
CAMERA_FRAME = re.compile(r"/api/cameras/([A-Za-z0-9_-]+)/frame")
EVIDENCE = re.compile(r"/evidence/([A-Za-z0-9_-]+)\.jpg")


class EvidenceReader(Protocol):
    def read(self, name: str) -> bytes | None: ...


class NoEvidence:
    def read(self, name: str) -> bytes | None:
        return None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def text(status: int, message: str) -> Response:
        return Response(status, f"{message}\n".encode())

    @staticmethod
    def json(payload: object) -> Response:
        return Response(200, json.dumps(payload, separators=(",", ":")).encode(), "application/json")


def load_static() -> dict[str, Response]:
    """The page's files, shipped inside the package, by URL path."""
    folder = resources.files("monitor.web") / "static"
    files = {}
    for item in folder.iterdir():
        suffix = item.name[item.name.rfind(".") :]
        if item.is_file() and suffix in STATIC_TYPES:
            files[f"/static/{item.name}"] = Response(200, item.read_bytes(), STATIC_TYPES[suffix])
    files["/"] = files["/index.html"] = files.pop("/static/index.html")
    return files


class Site:
    """Request (path, headers) -> Response; no sockets here."""

    def __init__(self, config: WebConfig, api: WebApi, evidence: EvidenceReader, token: str | None):
        self.config = config
        self.api = api
        self.evidence = evidence
        self._token = token
        self.static = load_static()
        self.hosts = LOOPBACK_NAMES | {config.host}

    def answer(self, target: str, headers) -> Response:
        refusal = self._refusal(headers)
        if refusal:
            return refusal
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query)
        try:
            return self._route(path, query)
        except Exception:  # a bug in one answer must not take the page (or the monitor) down
            log.exception("web: cannot answer %s", path)
            return Response.text(500, "internal error")

    def _refusal(self, headers) -> Response | None:
        if self._token is None:
            host = host_name(headers.get("Host"))
            if host is not None and host not in self.hosts:
                return Response.text(403, "this page answers only to a loopback host name")
            return None
        if not self._token_matches(headers.get("Authorization")):
            return Response(401, b"token required\n", headers={"WWW-Authenticate": 'Basic realm="camera monitor", charset="UTF-8"'})
        return None

    def _token_matches(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        else:
            return False
        return hmac.compare_digest(given.encode(), self._token.encode())

    def _route(self, path: str, query: dict[str, list[str]]) -> Response:
        if path in self.static:
            return self.static[path]
        answers = {"/api/cameras": self.api.cameras, "/api/counts": self.api.counts, "/api/events": self.api.events,
                   "/api/escalations": self.api.escalations}
        if path in answers:
            return Response.json(answers[path]())
        if match := CAMERA_FRAME.fullmatch(path):
            return self._editor(match.group(1))
        if match := CAMERA_IMAGE.fullmatch(path):
            return self._image(match.group(1), query)
        if match := EVIDENCE.fullmatch(path):
            data = self.evidence.read(match.group(1))
            if not data:
                return Response.text(404, "no such snapshot")
            return Response(200, data, "image/jpeg", {"Cache-Control": "private, max-age=86400"})  # written once
        return Response.text(404, "not found")

    def _editor(self, camera: str) -> Response:
        if camera not in self.api.panels:
            return Response.text(404, "unknown camera")
        data = self.api.editor(camera)
        return Response.json(data) if data else Response.text(503, "no frame yet")

    def _image(self, camera: str, query: dict[str, list[str]]) -> Response:
        panel = self.api.panels.get(camera)
        if panel is None:
            return Response.text(404, "unknown camera")
        wanted = query.get("frame", [""])[0]
        if wanted and not wanted.isdigit():
            return Response.text(400, "frame: expected a frame number")
        view = panel.frames.find(int(wanted)) if wanted else panel.frames.current()
        if view is None:
            return Response.text(404 if wanted else 503, "frame no longer kept" if wanted else "no frame yet")
        return Response(200, view.jpeg(plain=query.get("plain", [""])[0] == "1"), "image/jpeg")


def host_name(header: str | None) -> str | None:
    """The host of a ``Host`` header without its port: ``[::1]:8099`` -> ``::1``."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per request, at most ``max_clients`` at once; the rest get a 503 without a thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_clients: int = MAX_CLIENTS):
        self._slots = threading.BoundedSemaphore(max_clients)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class WebServer:
    """The HTTP server on its own thread; explicit start/stop."""

    def __init__(self, config: WebConfig, site: Site):
        self.config = config
        self.site = site
        self._server: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one chosen for port 0)."""
        return self._server.server_address[1] if self._server else self.config.port

    def start(self) -> None:
        """Serve; a port already taken is logged, not fatal: the monitor's real work goes on without the page."""
        try:
            self._server = BoundedHTTPServer((self.config.host, self.config.port), self._handler_class())
        except OSError as exc:
            log.error("web: cannot listen on %s:%d: %s", self.config.host, self.config.port, exc.strerror)
            return
        self._thread = threading.Thread(target=self._server.serve_forever, name="web", daemon=True)
        self._thread.start()
        log.info("operator's page on http://%s:%d/", self.config.host, self.port)

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        site = self.site

        class Handler(BaseHTTPRequestHandler):
            server_version = "monitor-web"
            timeout = SOCKET_TIMEOUT_S

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._send(site.answer(self.path, self.headers))

            def do_HEAD(self) -> None:  # noqa: N802
                self._send(site.answer(self.path, self.headers), head=True)

            def _send(self, response: Response, head: bool = False) -> None:
                self.send_response(response.status)
                for name, value in {**SECURITY_HEADERS, **response.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if not head:
                    self.wfile.write(response.body)

            def log_message(self, format: str, *args) -> None:
                log.debug("web: " + format, *args)

        return Handler
