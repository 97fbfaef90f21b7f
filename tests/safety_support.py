"""Shared by the safety tests: ``Scene``, one camera's SafetyEngine fed scripted frames on a 10 fps stream clock,
and the rules the tests use."""

from __future__ import annotations

import json

import numpy as np
from conftest import boxes_of

from monitor.config import CameraConfig, MqttConfig
from monitor.evidence import EvidenceStore
from monitor.frame import Boxes, CapturedFrame, FrameResult
from monitor.safety import SafetyEngine

CLASS_NAMES = ["Normal", "Fall"]
LABELS = ["person", "person"]
NORMAL, FALL = 0, 1
ZONES = {
    "lot": {"polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]},
    "yard": {"polygon": [[200, 0], [300, 0], [300, 100], [200, 100]]},
}
IN_LOT = (40, 20, 60, 80)  # tall box, feet at (50, 80): inside the lot
OUTSIDE = (140, 120, 160, 180)
FPS = 10


class RecordingMetrics:
    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.active: dict[tuple[str, str], int] = {}

    def safety_event_started(self, camera: str, rule: str) -> None:
        self.started.append((camera, rule))

    def safety_events_active(self, camera: str, rule: str, n: int) -> None:
        self.active[(camera, rule)] = n


class Scene:
    """An engine for one camera and a stream clock; ``frame`` feeds one scripted frame at 10 fps."""

    def __init__(self, rules: list[dict], evidence: EvidenceStore | None = None, image_shape=(240, 320, 3)):
        camera = CameraConfig.model_validate({"source": "x.mp4", "model": "person", "zones": ZONES, "safety": rules})
        self.metrics = RecordingMetrics()
        self.engine = SafetyEngine("cam", camera, MqttConfig(), CLASS_NAMES, evidence, self.metrics)
        self.messages: list = []
        self.index = 0
        self.rng = np.random.default_rng(0)
        self.shape = image_shape

    @property
    def t(self) -> float:
        return self.index / FPS

    def frame(self, objects=(), detections=None, image: np.ndarray | None = None) -> list[dict]:
        """objects: (xyxy, track_id, class_id, conf); detections default to the objects' boxes."""
        boxes = _boxes(objects)
        dets = _boxes(detections) if detections is not None else Boxes(boxes.xyxy, boxes.conf, boxes.class_id, np.full(len(boxes), -1, np.int64))
        if image is None:
            image = self.rng.integers(60, 200, self.shape, dtype=np.uint8)
        # wall and monotonic clocks run 100x faster than the stream: events must follow the stream's time
        frame = CapturedFrame("cam", self.index, image, 1_700_000_000 + self.t / 100, 5000 + self.t / 100, self.t)
        result = FrameResult(frame, LABELS, detections=dets, objects=boxes)
        out = self.engine.update(result)
        self.messages += out
        self.index += 1
        return [json.loads(m.payload) for m in out if m.topic == "monitor/cam/events"]

    def run(self, seconds: float, objects=(), detections=None, image=None) -> list[dict]:
        events = []
        for _ in range(round(seconds * FPS)):
            events += self.frame(objects, detections, image)
        return events

    def events(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.messages if m.topic == "monitor/cam/events"]

    def active(self) -> dict:
        retained = [m for m in self.messages if m.topic == "monitor/cam/events/active"]
        assert all(m.retain and m.qos == 1 for m in retained)
        return json.loads(retained[-1].payload)


def _boxes(rows) -> Boxes:
    """rows: (xyxy, track_id, class_id, conf), as ``person`` makes them."""
    return boxes_of((xyxy, conf, class_id, track_id) for xyxy, track_id, class_id, conf in rows)


def person(box, track, conf=0.8, class_id=NORMAL):
    return (box, track, class_id, conf)


INTRUSION = {"name": "lot_intrusion", "rule": "intrusion", "zones": ["lot"], "classes": ["person"], "min_seconds": 1.0, "clear_seconds": 2.0, "cooldown_s": 10}
DOWN = {"name": "down", "rule": "person_down", "min_seconds": 3, "clear_seconds": 2, "cooldown_s": 60, "ambiguous_conf": [0.3, 0.6], "unreviewed_after_s": 5}
LYING = (50, 150, 150, 190)  # wide box
STALE = {"name": "stale", "rule": "stale_camera", "no_frame_s": 3, "min_seconds": 2, "clear_seconds": 1}
