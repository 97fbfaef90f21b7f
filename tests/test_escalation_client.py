"""The model client: which endpoints are on site, and against a real HTTP server (tests/fake_openai.py): a 429's
Retry-After honoured, the Responses API."""

from __future__ import annotations

from escalation_support import app_config, camera_escalation, escalations, jacket_frames, run_until, value
from fake_openai import Answer, Status

from monitor.escalation.client import endpoint_on_site
from monitor.metrics import Metrics


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
