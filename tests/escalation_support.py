"""Shared by the escalation tests: the street camera's escalation config against a fake OpenAI server,
scripted frame results, and stepping a CameraEscalation until its messages say enough."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from monitor.common import ALL_ZONES
from monitor.config import parse_config
from monitor.detection import ClassThresholds
from monitor.escalation import Ambiguity, CameraBrief, Candidate, EscalationOutcome, ModelAnswer, build_request
from monitor.escalation.camera import build_camera_escalation
from monitor.escalation.service import EscalationService
from monitor.frame import Boxes, CapturedFrame, FrameResult
from monitor.metrics import Metrics
from conftest import boxes_of as boxes, street_config
from fake_openai import FakeOpenAI

CLASS_NAMES = ["Normal", "Fall"]
LABELS = ["person", "person"]
JACKET = [70.0, 490.0, 160.0, 530.0]


def app_config(server: FakeOpenAI | None = None, escalation: dict | None = None, **camera_escalation):
    data = street_config(1883)
    data["escalation"] = {
        "base_url": server.base_url if server else "https://api.example.com/v1",
        "model": "test-vision",
        "api_key": {"value": "test-key"},
        "timeout_s": 5,
        "max_retries": 2,
        "image_long_side": 512,
        "price_input_per_1m": 1.0,
        "price_output_per_1m": 4.0,
        "daily_budget": 10.0,
        **(escalation or {}),
    }
    data["cameras"]["street"]["escalation"] = {"audit_every_s": None, **camera_escalation}
    return parse_config(data)


def fake_detector(app):
    config = app.models["person"]
    return SimpleNamespace(class_names=CLASS_NAMES, config=config, thresholds=ClassThresholds.build(config, CLASS_NAMES))


def zone_labels(app) -> dict[str, list[str]]:
    labels = {zone: ["person"] for zone in app.cameras["street"].zones}
    labels[ALL_ZONES] = ["person"]
    return labels


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def camera_escalation(app, metrics, clock=None, service=None):
    service = service or EscalationService(app.escalation, metrics)
    escalation = build_camera_escalation("street", app.cameras["street"], app, service, fake_detector(app), zone_labels(app), metrics)
    if clock is not None:
        escalation.clock = clock
    return escalation, service


def frame_result(image, index=0, detections=None, objects=None, counts=None, raw=None) -> FrameResult:
    result = FrameResult(CapturedFrame("street", index, image, time.time(), time.monotonic()), LABELS)
    result.detections = detections if detections is not None else Boxes.empty()
    result.objects = objects if objects is not None else Boxes.empty()
    result.counts = counts or {"lot": {"person": 0}, "path": {"person": 2}, "lawn": {"person": 0}, ALL_ZONES: {"person": 2}}
    result.raw_counts = raw or result.counts
    return result


def value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def run_until(escalation, result_factory, predicate, timeout=20.0, safety=None):
    """Step frames until predicate(messages so far) holds; returns the messages."""
    messages, deadline, i = [], time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        messages += escalation.step(result_factory(i), safety)
        if predicate(messages):
            return messages
        i += 1
        time.sleep(0.02)
    raise AssertionError(f"timed out; messages: {[m.payload for m in messages]}")


def escalations(messages) -> list[dict]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith("/escalations")]


JACKET_DETECTIONS = boxes([(JACKET, 0.5, 1, -1), ([400, 200, 430, 290], 0.9, 0, 1), ([500, 220, 530, 310], 0.85, 0, 2)])
PEOPLE = boxes([([400, 200, 430, 290], 0.9, 0, 1), ([500, 220, 530, 310], 0.85, 0, 2)])


def jacket_frames(street_image):
    return lambda i: frame_result(street_image, index=i, detections=JACKET_DETECTIONS, objects=PEOPLE)


def brief(app, detector) -> CameraBrief:
    camera = app.cameras["street"]
    zones = {name: {"polygon": z.polygon, "description": "", "labels": ["person"]} for name, z in camera.zones.items()}
    return CameraBrief("street", camera.description, zones, ["person"], {"person": ["Normal", "Fall"]}, detector.class_names, camera.escalation)


def save_frame(writer, detector, brief_, index, image, boxes, totals_delta=0, events=None, verdicts=None):
    passing = detector.thresholds.passing(boxes)
    objects = boxes.select(passing)
    result = FrameResult(CapturedFrame("street", index, image, time.time() + index, time.monotonic()), detector.labels)
    result.detections, result.objects = boxes, objects
    result.counts = {ALL_ZONES: {"person": len(objects)}}
    request = build_request(brief_, Candidate.of(Ambiguity(0.7, "grey_band"), result, events or []), lambda outcome: None)
    answer = ModelAnswer({ALL_ZONES: {"person": len(objects) + totals_delta}}, verdicts or [], "people on a street")
    return writer.save(request, image, EscalationOutcome(request, "ok", answer))
