"""Escalation: ambiguity scoring, stretch selection, limits, answer validation, and the client against a real
OpenAI-compatible HTTP server on loopback (tests/fake_openai.py)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from monitor.config import ConfigError, parse_config
from monitor.common import ALL_ZONES
from monitor.detection import ClassThresholds
from monitor.escalation.ambiguity import Ambiguity, AmbiguityScorer, StretchSelector
from monitor.escalation.camera import CountOverride, build_camera_escalation
from monitor.escalation.client import endpoint_on_site
from monitor.escalation.limits import Budget, CircuitBreaker, HourlyCap
from monitor.escalation.prompt import image_tokens
from monitor.escalation.schema import AnswerRejected, answer_schema, parse_answer
from monitor.escalation.service import EscalationService
from monitor.frame import Boxes, CapturedFrame, FrameResult
from monitor.metrics import Metrics
from monitor.safety.events import OpenEvent
from conftest import street_config
from fake_openai import Answer, FakeOpenAI, Hang, Raw, Status

CLASS_NAMES = ["Normal", "Fall"]
LABELS = ["person", "person"]
JACKET = [70.0, 490.0, 160.0, 530.0]


# --- helpers ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def street_image(clip) -> np.ndarray:
    capture = cv2.VideoCapture(str(clip))
    ok, image = capture.read()
    capture.release()
    assert ok
    return image


@pytest.fixture
def server():
    fake = FakeOpenAI(expect_long_side=512, expect_text=["Street corner", "zone lot", "zone lawn", "zone path", "person"]).start()
    yield fake
    fake.stop()


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


def boxes(rows: list[tuple[list[float], float, int, int]]) -> Boxes:
    if not rows:
        return Boxes.empty()
    return Boxes(
        np.array([r[0] for r in rows], np.float32),
        np.array([r[1] for r in rows], np.float32),
        np.array([r[2] for r in rows], np.int32),
        np.array([r[3] for r in rows], np.int64),
    )


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


# --- scoring ----------------------------------------------------------------------------------------------


def scorer(app, **thresholds):
    config = app.cameras["street"].escalation
    if thresholds:
        config = config.model_copy(update={"thresholds": config.thresholds.model_copy(update=thresholds)})
    return AmbiguityScorer(config, CLASS_NAMES, fake_detector(app).thresholds.by_class)


def test_grey_band_scores_a_detection_near_its_threshold(street_image):
    app = app_config()
    s = scorer(app)
    ambiguity = s.score(frame_result(street_image, detections=JACKET_DETECTIONS, objects=PEOPLE), [])
    # Fall at 0.5 against its 0.6 threshold, margin 0.15: 1 - 0.5 * 0.1 / 0.15
    assert ambiguity.reason == "grey_band"
    assert ambiguity.score == pytest.approx(1 - 0.5 * 0.1 / 0.15, abs=1e-3)
    assert ambiguity.evidence[0]["class"] == "Fall" and ambiguity.evidence[0]["box"] == JACKET
    assert s.score(frame_result(street_image, detections=PEOPLE, objects=PEOPLE), []).score == 0.0
    only_normal = scorer(app, grey_classes=["Normal"])
    assert only_normal.score(frame_result(street_image, detections=JACKET_DETECTIONS), []).score == 0.0


def test_flicker_scores_changing_raw_counts(street_image):
    s = scorer(app_config(), flicker_window=6, flicker_changes=4)
    scores = [s.score(frame_result(street_image, raw={ALL_ZONES: {"person": n}}), []) for n in (2, 3, 2, 3, 2)]
    assert [a.score for a in scores] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert scores[-1].reason == "flicker"


def test_class_disagreement_on_one_object(street_image):
    s = scorer(app_config())
    overlap = boxes([([100, 100, 140, 200], 0.7, 0, -1), ([101, 102, 141, 200], 0.65, 1, -1)])
    assert s.score(frame_result(street_image, detections=overlap), []).reason == "class_disagreement"
    s.score(frame_result(street_image, objects=boxes([([1, 1, 9, 9], 0.9, 0, 7)])), [])
    flipped = s.score(frame_result(street_image, objects=boxes([([1, 1, 9, 9], 0.9, 1, 7)])), [])
    assert flipped.reason == "class_disagreement" and flipped.evidence == [{"track_id": 7, "was": "Normal", "now": "Fall"}]


def test_weak_safety_event_is_ambiguous_until_reviewed(street_image):
    s = scorer(app_config())
    event = OpenEvent("ev1", "person_down", "person_down", "lawn", (3,), True, "candidate", "pending", ())
    assert s.score(frame_result(street_image), [event]).reason == "weak_event"
    s.reviewed_events.add("ev1")
    assert s.score(frame_result(street_image), [event]).score == 0.0


def test_stretch_hands_on_its_best_frame_once(street_image):
    selector = StretchSelector(trigger=0.5, stretch_s=1.0)
    results = [frame_result(street_image, index=i) for i in range(6)]
    scores = [0.6, 0.9, 0.7, 0.2, 0.6, 0.55]
    out = [selector.update(0.1 * i, Ambiguity(s, "grey_band"), r, []) for i, (s, r) in enumerate(zip(scores, results))]
    assert [o is not None for o in out] == [False, False, False, True, False, False]
    assert out[3].result.frame.index == 1  # the 0.9 frame
    # a lasting ambiguity is still sent after stretch_s
    assert selector.update(1.5, Ambiguity(0.6, "grey_band"), results[0], []) is not None


# --- limits -----------------------------------------------------------------------------------------------


def test_hourly_cap_is_a_sliding_hour():
    cap = HourlyCap(2)
    assert [cap.try_take(t) for t in (0, 10, 20, 3599, 3600, 3610, 3611)] == [True, True, False, False, True, True, False]


def test_budget_reserves_settles_and_rolls_over_at_utc_midnight():
    clock = Clock(1_700_000_000.0)
    budget = Budget(1.0, wall_clock=clock)
    assert budget.try_reserve(0.6) and not budget.try_reserve(0.6)
    budget.settle(0.6, 0.1)
    assert budget.remaining == pytest.approx(0.9)
    assert budget.try_reserve(0.8) and not budget.try_reserve(0.2)
    clock.now += 86400
    assert budget.remaining == pytest.approx(1.0)


def test_budget_spent_today_survives_a_restart_but_not_midnight(tmp_path):
    clock = Clock(1_700_000_000.0)
    ledger = tmp_path / "state" / "escalation-budget.json"
    first = Budget(1.0, wall_clock=clock, ledger=ledger)
    assert first.try_reserve(0.5)
    first.settle(0.5, 0.7)
    restarted = Budget(1.0, wall_clock=clock, ledger=ledger)
    assert restarted.remaining == pytest.approx(0.3)
    assert not restarted.try_reserve(0.4)
    clock.now += 86400
    assert Budget(1.0, wall_clock=clock, ledger=ledger).remaining == pytest.approx(1.0)
    ledger.write_text("not json")
    assert Budget(1.0, wall_clock=clock, ledger=ledger).remaining == pytest.approx(1.0)


def test_circuit_breaker_opens_then_lets_one_trial_through():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_s=60, clock=clock)
    for _ in range(3):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.is_open and not breaker.allow()
    clock.now += 61
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record(False)
    assert not breaker.allow()
    clock.now += 61
    assert breaker.allow()
    breaker.record(True)
    assert not breaker.is_open and breaker.allow()


def test_on_site_endpoints_are_recognised():
    app = app_config()
    for url, on_site in [
        ("http://127.0.0.1:8000/v1", True),
        ("http://192.168.1.20:11434/v1", True),
        ("http://gpu-box.local:8000/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", False),
    ]:
        assert endpoint_on_site(app.escalation.model_copy(update={"base_url": url})) is on_site, url
    assert endpoint_on_site(app.escalation.model_copy(update={"base_url": None})) is False
    assert endpoint_on_site(app.escalation.model_copy(update={"on_site": True})) is True


def test_off_site_switch_keeps_frames_on_site():
    metrics = Metrics()
    public = app_config(off_site=False)
    assert camera_escalation(public, metrics)[0] is None
    local = app_config(escalation={"base_url": "http://127.0.0.1:9/v1"}, off_site=False)
    assert camera_escalation(local, metrics)[0] is not None
    assert camera_escalation(app_config(enabled=False), metrics)[0] is None


def test_config_errors_name_their_key_path():
    data = street_config(1883)
    data["escalation"] = {"api_key": {"env": "X", "value": "y"}, "timeout_s": 0, "daily_budget": -1}
    data["cameras"]["street"]["escalation"] = {"policy": "trust_llm", "thresholds": {"trigger": 1.5}, "max_per_hr": 3}
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    text = str(error.value)
    for path in [
        "escalation.api_key: give exactly one of value, file, env",
        "escalation.timeout_s:",
        "escalation.daily_budget:",
        "cameras.street.escalation.policy:",
        "cameras.street.escalation.thresholds.trigger:",
        "cameras.street.escalation.max_per_hr: unknown key",
    ]:
        assert path in text, text
    app = app_config(thresholds={"grey_classes": ["Jacket"]})
    with pytest.raises(ConfigError, match=r"cameras.street.escalation.thresholds.grey_classes: unknown class 'Jacket'"):
        camera_escalation(app, Metrics())
    app = app_config(blur_people=True, person_labels=["human"])
    with pytest.raises(ConfigError, match=r"cameras.street.escalation.person_labels: unknown label 'human' \(known: person\)"):
        camera_escalation(app, Metrics())


def test_image_token_estimate_follows_openai_tiles():
    assert image_tokens(512, 384) == 85 + 170 * 1
    assert image_tokens(768, 576) == 85 + 170 * 4
    assert image_tokens(4000, 3000) == 85 + 170 * 4  # scaled to 1024x768
    assert image_tokens(4096, 2048) == 85 + 170 * 6  # scaled to 1536x768


# --- answers ----------------------------------------------------------------------------------------------


def test_answers_outside_the_schema_are_rejected(street_image):
    app = app_config()
    escalation, _ = camera_escalation(app, Metrics())
    event_ids = {"ev1"}
    schema = answer_schema(escalation.brief.labels, escalation.brief.zone_labels, sorted(event_ids))
    good = {
        "totals": {"person": 3},
        "zones": {"lot": {"person": 0}, "path": {"person": 3}, "lawn": {"person": 0}},
        "events": [{"id": "ev1", "real": False, "note": "a jacket"}],
        "description": "three people on the path",
    }
    answer = parse_answer(json.dumps(good), schema, event_ids)
    assert answer.counts[ALL_ZONES] == {"person": 3} and answer.events[0]["real"] is False
    assert parse_answer("```json\n" + json.dumps(good) + "\n```", schema, event_ids).counts == answer.counts
    bad = [
        ("", "malformed"),
        ("{not json", "malformed"),
        (json.dumps({**good, "totals": {"person": -1}}), "invalid"),
        (json.dumps({**good, "totals": {"person": "3"}}), "invalid"),
        (json.dumps({**good, "totals": {"person": 3, "car": 1}}), "invalid"),
        (json.dumps({k: v for k, v in good.items() if k != "zones"}), "invalid"),
        (json.dumps({**good, "events": [{"id": "ev9", "real": True, "note": ""}]}), "invalid"),
        (json.dumps({**good, "totals": {"person": 10**6}}), "invalid"),
    ]
    for content, kind in bad:
        with pytest.raises(AnswerRejected) as rejected:
            parse_answer(content, schema, event_ids)
        assert rejected.value.kind == kind, content


def test_override_lasts_until_the_detector_counts_change():
    override = CountOverride(max_s=100)
    detector = {ALL_ZONES: {"person": 2}, "path": {"person": 2}}
    override.start({ALL_ZONES: {"person": 3}, "path": {"person": 3}}, detector, now=0)
    assert override.apply(detector, 1) == ({ALL_ZONES: {"person": 3}, "path": {"person": 3}}, "llm")
    changed = {ALL_ZONES: {"person": 4}, "path": {"person": 4}}
    assert override.apply(changed, 2) == (changed, "detector")
    assert override.apply(detector, 3) == (detector, "detector")
    override.start({ALL_ZONES: {"person": 3}}, detector, now=0)
    assert override.apply(detector, 101)[1] == "detector"


# --- against the real HTTP server -------------------------------------------------------------------------


def jacket_frames(street_image):
    return lambda i: frame_result(street_image, index=i, detections=JACKET_DETECTIONS, objects=PEOPLE)


def test_an_unsure_detection_is_escalated_and_the_answer_published(server, street_image):
    server.push(Answer(totals={"person": 3}, zones={"path": {"person": 3}}, description="three people, a jacket on the lawn"))
    metrics = Metrics()
    app = app_config(server, thresholds={"stretch_s": 0.0})
    escalation, service = camera_escalation(app, metrics)
    service.start()
    try:
        messages = run_until(escalation, jacket_frames(street_image), lambda m: escalations(m))
    finally:
        service.stop()
    assert server.problems == []
    assert len(server.received) == 1
    received = server.received[0]
    assert received.image.shape[:2] == (384, 512)
    assert "Fall at [70.0, 490.0, 160.0, 530.0] (confidence 0.5)" in received.prompt
    assert received.body["response_format"]["json_schema"]["strict"] is True
    payload = escalations(messages)[0]
    assert messages[0].topic == "monitor/street/escalations" and not messages[0].retain
    assert payload["reason"] == "grey_band" and payload["outcome"] == "ok"
    assert payload["detector"] == {"totals": {"person": 2}, "zones": {"lot": {"person": 0}, "path": {"person": 2}, "lawn": {"person": 0}}}
    assert payload["model"]["totals"] == {"person": 3} and payload["model"]["zones"]["path"] == {"person": 3}
    assert payload["decision"] == "reported" and payload["policy"] == "report_only"
    assert payload["description"] == "three people, a jacket on the lawn"
    assert payload["tokens"] == {"input": 900, "output": 60}
    assert payload["cost_estimated"] == pytest.approx(900 * 1.0 / 1e6 + 60 * 4.0 / 1e6)
    assert payload["latency_s"] > 0
    assert value(metrics, "monitor_escalations_total", camera="street", reason="grey_band", outcome="ok") == 1
    assert value(metrics, "monitor_count_disagreement_total", camera="street") == 1
    assert value(metrics, "monitor_escalation_cost_total", camera="street") == pytest.approx(payload["cost_estimated"])
    assert value(metrics, "monitor_escalation_budget_remaining") == pytest.approx(10.0 - payload["cost_estimated"])


def test_429_with_retry_after_is_honoured(server, street_image):
    server.push(Status(429, retry_after=1.0), Answer(totals={"person": 2}, zones={"path": {"person": 2}}))
    metrics = Metrics()
    escalation, service = camera_escalation(app_config(server, thresholds={"stretch_s": 0.0}), metrics)
    service.start()
    try:
        payload = escalations(run_until(escalation, jacket_frames(street_image), escalations))[0]
    finally:
        service.stop()
    assert len(server.received) == 2
    assert server.received[1].at - server.received[0].at >= 0.95
    assert payload["outcome"] == "ok" and payload["decision"] == "agreed"
    assert value(metrics, "monitor_count_disagreement_total", camera="street") == 0


def test_persistent_500s_fail_after_the_retries_and_open_the_circuit(server, street_image):
    server.default = Status(500)
    metrics = Metrics()
    app = app_config(
        server, escalation={"max_retries": 1, "circuit_breaker": {"failures": 2, "cooldown_s": 3600}}, thresholds={"stretch_s": 0.0, "cooldown_s": 0.0}
    )
    escalation, service = camera_escalation(app, metrics)
    service.start()
    try:
        messages = run_until(
            escalation, jacket_frames(street_image),
            lambda m: len(escalations(m)) >= 2
            and value(metrics, "monitor_escalations_total", camera="street", reason="grey_band", outcome="circuit_open") >= 1,
        )
    finally:
        service.stop()
    failed = escalations(messages)
    assert len(server.received) == 4  # two escalations, each tried twice
    assert [p["outcome"] for p in failed[:2]] == ["http_error", "http_error"]
    assert failed[0]["decision"] == "failed" and failed[0]["model"] is None and failed[0]["cost_estimated"] == 0
    assert value(metrics, "monitor_escalation_circuit_open") == 1
    assert value(metrics, "monitor_escalation_budget_remaining") == pytest.approx(10.0)


def test_malformed_and_out_of_schema_answers_are_rejected_and_counted(server, street_image):
    server.push(Raw("the image shows 3 people"), Answer(extra={"mood": "calm"}), Answer(totals={"person": 2}))
    metrics = Metrics()
    escalation, service = camera_escalation(app_config(server, thresholds={"stretch_s": 0.0, "cooldown_s": 0.0}), metrics)
    service.start()
    try:
        payloads = escalations(run_until(escalation, jacket_frames(street_image), lambda m: len(escalations(m)) >= 3))
    finally:
        service.stop()
    assert [p["outcome"] for p in payloads[:3]] == ["malformed", "invalid", "ok"]
    assert [p["decision"] for p in payloads[:2]] == ["rejected", "rejected"]
    assert payloads[0]["model"] is None and "not JSON" in payloads[0]["error"]
    assert "mood" in payloads[1]["error"]
    for outcome in ("malformed", "invalid"):
        assert value(metrics, "monitor_escalations_total", camera="street", reason="grey_band", outcome=outcome) == 1
    assert value(metrics, "monitor_escalations_total", camera="street", reason="grey_band", outcome="ok") >= 1


def test_a_hang_past_the_timeout_fails_without_blocking_and_full_queue_drops_oldest(server, street_image):
    server.default = Hang(30)
    metrics = Metrics()
    app = app_config(
        server, escalation={"timeout_s": 1.0, "max_retries": 0, "queue_size": 2}, thresholds={"stretch_s": 0.0, "cooldown_s": 0.0}
    )
    escalation, service = camera_escalation(app, metrics)
    service.start()
    try:
        escalation.step(jacket_frames(street_image)(0))
        deadline = time.monotonic() + 10
        while not server.hanging and time.monotonic() < deadline:  # the worker is now stuck in the call
            time.sleep(0.01)
        started = time.monotonic()
        for i in range(1, 6):
            escalation.step(jacket_frames(street_image)(i))
        offered_s = time.monotonic() - started
        messages = run_until(escalation, lambda i: frame_result(street_image, index=100 + i), escalations, timeout=10)
    finally:
        service.stop()
        server.stop()
    print(f"5 frames offered in {offered_s * 1000:.1f} ms while the server hangs")
    assert escalations(messages)[0]["outcome"] == "timeout"
    # 6 requests: one in the worker, then 5 into a queue of 2: the 3 oldest waiting ones dropped
    assert value(metrics, "monitor_escalations_total", camera="street", reason="grey_band", outcome="dropped") == 3


def test_override_policy_replaces_counts_and_marks_the_source(server, street_image):
    server.push(Answer(totals={"person": 3}, zones={"path": {"person": 3}}))
    metrics = Metrics()
    escalation, service = camera_escalation(app_config(server, policy="override_until_change", thresholds={"stretch_s": 0.0}), metrics)
    service.start()
    try:
        messages = run_until(escalation, jacket_frames(street_image), escalations)
    finally:
        service.stop()
    assert escalations(messages)[0]["decision"] == "override"
    same_scene = frame_result(street_image, detections=JACKET_DETECTIONS, objects=PEOPLE)
    escalation.step(same_scene)
    assert same_scene.counts[ALL_ZONES] == {"person": 3} and same_scene.counts["path"] == {"person": 3}
    assert escalation.payload_extra == {"source": "llm"}
    moved = {"lot": {"person": 1}, "path": {"person": 2}, "lawn": {"person": 0}, ALL_ZONES: {"person": 3}}
    changed = frame_result(street_image, counts=moved)
    escalation.step(changed)
    assert changed.counts == moved and changed.counts_changed and escalation.payload_extra == {"source": "detector"}


def test_people_are_blurred_before_the_frame_leaves(server, street_image):
    person = [300.0, 250.0, 380.0, 450.0]
    metrics = Metrics()
    app = app_config(server, blur_people=True, draw_zones=False, audit_every_s=0.01)
    escalation, service = camera_escalation(app, metrics)
    service.start()
    try:
        objects = boxes([(person, 0.9, 0, 1)])
        run_until(escalation, lambda i: frame_result(street_image, index=i, detections=objects, objects=objects), escalations)
    finally:
        service.stop()
    sent = server.received[0].image
    scale = 512 / 768
    x1, y1, x2, y2 = (int(v * scale) for v in person)
    original = cv2.resize(street_image, (512, 384), interpolation=cv2.INTER_AREA)

    def detail(image):  # high-frequency energy inside the box
        roi = cv2.cvtColor(image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2], cv2.COLOR_BGR2GRAY)
        return float(np.abs(cv2.Laplacian(roi, cv2.CV_64F)).mean())

    assert detail(sent) < 0.5 * detail(original)
    outside = (slice(20, 100), slice(20, 200))
    assert np.abs(sent[outside].astype(int) - original[outside].astype(int)).mean() < 8  # only JPEG noise elsewhere
    assert value(metrics, "monitor_escalations_total", camera="street", reason="audit", outcome="ok") >= 1


def test_the_responses_api_carries_the_same_request_and_answer(server, street_image):
    server.push(Answer(totals={"person": 3}, zones={"path": {"person": 3}}, tokens=(1000, 50)))
    metrics = Metrics()
    escalation, service = camera_escalation(app_config(server, escalation={"api": "responses"}, thresholds={"stretch_s": 0.0}), metrics)
    service.start()
    try:
        payload = escalations(run_until(escalation, jacket_frames(street_image), escalations))[0]
    finally:
        service.stop()
    assert server.problems == []
    assert [r.api for r in server.received] == ["responses"]
    assert server.received[0].body["text"]["format"]["strict"] is True
    assert "You check the automatic object counts" in server.received[0].prompt  # the instructions
    assert payload["outcome"] == "ok" and payload["model"]["totals"] == {"person": 3}
    assert payload["tokens"] == {"input": 1000, "output": 50}
