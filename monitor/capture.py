"""Capture: one reader thread per camera that keeps only the newest frame and survives stream drops."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from monitor.config import CameraConfig, ConfigError, StreamSource, is_file_path
from monitor.frame import CapturedFrame

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 10_000


class CameraState(str, Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"  # failed; waiting to reconnect
    ENDED = "ended"  # a file source reached its end (no loop)
    STOPPED = "stopped"


class CaptureEvents(Protocol):
    """What the capture stage reports (implemented by metrics.Metrics)."""

    def frame_captured(self, camera: str) -> None: ...
    def frame_dropped(self, camera: str) -> None: ...
    def camera_state(self, camera: str, up: bool) -> None: ...
    def camera_reconnect(self, camera: str) -> None: ...


class NullCaptureEvents:
    def frame_captured(self, camera: str) -> None: ...
    def frame_dropped(self, camera: str) -> None: ...
    def camera_state(self, camera: str, up: bool) -> None: ...
    def camera_reconnect(self, camera: str) -> None: ...


@dataclass
class Backoff:
    """Capped exponential backoff: initial, 2x, 4x, ... up to maximum; reset after a success."""

    initial_s: float
    max_s: float
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.initial_s * (2**self.failures))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def open_capture(source: str | int, stall_s: float = OPEN_TIMEOUT_MS / 1000) -> cv2.VideoCapture:
    quiet_native_logs()
    if isinstance(source, int):
        return cv2.VideoCapture(source)
    if source.startswith("/dev/video"):
        return cv2.VideoCapture(source, cv2.CAP_V4L2)
    if "://" in source and not source.startswith("file://"):
        # a stream that stalls (no packet for stall_s) makes grab() fail, and the reader reconnects
        read_timeout = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(stall_s * 1000)]
        return cv2.VideoCapture(source, cv2.CAP_FFMPEG, read_timeout)
    return cv2.VideoCapture(source.removeprefix("file://"))


SECRET_PARAMETER = re.compile(r"(user|name|login|pass|pwd|token|key|auth|secret|sig|cred)", re.IGNORECASE)


def describe_source(source: str | int | StreamSource) -> str:
    """The source without credentials, for logs: everything before the last ``@`` (user info, even with ``@``
    or ``/`` in the password) and the values of query parameters named like user, password, token or key."""
    source = str(source) if isinstance(source, StreamSource) else source  # its login is already ***
    if not isinstance(source, str) or "://" not in source:
        return str(source)
    scheme, rest = source.split("://", 1)
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    address, question, query = rest.partition("?")
    if question:
        query = "&".join(_masked_parameter(part) for part in query.split("&"))
    return f"{scheme}://{address}{question}{query}"


def _masked_parameter(part: str) -> str:
    name, equals, value = part.partition("=")
    return f"{name}=***" if equals and value and SECRET_PARAMETER.search(name) else part


def quiet_native_logs() -> None:
    """FFmpeg's own warnings (a corrupt clip: thousands of lines) and OpenCV's on every reconnect stay out of
    the journal: our log says what happened. Set OPENCV_FFMPEG_LOGLEVEL / OPENCV_LOG_LEVEL to see them."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg is first used
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def valid_image(image: object, expected_shape: tuple[int, ...] | None) -> str | None:
    """None when the image is usable, else why not."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        return "not a BGR uint8 image"
    if image.shape[0] < 8 or image.shape[1] < 8:
        return f"image too small {image.shape[1]}x{image.shape[0]}"
    if expected_shape is not None and image.shape != expected_shape:
        return f"resolution changed from {expected_shape[1]}x{expected_shape[0]} to {image.shape[1]}x{image.shape[0]}"
    return None


class CameraReader:
    """Reads one camera on its own thread; ``wait_newest`` hands the newest frame to one consumer."""

    def __init__(self, name: str, config: CameraConfig, events: CaptureEvents | None = None):
        self.name = name
        self.config = config
        self.events = events or NullCaptureEvents()
        self.state = CameraState.CONNECTING
        self.last_frame_mono: float | None = None
        self.resolution: tuple[int, int] | None = None  # (width, height) of the current stream
        self._where = f"cameras.{name}.source"
        config.open_target(self._where)  # a camera password that cannot be read is a start-up error, as the broker's is
        self._is_file = is_file_path(config.source)
        self._lossless = self._is_file and not config.realtime  # benchmark mode: never drop, never wait on a clock
        self._backoff = Backoff(config.reconnect.initial_s, config.reconnect.max_s)
        self._slot: CapturedFrame | None = None
        self._slot_lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{name}", daemon=True)
        self._index = 0
        self._media_next = 0.0  # a file's position (s) after the last delivered frame; grows across loops
        self._created_mono = time.monotonic()
        self._down_since: float | None = None  # when the current outage began
        self._attempts = 0
        self.problem: str | None = None  # why the camera is down, for the service's STATUS line

    # --- consumer side ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._slot_lock:
            self._slot_lock.notify_all()
        self._thread.join(timeout)

    def is_stale(self, now: float | None = None) -> bool:
        """True while the camera's counts are out of date: down, or no frame for ``reconnect.stall_s``."""
        if self.state in (CameraState.ENDED, CameraState.STOPPED):
            return False
        if self.state == CameraState.DOWN:
            return True
        last = self.last_frame_mono if self.last_frame_mono is not None else self._created_mono
        return (now or time.monotonic()) - last > self.config.reconnect.stall_s

    @property
    def finished(self) -> bool:
        """True once the source has ended (or the reader stopped) and its last frame was taken."""
        return self.state in (CameraState.ENDED, CameraState.STOPPED) and self._slot is None

    def wait_newest(self, timeout: float) -> CapturedFrame | None:
        """The newest frame not yet taken, waiting up to ``timeout``; None if there is none."""
        with self._slot_lock:
            if self._slot is None:
                self._slot_lock.wait_for(lambda: self._slot is not None or self._stop.is_set() or self.finished, timeout)
            frame, self._slot = self._slot, None
            if frame is not None and self._lossless:  # a file read as fast as possible: a frame 'arrives' when taken
                frame.wall_time, frame.mono_time = time.time(), time.monotonic()
            self._slot_lock.notify_all()
            return frame

    # --- reader thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            capture = self._open()
            if capture is None:
                continue
            self._read_until_failure(capture)
            capture.release()
            if self.state == CameraState.ENDED:
                break
        if self.state != CameraState.ENDED:
            self._set_state(CameraState.STOPPED)

    def _open(self) -> cv2.VideoCapture | None:
        self._set_state(CameraState.CONNECTING)
        if self._is_file and not Path(str(self.config.source).removeprefix("file://")).exists():
            self._fail(f"file {self.config.source} does not exist")
            return None
        try:
            target = self.config.open_target(self._where)  # a rotated password is read again at every reconnect
        except ConfigError as error:
            self._fail(str(error))
            return None
        capture = open_capture(target, self.config.reconnect.stall_s)
        if not capture.isOpened():
            capture.release()
            self._fail("cannot open source")
            return None
        return capture

    def _read_until_failure(self, capture: cv2.VideoCapture) -> None:
        native_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        native_fps = native_fps if 0 < native_fps <= 240 else 25.0
        period = 1.0 / (self.config.fps or native_fps)
        source_period = 1.0 / native_fps
        expected_shape: tuple[int, ...] | None = None
        next_due = time.monotonic()
        clock_start, frames_read = time.monotonic(), 0
        media_start = self._media_next
        while not self._stop.is_set():
            if self._is_file and self.config.realtime:  # play a file like a camera would
                self._sleep_until(clock_start + frames_read * source_period)
            if not capture.grab():
                if self._rewind(capture):
                    clock_start, frames_read = time.monotonic(), 0
                    media_start = self._media_next
                    continue
                self._end_of_stream()
                return
            frames_read += 1
            now = time.monotonic()
            if not self._lossless and now < next_due:
                continue  # above target fps: skip the decode
            next_due = max(next_due + period, now - period)
            ok, image = capture.retrieve()
            problem = "empty frame" if not ok else valid_image(image, expected_shape)
            if problem:
                self._fail(problem)
                return
            expected_shape = image.shape
            media_time = media_start + (frames_read - 1) * source_period if self._is_file else None
            self._deliver(image, media_time)
            if media_time is not None:
                self._media_next = media_time + source_period

    def _rewind(self, capture: cv2.VideoCapture) -> bool:
        """Loop a file source: back to its first frame."""
        if not (self._is_file and self.config.loop and self._index > 0):
            return False
        return bool(capture.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def _end_of_stream(self) -> None:
        if self._is_file and not self.config.loop:
            log.info("camera %s: end of file", self.name)
            self._set_state(CameraState.ENDED)
            with self._slot_lock:
                self._slot_lock.notify_all()
            return
        self._fail("stream ended or stalled")

    def _deliver(self, image: np.ndarray, media_time: float | None = None) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        stream_time = media_time if media_time is not None else now_mono - self._created_mono  # live: since the start
        frame = CapturedFrame(self.name, self._index, image, now_wall, now_mono, stream_time)
        self._index += 1
        with self._slot_lock:
            if self._lossless:
                self._slot_lock.wait_for(lambda: self._slot is None or self._stop.is_set())
            elif self._slot is not None:
                self.events.frame_dropped(self.name)
            self._slot = frame
            self._slot_lock.notify_all()
        self.last_frame_mono = now_mono
        self.resolution = (image.shape[1], image.shape[0])
        self.events.frame_captured(self.name)
        if self.state != CameraState.UP:
            self._backoff.reset()
            self._set_state(CameraState.UP)
            self._log_recovery(now_mono)

    def _log_recovery(self, now_mono: float) -> None:
        if self._down_since is None:
            return
        log.warning(
            "camera %s (%s): back after %.1fs down (%d reconnect attempts)",
            self.name, describe_source(self.config.source), now_mono - self._down_since, self._attempts,
        )
        self._down_since, self.problem, self._attempts = None, None, 0

    def _fail(self, reason: str) -> None:
        delay = self._backoff.next_delay()
        if self._down_since is None:
            self._down_since = time.monotonic()
        self.problem = reason
        self._attempts += 1
        log.warning(
            "camera %s (%s): %s; reconnecting in %.1fs", self.name, describe_source(self.config.source), reason, delay
        )
        self._set_state(CameraState.DOWN)
        self.events.camera_reconnect(self.name)
        self._stop.wait(delay)

    def _set_state(self, state: CameraState) -> None:
        if state == self.state:
            return
        self.state = state
        self.events.camera_state(self.name, state == CameraState.UP)

    def _sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
