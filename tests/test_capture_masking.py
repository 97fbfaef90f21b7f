"""What capture puts in the journal: camera credentials masked in every URL form, on every reconnect, and none of
FFmpeg's or OpenCV's own noise (a corrupt clip made thousands of lines)."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time

import pytest
from conftest import ROOT, free_port

from monitor.capture import CameraReader, describe_source
from monitor.config import CameraConfig


@pytest.mark.parametrize(
    "source,shown,secrets",
    [
        ("rtsp://admin:pa/ss99@10.0.0.21:554/Streaming/Channels/102", "rtsp://***@10.0.0.21:554/Streaming/Channels/102", ["pa/ss99", "admin"]),
        ("rtsp://admin:p@ss88@10.0.0.21:554/s1", "rtsp://***@10.0.0.21:554/s1", ["p@ss88", "ss88", "admin"]),
        ("http://10.0.0.6/cgi-bin/mjpg?user=admin&pwd=hunter2&channel=1", "http://10.0.0.6/cgi-bin/mjpg?user=***&pwd=***&channel=1", ["hunter2", "admin"]),
        ("http://cam.local/video?Token=abc123&apiKey=k3y&AUTH=x1&password=p4&resolution=640", "http://cam.local/video?Token=***&apiKey=***&AUTH=***&password=***&resolution=640", ["abc123", "k3y", "x1", "p4"]),
        ("rtsps://u:s3cret@cam:322/live?passwd=also", "rtsps://***@cam:322/live?passwd=***", ["s3cret", "also"]),
        ("rtsp://10.0.0.5:554/s1", "rtsp://10.0.0.5:554/s1", []),
        (0, "0", []),
        ("/dev/video0", "/dev/video0", []),
    ],
)
def test_credentials_are_masked_in_every_url_form(source, shown, secrets):
    assert describe_source(source) == shown
    assert not [secret for secret in secrets if secret in describe_source(source)]


def test_a_reconnecting_camera_never_logs_its_credentials(caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens: every attempt fails and is logged
    sources = [f"rtsp://admin:pa/ss99@127.0.0.1:{port}/s", f"rtsp://admin:p@ss88@127.0.0.1:{port}/s",
               f"http://127.0.0.1:{port}/mjpg?user=admin&pwd=hunter2"]
    readers = [CameraReader(f"cam{i}", CameraConfig(source=s, model="m", reconnect={"initial_s": 0.1, "max_s": 0.2}))
               for i, s in enumerate(sources)]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 60
        while caplog.text.count("reconnecting in") < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for reader in readers:
            reader.stop()
    assert caplog.text.count("reconnecting in") >= 6
    for secret in ("pa/ss99", "ss99", "p@ss88", "ss88", "hunter2", "admin"):
        assert secret not in caplog.text


@pytest.fixture(scope="module")
def corrupt_clip(tmp_path_factory, clip):
    """The clip with bytes scribbled over every 5 kB: it still plays, and FFmpeg complains at every frame."""
    data = bytearray(clip.read_bytes())
    rng = random.Random(1)
    for start in range(20_000, len(data) - 50, 5000):
        data[start:start + 50] = bytes(rng.randrange(256) for _ in range(50))
    path = tmp_path_factory.mktemp("corrupt") / "corrupt.avi"
    path.write_bytes(bytes(data))
    return path


def test_ffmpeg_and_opencv_noise_stays_out_of_the_journal(corrupt_clip):
    """A reader (in its own process, as the daemon would be) plays the corrupt clip: nothing but our log on stderr."""
    script = (
        "import logging, sys, time\nfrom monitor.capture import CameraReader\nfrom monitor.config import CameraConfig\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "reader = CameraReader('street', CameraConfig(source=sys.argv[1], model='m', realtime=False))\n"
        "missing = CameraReader('gone', CameraConfig(source='/nonexistent/clip.avi', model='m', reconnect={'initial_s': 0.1, 'max_s': 0.1}))\n"
        "reader.start(); missing.start(); frames = 0\n"
        "while not reader.finished:\n    frames += reader.wait_newest(1.0) is not None\n"
        "reader.stop(); missing.stop(); print('frames', frames)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}
    result = subprocess.run([sys.executable, "-c", script, str(corrupt_clip)], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) > 700, "the clip still plays"
    noise = [line for line in result.stderr.splitlines() if not line.startswith(("INFO:", "WARNING:", "ERROR:"))]
    assert noise == [], f"{len(noise)} lines not from our logging, e.g. {noise[:3]}"
    assert "file /nonexistent/clip.avi does not exist" in result.stderr
