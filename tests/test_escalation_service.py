"""The escalation service against a real HTTP server: failures after the retries open the circuit; a hanging
call times out without blocking the camera, and a full queue drops the oldest requests."""

from __future__ import annotations

import time

import pytest
from escalation_support import app_config, camera_escalation, escalations, frame_result, jacket_frames, run_until, value
from fake_openai import Hang, Status

from monitor.metrics import Metrics


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
