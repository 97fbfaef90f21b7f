"""Shared fixtures: real material (the clip, the model) and real services (Mosquitto) on loopback."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from bench.loopback import MOSQUITTO, Broker, free_port, wait_for_port  # noqa: F401 (tests import them from here)

os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "data" / "vtest.avi"
PERSON_MODEL = ROOT / "models" / "person-fall.pt"


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
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, topic: str) -> list[str]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.on(topic)]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return False

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
    data["models"]["person"]["path"] = str(PERSON_MODEL)
    street = data["cameras"]["street"]
    street.update(source=str(CLIP), realtime=False)
    street.update(camera_overrides)
    return data


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
