"""Capture: newest-frame hand-over, native-rate and lossless file playback, looping, target fps, and
reconnects with capped exponential backoff that never stop the other cameras."""

from __future__ import annotations

import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import cut_clip, street_config, write_config
from monitor.capture import Backoff, CameraReader, CameraState, describe_source, valid_image
from monitor.config import CameraConfig, ConfigError, load_config
from monitor.metrics import Metrics

CLIP_FRAMES = 40


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, clip) -> Path:
    """The first 40 frames of vtest.avi, losslessly (FFV1), at its native 10 fps."""
    return cut_clip(clip, tmp_path_factory.mktemp("capture") / "street-40.avi", 0, CLIP_FRAMES)


def camera(source, **overrides) -> CameraConfig:
    return CameraConfig.model_validate({"source": str(source) if isinstance(source, Path) else source, "model": "m", **overrides})


def sample(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def take_all(reader: CameraReader, delay_s: float = 0.0, limit: int = 1000) -> list:
    frames = []
    while not reader.finished and len(frames) < limit:
        frame = reader.wait_newest(timeout=2.0)
        if frame is not None:
            frames.append(frame)
            time.sleep(delay_s)
    return frames


@pytest.fixture
def readers():
    started = []

    def start(name: str, config: CameraConfig, metrics: Metrics | None = None) -> CameraReader:
        reader = CameraReader(name, config, metrics)
        reader.start()
        started.append(reader)
        return reader

    yield start
    for reader in started:
        reader.stop()


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(0.5, 4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_passwords_never_appear_in_described_sources():
    assert describe_source("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://***@10.0.0.5:554/s1"
    assert describe_source("http://10.0.0.6/mjpeg") == "http://10.0.0.6/mjpeg"
    assert describe_source(0) == "0"
    assert describe_source(camera(login_source("rtsp://10.0.0.21:554/s1", value="hunter2")).source) == "rtsp://***@10.0.0.21:554/s1"


def test_invalid_images_are_named():
    good = np.zeros((576, 768, 3), np.uint8)
    assert valid_image(good, None) is None
    assert valid_image(None, None) == "not a BGR uint8 image"
    assert valid_image(np.zeros((576, 768), np.uint8), None) == "not a BGR uint8 image"
    assert valid_image(np.zeros((4, 4, 3), np.uint8), None) == "image too small 4x4"
    assert valid_image(good, (480, 640, 3)) == "resolution changed from 640x480 to 768x576"


def test_lossless_file_playback_delivers_every_frame_in_order_and_fast(short_clip, readers):
    """realtime: false is for benchmarks: a slow consumer gets every frame, none dropped, at decode speed."""
    metrics = Metrics()
    reader = readers("bench", camera(short_clip, realtime=False), metrics)
    started = time.monotonic()
    frames = take_all(reader, delay_s=0.01)
    elapsed = time.monotonic() - started
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    assert sample(metrics, "monitor_frames_total", camera="bench", stage="captured") == CLIP_FRAMES
    assert sample(metrics, "monitor_frames_total", camera="bench", stage="dropped") == 0
    assert elapsed < CLIP_FRAMES / 10 * 0.75, "lossless playback waited on the clip's clock (4 s at 10 fps)"
    assert reader.state == CameraState.ENDED and reader.finished
    reference = cv2.VideoCapture(str(short_clip))
    for frame in frames[:3]:
        np.testing.assert_array_equal(frame.image, reference.read()[1])


def test_realtime_file_plays_at_its_native_rate(short_clip, readers):
    """A file plays like a camera: 40 frames at 10 fps take about 4 s, never less than 3.9 s."""
    reader = readers("live", camera(short_clip))
    started = time.monotonic()
    frames = take_all(reader)
    elapsed = time.monotonic() - started
    assert len(frames) >= CLIP_FRAMES - 2  # a fast consumer keeps up
    assert 3.9 <= elapsed <= 8.0
    gaps = np.diff([f.mono_time for f in frames])
    assert 0.09 <= float(np.median(gaps)) <= 0.115


def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted(short_clip, readers):
    """No backlog: after a pause the next frame taken is the newest one, and every skipped frame counts as dropped."""
    metrics = Metrics()
    reader = readers("slow", camera(short_clip), metrics)
    first = reader.wait_newest(timeout=5)
    time.sleep(1.05)  # about 10 frames go by
    after_pause = reader.wait_newest(timeout=5)
    assert after_pause.index >= first.index + 8
    assert time.monotonic() - after_pause.mono_time < 0.2  # fresh, not a queued old frame
    taken = [first, after_pause] + take_all(reader, delay_s=0.3)
    dropped = sample(metrics, "monitor_frames_total", camera="slow", stage="dropped")
    captured = sample(metrics, "monitor_frames_total", camera="slow", stage="captured")
    assert captured == CLIP_FRAMES
    assert dropped >= 15
    assert len(taken) + dropped >= CLIP_FRAMES - 1  # the last frame may still sit unclaimed at the end... or be taken
    assert len(taken) + dropped <= CLIP_FRAMES
    assert all(a.index < b.index for a, b in zip(taken, taken[1:]))


def test_target_fps_is_honoured(short_clip, readers):
    """fps: 4 on a 10 fps source: about 4 of every 10 frames are decoded and handed on."""
    metrics = Metrics()
    reader = readers("slowed", camera(short_clip, fps=4), metrics)
    frames = take_all(reader)
    assert 14 <= len(frames) <= 18  # 40 frames = 4 s at 10 fps -> 16 at 4 fps
    gaps = np.diff([f.mono_time for f in frames])
    assert 0.2 <= float(np.median(gaps)) <= 0.35
    assert sample(metrics, "monitor_frames_total", camera="slowed", stage="dropped") == 0  # skipped by design, not dropped


def test_loop_wraps_around_to_the_first_frame(short_clip, readers):
    reader = readers("loop", camera(short_clip, realtime=False, loop=True))
    frames = [reader.wait_newest(timeout=5) for _ in range(CLIP_FRAMES + 5)]
    assert [f.index for f in frames] == list(range(CLIP_FRAMES + 5))
    np.testing.assert_array_equal(frames[CLIP_FRAMES].image, frames[0].image)
    np.testing.assert_array_equal(frames[CLIP_FRAMES + 4].image, frames[4].image)
    assert reader.state == CameraState.UP


def reconnect_delays(caplog, camera_name: str) -> list[float]:
    pattern = re.compile(rf"camera {camera_name} .*reconnecting in ([\d.]+)s")
    return [float(m.group(1)) for r in caplog.records if (m := pattern.search(r.getMessage()))]


@pytest.mark.parametrize(
    "source,reason",
    [("/dev/video99", "cannot open source"), ("missing.avi", "does not exist")],
    ids=["device-fails-to-open", "file-missing"],
)
def test_unopenable_source_is_retried_with_capped_exponential_backoff(tmp_path, readers, caplog, source, reason):
    caplog.set_level(logging.WARNING, logger="monitor.capture")
    metrics = Metrics()
    metrics.register_camera("broken", None)
    source = str(tmp_path / source) if source.endswith(".avi") else source
    reader = readers("broken", camera(source, reconnect={"initial_s": 0.1, "max_s": 0.4}), metrics)
    deadline = time.monotonic() + 10
    while sample(metrics, "monitor_camera_reconnects_total", camera="broken") < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reconnect_delays(caplog, "broken")[:6] == [0.1, 0.2, 0.4, 0.4, 0.4, 0.4]
    assert reason in caplog.text
    assert sample(metrics, "monitor_camera_up", camera="broken") == 0
    assert reader.state in (CameraState.DOWN, CameraState.CONNECTING)
    assert reader.wait_newest(timeout=0.1) is None and not reader.finished


def test_file_that_appears_later_is_picked_up_and_its_return_logged(tmp_path, short_clip, readers, caplog):
    caplog.set_level(logging.INFO, logger="monitor.capture")
    metrics = Metrics()
    late = tmp_path / "late.avi"
    reader = readers("late", camera(late, realtime=False, reconnect={"initial_s": 0.1, "max_s": 0.2}), metrics)
    time.sleep(0.5)
    assert sample(metrics, "monitor_camera_up", camera="late") == 0
    assert reader.problem == f"file {late} does not exist"
    late.symlink_to(short_clip)
    frames = take_all(reader)
    assert len(frames) == CLIP_FRAMES
    attempts = sample(metrics, "monitor_camera_reconnects_total", camera="late")
    assert attempts >= 2 and reader.problem is None
    (back,) = [r.getMessage() for r in caplog.records if "back after" in r.getMessage()]
    assert re.fullmatch(rf"camera late \({late}\): back after [\d.]+s down \({attempts:.0f} reconnect attempts\)", back)


def test_a_live_camera_s_stream_time_counts_from_its_start(readers):
    """Events' start_s of a live camera: seconds since the monitor started reading it, not the host's uptime."""
    mjpeg = MjpegCamera()
    try:
        before = time.monotonic()
        reader = readers("http", camera(mjpeg.url))
        frame = reader.wait_newest(timeout=20)
        assert frame is not None and frame.media_time is not None
        assert 0 <= frame.stream_time <= time.monotonic() - before
    finally:
        mjpeg.close()


LOGIN = ("cam user", "p@ss:w/rd")  # characters that must be quoted in a URL


def login_source(url: str, **password) -> dict:
    return {"url": url, "username": LOGIN[0], "password": password or {"file": "cam-dock"}}


def test_a_camera_login_from_a_credential_opens_a_real_rtsp_camera(rtsp_servers, readers, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    server = rtsp_servers(login=LOGIN)
    (tmp_path / "cam-dock").write_text(LOGIN[1] + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    reader = readers("dock", camera(login_source(server.url)))
    frame = reader.wait_newest(timeout=30)
    assert frame is not None and frame.image.shape == (576, 768, 3)
    assert reader.state == CameraState.UP
    refused = readers("nologin", camera(server.url, reconnect={"initial_s": 5, "max_s": 5}))  # the camera wants a login
    assert refused.wait_newest(timeout=3) is None and refused.problem == "cannot open source"
    assert LOGIN[1] not in caplog.text and "p%40ss" not in caplog.text


def test_a_camera_password_that_cannot_be_read_is_named_by_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        CameraReader("dock", camera(login_source("rtsp://10.0.0.21/stream")))
    assert str(error.value).startswith("cameras.dock.source.password: cannot read secret file")
    monkeypatch.delenv("DOCK_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"^cameras.dock.source.password: environment variable DOCK_PASSWORD is not set$"):
        CameraReader("dock", camera(login_source("rtsp://10.0.0.21/stream", env="DOCK_PASSWORD")))


class MjpegCamera:
    """A real HTTP MJPEG camera on loopback that drops every connection after ``frames_per_connection`` frames."""

    def __init__(self, frames_per_connection: int = 8):
        images = [np.full((120, 160, 3), 20 * i, np.uint8) for i in range(frames_per_connection)]
        jpegs = [cv2.imencode(".jpg", image)[1].tobytes() for image in images]
        self.connections = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for jpeg in jpegs:
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    self.wfile.write(head + jpeg + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.05)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_http_stream_that_drops_is_reconnected(readers, caplog):
    caplog.set_level(logging.WARNING, logger="monitor.capture")
    mjpeg = MjpegCamera()
    metrics = Metrics()
    try:
        reader = readers("http", camera(mjpeg.url, reconnect={"initial_s": 0.2, "max_s": 1.0}), metrics)
        frames, deadline = [], time.monotonic() + 20
        while mjpeg.connections < 3 and time.monotonic() < deadline:
            frame = reader.wait_newest(timeout=0.5)
            frames += [frame] if frame else []
        assert mjpeg.connections >= 3
        assert len(frames) >= 10
        assert sample(metrics, "monitor_camera_reconnects_total", camera="http") >= 2
        assert "stream ended or stalled" in caplog.text
        # the backoff restarts after every successful reconnect: never more than the first delay here
        assert set(reconnect_delays(caplog, "http")) == {0.2}
    finally:
        mjpeg.close()


@pytest.mark.slow
def test_a_broken_camera_never_stops_the_others(tmp_path, short_clip, broker):
    """One Monitor, the real model: a camera on a dead device keeps reconnecting while the street camera is processed."""
    from monitor.pipeline import Monitor

    data = street_config(broker.port, source=str(short_clip), realtime=True, loop=True)
    data["cameras"]["dead"] = {
        "source": "/dev/video99",
        "model": "person",
        "reconnect": {"initial_s": 0.1, "max_s": 0.4},
    }
    monitor = Monitor(load_config(write_config(tmp_path, data)))
    metrics = monitor.metrics
    monitor.start()
    try:
        deadline = time.monotonic() + 120
        while sample(metrics, "monitor_frames_total", camera="street", stage="processed") < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        processed_before = sample(metrics, "monitor_frames_total", camera="street", stage="processed")
        reconnects_before = sample(metrics, "monitor_camera_reconnects_total", camera="dead")
        time.sleep(3)
        assert sample(metrics, "monitor_frames_total", camera="street", stage="processed") > processed_before >= 5
        assert sample(metrics, "monitor_camera_reconnects_total", camera="dead") > reconnects_before >= 3
        assert sample(metrics, "monitor_camera_up", camera="dead") == 0
        assert sample(metrics, "monitor_camera_up", camera="street") == 1
        assert monitor.camera_states()["dead"] in (CameraState.DOWN, CameraState.CONNECTING)
    finally:
        monitor.stop()
