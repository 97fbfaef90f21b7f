"""The live view: a real HTTP server on loopback showing a real monitor's latest annotated frame."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import Broker, free_port, street_config
from monitor.annotate import zone_colour
from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.pipeline import Monitor


def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


@pytest.fixture(scope="module")
def live(tmp_path_factory, clip, person_model):
    workdir = tmp_path_factory.mktemp("liveview")
    broker = Broker(workdir).start()
    port = free_port()
    data = street_config(broker.port, loop=True)
    data["live_view"] = {"enabled": True, "port": port, "refresh_s": 1}
    data["state_dir"] = str(workdir / "state")
    monitor = Monitor(parse_config(data), Metrics())
    monitor.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while get(f"{base}/camera/street.jpg")[0] != 200:
            assert time.monotonic() < deadline, "no frame in the live view"
            time.sleep(0.5)
        yield base, monitor
    finally:
        stopper = threading.Thread(target=monitor.stop)
        stopper.start()
        stopper.join(30)
        broker.stop()


def test_live_view_is_off_by_default():
    config = parse_config(street_config(1883))
    assert config.live_view.enabled is False and config.live_view.host == "127.0.0.1"


def test_index_page_lists_cameras_and_refreshes(live):
    base, _ = live
    status, content_type, body = get(f"{base}/")
    assert status == 200 and content_type.startswith("text/html")
    page = body.decode()
    assert '<img src="camera/street.jpg"' in page
    assert '<meta http-equiv="refresh" content="1">' in page


def test_camera_image_is_the_latest_annotated_frame(live):
    base, monitor = live
    status, content_type, body = get(f"{base}/camera/street.jpg")
    assert status == 200 and content_type == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (576, 768, 3)
    # the lawn's outline runs along its right-hand edge from (768, 495) to (330, 290): its colour is drawn there
    colour = np.array(zone_colour("lawn"))
    x, y = 549, 392  # the middle of that edge
    patch = image[y - 1 : y + 2, x - 1 : x + 2].astype(int)
    assert np.abs(patch - colour).max(axis=2).min() < 60
    # a later request shows a later frame
    first = monitor.loops["street"].last_result.frame.index
    time.sleep(1.5)
    assert monitor.loops["street"].last_result.frame.index > first
    assert get(f"{base}/camera/street.jpg")[2] != body


def test_read_only_and_unknown_paths(live):
    base, _ = live
    assert get(f"{base}/camera/dock.jpg")[0] == 404
    assert get(f"{base}/etc/passwd")[0] == 404
    assert get(f"{base}/", method="POST")[0] == 501
    assert get(f"{base}/camera/street.jpg", method="DELETE")[0] == 501
