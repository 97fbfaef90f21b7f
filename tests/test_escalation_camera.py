"""A camera's escalation stage: when it is on, config errors by key path, the count override, and (against a real
HTTP server) an unsure detection escalated with its answer published, the override policy applied."""

from __future__ import annotations

import pytest
from conftest import street_config
from escalation_support import (
    JACKET_DETECTIONS, PEOPLE, app_config, camera_escalation, escalations, frame_result, jacket_frames, run_until, value,
)
from fake_openai import Answer

from monitor.common import ALL_ZONES
from monitor.config import ConfigError, parse_config
from monitor.escalation.camera import CountOverride
from monitor.metrics import Metrics


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
