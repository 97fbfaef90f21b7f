"""Live view: a tiny read-only HTTP page with each camera's latest annotated frame, for setting up zones.

Off by default and bound to 127.0.0.1 (reach it through an SSH tunnel). Frames are drawn and encoded
only when a browser asks, at most once per new frame, so the frame path pays nothing for it.

- ``/``: every camera's latest frame, the page reloads itself every ``refresh_s``;
- ``/camera/<name>.jpg``: that camera's latest annotated frame (503 until it has one).
"""

from __future__ import annotations

import html
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import unquote, urlsplit

import cv2

from monitor.annotate import annotate
from monitor.common import iso_utc
from monitor.config import CameraConfig, LiveViewConfig
from monitor.frame import FrameResult

log = logging.getLogger(__name__)

JPEG_QUALITY = 80


class FrameSource:
    """One camera's latest result, drawn and encoded on demand and cached until a newer frame arrives."""

    def __init__(self, name: str, config: CameraConfig, latest: Callable[[], FrameResult | None]):
        self.name = name
        self.zones = {zone: z.polygon for zone, z in config.zones.items()}
        self.latest = latest
        self._lock = threading.Lock()
        self._cached: tuple[int, bytes] | None = None  # (frame index, JPEG)

    def jpeg(self) -> bytes | None:
        result = self.latest()
        if result is None:
            return None
        with self._lock:
            if self._cached and self._cached[0] == result.frame.index:
                return self._cached[1]
            data = self._encode(result)
            self._cached = (result.frame.index, data)
            return data

    def _encode(self, result: FrameResult) -> bytes:
        title = f"{self.name}  {iso_utc(result.frame.wall_time)}  frame {result.frame.index}"
        image = annotate(result.frame.image.copy(), self.zones, result.objects, result.labels, counts=result.counts, title=title)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return data.tobytes()


def index_page(cameras: list[str], refresh_s: float) -> bytes:
    tiles = "\n".join(
        f'<figure><img src="camera/{html.escape(name)}.jpg" alt="{html.escape(name)}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name in cameras
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s:g}">
<title>camera monitor: live view</title>
<style>body{{font-family:sans-serif;background:#222;color:#eee}} img{{max-width:100%}} figure{{display:inline-block;margin:8px}}</style>
</head><body><h1>Live view</h1>
{tiles}
<p>Latest processed frame per camera with zones, boxes and counts; reloads every {refresh_s:g} s.</p>
</body></html>
"""
    return page.encode()


class LiveView:
    """The HTTP server on its own thread; explicit start/stop."""

    def __init__(self, config: LiveViewConfig, sources: dict[str, FrameSource]):
        self.config = config
        self.sources = sources
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one chosen for port 0)."""
        return self._server.server_address[1] if self._server else self.config.port

    def start(self) -> None:
        """Serve; a port already taken is logged, not fatal: the monitor's real work goes on without the page."""
        try:
            self._server = ThreadingHTTPServer((self.config.host, self.config.port), self._handler_class())
        except OSError as exc:
            log.error("live_view: cannot listen on %s:%d: %s", self.config.host, self.config.port, exc.strerror)
            return
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-view", daemon=True)
        self._thread.start()
        log.info("live view on http://%s:%d/", self.config.host, self.port)

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        view = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "monitor-live-view"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                view.answer(self)

            def do_HEAD(self) -> None:  # noqa: N802
                view.answer(self, head=True)

            def log_message(self, format: str, *args) -> None:
                log.debug("live view: " + format, *args)

        return Handler

    def answer(self, request: BaseHTTPRequestHandler, head: bool = False) -> None:
        path = unquote(urlsplit(request.path).path)
        if path in ("/", "/index.html"):
            self._send(request, 200, "text/html; charset=utf-8", index_page(list(self.sources), self.config.refresh_s), head)
            return
        if path.startswith("/camera/") and path.endswith(".jpg"):
            source = self.sources.get(path[len("/camera/") : -len(".jpg")])
            if source is None:
                self._send(request, 404, "text/plain", b"unknown camera\n", head)
                return
            try:
                data = source.jpeg()
            except Exception:  # a drawing bug must not take the page (or the monitor) down
                log.exception("live view: cannot draw camera %s", source.name)
                self._send(request, 500, "text/plain", b"cannot draw this frame\n", head)
                return
            if data is None:
                self._send(request, 503, "text/plain", b"no frame yet\n", head)
            else:
                self._send(request, 200, "image/jpeg", data, head)
            return
        self._send(request, 404, "text/plain", b"not found\n", head)

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes, head: bool) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        if not head:
            request.wfile.write(body)


def build_live_view(config: LiveViewConfig, cameras: dict[str, CameraConfig], loops: dict) -> LiveView:
    """A live view over the camera loops (each with a ``last_result``)."""
    sources = {name: FrameSource(name, cameras[name], lambda loop=loops[name]: loop.last_result) for name in cameras}
    return LiveView(config, sources)
