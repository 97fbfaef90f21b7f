"""Shared fixtures and helpers: real material (the clip, the model), real services (Mosquitto) on loopback, boxes."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from bench.loopback import MOSQUITTO, Broker, free_port, wait_for_port  # noqa: F401 (tests import them from here)
from monitor.frame import Boxes

os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "data" / "vtest.avi"
PERSON_MODEL = ROOT / "models" / "person-fall.pt"


def boxes_of(rows) -> Boxes:
    """Boxes from rows of (xyxy, conf, class_id, track_id)."""
    rows = list(rows)
    if not rows:
        return Boxes.empty()
    return Boxes(
        np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
        np.array([r[1] for r in rows], np.float32),
        np.array([r[2] for r in rows], np.int32),
        np.array([r[3] for r in rows], np.int64),
    )


def wait_until(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


@pytest.fixture(scope="session", autouse=True)
def session_cache_dir(tmp_path_factory):
    """One model-export cache for the whole session (systemd's variable): the first OpenVINO export of a model
    takes tens of seconds, so every test that runs the bundled default (engine: auto) shares it."""
    cache = tmp_path_factory.mktemp("cache")
    before = os.environ.get("CACHE_DIRECTORY")
    os.environ["CACHE_DIRECTORY"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("CACHE_DIRECTORY", None)
    else:
        os.environ["CACHE_DIRECTORY"] = before


@pytest.fixture(autouse=True)
def isolated_state_dir(tmp_path, monkeypatch):
    """Each test its own state dir: no outbox (unsent messages, persisted seq) leaks between tests."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))


@pytest.fixture(scope="session")
def clip() -> Path:
    if not CLIP.exists():
        pytest.fail(f"{CLIP} missing: run scripts/setup.sh")
    return CLIP


@pytest.fixture(scope="session")
def person_model() -> Path:
    if not PERSON_MODEL.exists():
        pytest.fail(f"{PERSON_MODEL} missing: run scripts/setup.sh")
    return PERSON_MODEL


@pytest.fixture(scope="module")
def street_image(clip):
    """The clip's first frame (768x576 BGR)."""
    import cv2

    capture = cv2.VideoCapture(str(clip))
    ok, image = capture.read()
    capture.release()
    assert ok
    return image


@pytest.fixture(scope="session")
def frames(clip) -> dict:
    """Frames 0, 100, 200, 300 of the street clip: four 'cameras' with different scenes."""
    import cv2

    capture = cv2.VideoCapture(str(clip))
    out = {}
    for index in range(301):
        ok, image = capture.read()
        assert ok
        if index % 100 == 0:
            out[index] = image
    capture.release()
    return out


@pytest.fixture(scope="session")
def sized_images(frames) -> list:
    """Real pictures in three shapes: the street (768x576), a bus (810x1080), a football coach (1280x720)."""
    import cv2
    from ultralytics.utils import ASSETS

    return [frames[0], cv2.imread(str(ASSETS / "bus.jpg")), cv2.imread(str(ASSETS / "zidane.jpg"))]


@pytest.fixture(scope="session")
def detector(person_model):
    """The person model on the CPU at the detection tests' small imgsz; loaded once for every test file."""
    from detection_support import model_config
    from monitor.detection import Detector

    return Detector("person", model_config(person_model))


DETECTED_FRAMES = (0, 40, 80, 120, 160, 200)


@pytest.fixture(scope="session")
def detected(clip, person_model):
    """Six clip frames with the real detector's boxes (the bundled config's person model)."""
    import cv2
    import torch

    from monitor.config import parse_config
    from monitor.detection import Detector

    torch.set_num_threads(1)
    data = street_config(1883)
    data["models"]["person"].update(warmup=False)
    app = parse_config(data)
    detector = Detector("person", app.models["person"])
    capture = cv2.VideoCapture(str(clip))
    out = []
    for index in range(max(DETECTED_FRAMES) + 1):
        ok, image = capture.read()
        assert ok
        if index in DETECTED_FRAMES:
            out.append((index, image, detector.predict([image])[0]))
    capture.release()
    return app, detector, out


@pytest.fixture
def server():
    """A real HTTP server speaking the OpenAI API (tests/fake_openai.py), expecting the street camera's prompt."""
    from fake_openai import FakeOpenAI

    fake = FakeOpenAI(expect_long_side=512, expect_text=["Street corner", "zone lot", "zone lawn", "zone path", "person"]).start()
    yield fake
    fake.stop()


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path).start()
    yield broker
    broker.stop()


