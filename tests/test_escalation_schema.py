"""Answers: parsed against the schema built for the camera; malformed and out-of-schema answers from a real HTTP
server rejected and counted."""

from __future__ import annotations

import json

import pytest
from escalation_support import app_config, camera_escalation, escalations, jacket_frames, run_until, value
from fake_openai import Answer, Raw

from monitor.common import ALL_ZONES
from monitor.escalation.schema import AnswerRejected, answer_schema, parse_answer
from monitor.metrics import Metrics


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
