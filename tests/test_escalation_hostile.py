"""A hostile multimodal endpoint (a real OpenAI-compatible HTTP server on loopback, tests/fake_openai.py): huge or
control-laden free text, lying token usage, impossible or fractional counts, an event reviewed twice. Whatever it
sends is bounded, validated and plausible, or it is `invalid`/`malformed` and never applied, budgets included."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import street_config
from fake_openai import Answer, FakeOpenAI, Raw

from monitor.common import ALL_ZONES
from monitor.config import parse_config
from monitor.detection import ClassThresholds
from monitor.escalation.camera import build_camera_escalation
from monitor.escalation.service import EscalationService
from monitor.frame import Boxes, CapturedFrame, FrameResult
from monitor.metrics import Metrics
from monitor.safety.engine import SafetyEngine

CLASS_NAMES = ["Normal", "Fall"]
LABELS = ["person", "person"]
PEOPLE = [([400, 200, 430, 290], 0.9, 0, 1), ([500, 220, 530, 310], 0.85, 0, 2)]
UNSURE_FALL = ([70.0, 490.0, 160.0, 530.0], 0.5, 1, -1)  # Fall at 0.5 against 0.6: a grey-band frame
COUNTS = {"lot": {"person": 0}, "path": {"person": 2}, "lawn": {"person": 0}, ALL_ZONES: {"person": 2}}


@pytest.fixture(scope="module")
def street_image(clip) -> np.ndarray:
    ok, image = cv2.VideoCapture(str(clip)).read()
    assert ok
    return image


@pytest.fixture
def endpoint():
    server = FakeOpenAI().start()
    yield server
    server.stop()


def boxes(rows) -> Boxes:
    return Boxes(np.array([r[0] for r in rows], np.float32), np.array([r[1] for r in rows], np.float32),
                 np.array([r[2] for r in rows], np.int32), np.array([r[3] for r in rows], np.int64))


def frame(image, index: int, detections) -> FrameResult:
    captured = CapturedFrame("street", index, image, time.time(), time.monotonic(), index / 10)
    result = FrameResult(captured, LABELS, detections=boxes(detections), objects=boxes(PEOPLE))
    result.counts = {zone: dict(c) for zone, c in COUNTS.items()}
    result.raw_counts = result.counts
    return result


class Stage:
    """The street camera's escalation stage against the endpoint, with a real safety engine when rules are given."""

    def __init__(self, server: FakeOpenAI, policy: str = "report_only", safety: list | None = None, **escalation):
        data = street_config(1883)
        data["escalation"] = {"base_url": server.base_url, "model": "hostile", "api_key": {"value": "test-key"},
                              "timeout_s": 5, "max_retries": 0, "image_long_side": 512, "price_input_per_1m": 1.0,
                              "price_output_per_1m": 4.0, "daily_budget": 10.0, **escalation}
        data["cameras"]["street"]["escalation"] = {"audit_every_s": None, "policy": policy,
                                                   "thresholds": {"stretch_s": 0.0, "cooldown_s": 0.0}}
        data["cameras"]["street"]["safety"] = safety or []
        app = parse_config(data)
        camera = app.cameras["street"]
        model = app.models["person"]
        detector = SimpleNamespace(class_names=CLASS_NAMES, config=model, thresholds=ClassThresholds.build(model, CLASS_NAMES))
        zone_labels = {**{zone: ["person"] for zone in camera.zones}, ALL_ZONES: ["person"]}
        self.metrics = Metrics()
        self.service = EscalationService(app.escalation, self.metrics)
        self.escalation = build_camera_escalation("street", camera, app, self.service, detector, zone_labels, self.metrics)
        self.safety = SafetyEngine("street", camera, app.mqtt, CLASS_NAMES) if camera.safety else None
        self.messages: list = []
        self.index = 0

    def step(self, image, detections) -> FrameResult:
        result = frame(image, self.index, detections)
        self.index += 1
        if self.safety:
            self.messages += self.safety.update(result)
        self.messages += self.escalation.step(result, self.safety)
        return result

    def until_answers(self, image, detections, n: int = 1, timeout: float = 30) -> list[dict]:
        self.service.start()
        deadline = time.monotonic() + timeout
        while len(self.escalations()) < n and time.monotonic() < deadline:
            self.step(image, detections)
            time.sleep(0.02)
        assert len(self.escalations()) >= n, "no answer came back"
        return self.escalations()

    def escalations(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.messages if m.topic.endswith("/escalations")]

    def value(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def stop(self):
        self.service.stop()


def schema_answer(received, **changes) -> dict:
    """A well-formed answer to the request's own schema, then ``changes``."""
    props = received.schema["properties"]
    answer = {"totals": {label: 2 for label in props["totals"]["required"]},
              "zones": {zone: {label: 0 for label in s["required"]} for zone, s in props["zones"]["properties"].items()},
              "events": [{"id": i, "real": False, "note": "fine"} for i in received.event_ids], "description": "a street"}
    answer.update(changes)
    return answer


def test_free_text_is_bounded_and_stripped_of_control_characters(endpoint, street_image):
    nasty = "\x1b[2J\x00line one\nline two\r\t\u2028" + "x" * 5000
    endpoint.push(lambda r: Raw(json.dumps(schema_answer(r, description=nasty, events=[]))),
                  lambda r: Raw(json.dumps(schema_answer(r, description="y" * 10_000_000))))
    stage = Stage(endpoint)
    try:
        first, second = stage.until_answers(street_image, PEOPLE + [UNSURE_FALL], n=2)[:2]
    finally:
        stage.stop()
    assert first["outcome"] == "ok"
    assert first["description"].startswith("[2J line one line two x") and len(first["description"]) <= 500
    assert not any(ord(c) < 32 or c in "\x7f\u2028" for c in first["description"])
    assert second["outcome"] == "malformed" and second["description"] is None
    assert len(json.dumps(second)) < 5000, "nothing of the 10 MB answer is published"


def test_review_notes_and_the_reviews_kept_per_event_are_bounded():
    data = street_config(1883)
    data["cameras"]["street"]["safety"] = [{"name": "down", "rule": "person_down", "unreviewed_after_s": None, "min_seconds": 0}]
    app = parse_config(data)
    engine = SafetyEngine("street", app.cameras["street"], app.mqtt, CLASS_NAMES)
    image = np.zeros((576, 768, 3), np.uint8)
    messages = []
    for index in range(3):
        messages += engine.update(frame(image, index, [UNSURE_FALL]))
    (event,) = engine.open_events()
    for n in range(20):  # a chatty endpoint confirming the same event again and again, 1 MB a note
        messages += engine.review(event.id, real=True, note=f"{n}\x1b[31m" + "z" * 1_000_000)
    active = json.loads([m for m in messages if m.topic.endswith("/events/active")][-1].payload)
    (listed,) = active["events"]
    assert len(listed["reviews"]) == 5 and listed["reviews"][-1]["note"].startswith("19 ")
    assert all(len(review["note"]) <= 300 and "\x1b" not in review["note"] for review in listed["reviews"])
    assert max(len(m.payload) for m in messages) < 10_000


def test_negative_token_usage_is_invalid_and_neither_resets_the_budget_nor_stops_later_answers(endpoint, street_image):
    endpoint.push(lambda r: Raw(json.dumps(schema_answer(r)), tokens=(-1_000_000_000, 5)),
                  lambda r: Raw(json.dumps(schema_answer(r)), tokens=(900, 60)))
    stage = Stage(endpoint)
    try:
        lying, honest = stage.until_answers(street_image, PEOPLE + [UNSURE_FALL], n=2)[:2]
    finally:
        stage.stop()
    assert lying["outcome"] == "invalid" and lying["model"] is None and "usage" in lying["error"]
    assert lying["cost_estimated"] > 0, "billed at its estimate, never negative"
    assert honest["outcome"] == "ok" and honest["tokens"] == {"input": 900, "output": 60}
    spent = stage.value("monitor_escalation_cost_total", camera="street")  # these two and any later call
    assert spent >= lying["cost_estimated"] + honest["cost_estimated"]
    assert stage.value("monitor_escalation_budget_remaining") == pytest.approx(10.0 - spent), "the ledger was not reset"


def override_once(endpoint, image, answer) -> tuple[dict, FrameResult, Stage]:
    """Every call answered with ``answer``; the first escalation's payload and the next frame's counts."""
    endpoint.default = answer
    stage = Stage(endpoint, policy="override_until_change")
    try:
        (payload,) = stage.until_answers(image, PEOPLE + [UNSURE_FALL])[:1]
        return payload, stage.step(image, PEOPLE + [UNSURE_FALL]), stage
    finally:
        stage.stop()


@pytest.mark.parametrize("count,why", [(9999, "implausible"), (2.0, "not an integer")])
def test_implausible_or_fractional_counts_are_invalid_and_never_override(endpoint, street_image, count, why):
    answer, after, stage = override_once(endpoint, street_image, lambda r: Raw(json.dumps(schema_answer(r, totals={"person": count}))))
    assert answer["outcome"] == "invalid" and why in answer["error"] and answer["decision"] == "rejected"
    assert after.counts[ALL_ZONES] == {"person": 2} and stage.escalation.payload_extra == {"source": "detector"}


def test_a_plausible_count_still_overrides(endpoint, street_image):
    answer, after, _ = override_once(endpoint, street_image, Answer(totals={"person": 3}, zones={"path": {"person": 3}}))
    assert answer["outcome"] == "ok" and answer["decision"] == "override"
    assert after.counts[ALL_ZONES] == {"person": 3}


def test_an_answer_that_reviews_one_event_twice_is_invalid_and_changes_no_event(endpoint, street_image):
    two_falls = [([70.0, 490.0, 160.0, 530.0], 0.45, 1, -1), ([600.0, 480.0, 700.0, 520.0], 0.45, 1, -1)]
    rule = {"name": "down", "rule": "person_down", "unreviewed_after_s": None, "min_seconds": 0.1}

    def twice(received):
        assert len(received.event_ids) == 2, received.event_ids
        first = received.event_ids[0]
        return Raw(json.dumps(schema_answer(received, events=[{"id": first, "real": True, "note": "a person down"},
                                                              {"id": first, "real": False, "note": "a jacket"}])))

    endpoint.push(twice)
    stage = Stage(endpoint, safety=[rule])
    try:
        for _ in range(3):
            stage.step(street_image, PEOPLE + two_falls)
        assert len(stage.safety.open_events()) == 2
        (answer,) = stage.until_answers(street_image, PEOPLE + two_falls)[:1]
    finally:
        stage.stop()
    assert endpoint.problems == [] and answer["outcome"] == "invalid" and "answered twice" in answer["error"]
    events = stage.safety.open_events()
    assert len(events) == 2 and {e.verdict for e in events} == {"pending"} and {e.status for e in events} == {"candidate"}
    assert not [m for m in stage.messages if m.topic.endswith("/events")], "no event started, confirmed or dismissed"