class Subscriber:
    """A real paho subscriber that records (topic, payload, retain) in arrival order."""

    def __init__(self, port: int, topics: list[str], client_id: str = "", clean: bool = True):
        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.subscribed = threading.Event()  # set once the broker has granted every topic
        self._pending = set()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: self._pending.update(c.subscribe(t, qos=1)[1] for t in topics)
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._pending.discard(mid)
        if not self._pending:
            self.subscribed.set()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, topic: str) -> list[str]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.on(topic)]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        return wait_until(lambda: predicate(self), timeout, step=0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber_factory():
    made = []

    def make(port: int, topics: list[str], **kwargs) -> Subscriber:
        made.append(Subscriber(port, topics, **kwargs))
        return made[-1]

    yield make
    for sub in made:
        sub.close()


def street_config(mqtt_port: int, metrics_port: int = 0, **camera_overrides) -> dict:
    """The bundled config.yaml as a dict, pointed at a test broker, with overrides for the street camera."""
    import yaml

    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["mqtt"].update(port=mqtt_port, client_id=f"monitor-test-{mqtt_port}", heartbeat_s=5)
    data["metrics"].update(enabled=bool(metrics_port), port=metrics_port)
    data["web"]["enabled"] = False  # the bundled port 8099 is not free for every test; tests/test_web*.py turn it on
    data["models"]["person"]["path"] = str(PERSON_MODEL)
    street = data["cameras"]["street"]
    street.update(source=str(CLIP), realtime=False)
    street.update(camera_overrides)
    return data


# The strip between the tape (the bundled lot's front edge) and the kerb, left of the gravel patch: a man walks
# along it in the street clip (frames 597-653). Nobody goes behind the tape, so the bundled lot raises nothing.
KERB = [[0, 180], [42, 186], [171, 199], [300, 202], [447, 194], [470, 195], [300, 213], [170, 214], [0, 203]]


def add_kerb_intrusion(data: dict) -> None:
    """A ``kerb`` zone on the strip and a ``kerb_intrusion`` rule: the bundled lot_intrusion's settings."""
    street = data["cameras"]["street"]
    street["zones"]["kerb"] = {"polygon": KERB}
    lot_rule = next(r for r in street["safety"] if r["name"] == "lot_intrusion")
    street["safety"].append({**lot_rule, "name": "kerb_intrusion", "zones": ["kerb"]})


@pytest.fixture
def ice_store_example(tmp_path) -> Path:
    """examples/ice-store.yaml in its place in a copy of the checkout, after the README's
    `monitor generate clip data/ice-store.avi` (two frames here): a file source must exist to load."""
    from monitor.tools import icegen

    checkout = tmp_path / "checkout"
    (checkout / "examples").mkdir(parents=True)
    (checkout / "models").symlink_to(ROOT / "models")
    icegen.write_clip(checkout / "data" / "ice-store.avi", seed=6, n_frames=2, fps=1)
    example = checkout / "examples" / "ice-store.yaml"
    example.write_text((ROOT / "examples" / "ice-store.yaml").read_text())
    return example


def write_config(tmp_path: Path, data: dict, name: str = "config.yaml") -> Path:
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cut_clip(clip: Path, path: Path, start: int = 0, count: int = 40, fps: float = 10.0) -> Path:
    """A lossless (FFV1) copy of clip frames [start, start + count): the same pixels the pipeline decodes."""
    import cv2

    capture = cv2.VideoCapture(str(clip))
    capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer = None
    for _ in range(count):
        ok, image = capture.read()
        assert ok, f"{clip} has no frame {start + count - 1}"
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, image.shape[1::-1])
        writer.write(image)
    writer.release()
    capture.release()
    return path


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk("2m")``: a real file system that fills up, a tmpfs of that size mounted under tmp_path
    (needs root and CAP_SYS_ADMIN; the test is skipped, saying so, where mounting is impossible)."""
    import subprocess

    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# --- a real RTSP camera: GStreamer's RTSP server under Debian's own python3 -------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi and the GStreamer RTSP server


@pytest.fixture(scope="session")
def mjpeg_clip(tmp_path_factory, clip) -> Path:
    """vtest as baseline MJPEG (standard Huffman tables), which RTP/JPEG carries as is."""
    out = tmp_path_factory.mktemp("rtsp") / "vtest-mjpeg.avi"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-c:v", "mjpeg", "-huffman", "default",
         "-pix_fmt", "yuvj420p", "-q:v", "8", str(out)],
        check=True, timeout=120,
    )
    return out


class RtspServer:
    """tests/rtsp_server.py on a free port; with ``login`` (user, password) it serves only a client that logs in."""

    def __init__(self, clip: Path, login: tuple[str, str] | None = None):
        self.port = free_port()
        self.clip = clip
        self.login = login
        self.process = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        script = ROOT / "tests" / "rtsp_server.py"
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(script), str(self.port), str(self.clip), *(self.login or ())],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def rtsp_servers(mjpeg_clip):
    """Start RTSP servers on the clip (skipped where GStreamer's RTSP server is not installed); all killed after."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"], capture_output=True)
    if probe.returncode:
        pytest.skip("no GStreamer RTSP server (apt: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")
    started = []

    def start(login: tuple[str, str] | None = None) -> RtspServer:
        started.append(RtspServer(mjpeg_clip, login))
        started[-1].start()
        return started[-1]

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def rtsp_server(rtsp_servers) -> RtspServer:
    return rtsp_servers()
