"""Escalation end to end on the real street clip: real YOLO, real Mosquitto, a real OpenAI-compatible HTTP
server on loopback (tests/fake_openai.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.pipeline import Monitor
from conftest import cut_clip, street_config, write_config
from fake_openai import Answer, FakeOpenAI, Hang

JACKET_REGION = (40, 470, 190, 570)  # x1, y1, x2, y2 around the jacket on the lawn


@pytest.fixture(scope="module")
def segment(clip, tmp_path_factory) -> Path:
    """The first 50 frames (5 s) of the clip: the jacket lies on the lawn throughout."""
    return cut_clip(clip, tmp_path_factory.mktemp("escalation_clip") / "street-50.avi", 0, 50)


@pytest.fixture(autouse=True)
def llm_key(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "test-key")


def escalation_section(server: FakeOpenAI, **overrides) -> dict:
    return {
        "base_url": server.base_url,
        "model": "test-vision",
        "api_key": {"env": "TEST_LLM_KEY"},
        "timeout_s": 10,
        "max_retries": 1,
        "image_long_side": 512,
        "price_input_per_1m": 0.0,
        "price_output_per_1m": 0.0,
        "price_per_image": 0.01,
        "daily_budget": 1.0,
        **overrides,
    }


def run_monitor(config_path: Path, during=None) -> Monitor:
    monitor = Monitor(load_config(config_path))
    monitor.start()
    try:
        if during:
            during(monitor)
        monitor.wait(threading.Event())
    finally:
        monitor.stop()
    return monitor


def value(monitor: Monitor, name: str, **labels) -> float:
    return monitor.metrics.registry.get_sample_value(name, labels) or 0.0


def escalations(monitor: Monitor, camera: str, outcome: str) -> float:
    """monitor_escalations_total of a camera and outcome, summed over the reasons."""
    return sum(
        sample.value
        for metric in monitor.metrics.registry.collect()
        if metric.name == "monitor_escalations"
        for sample in metric.samples
        if sample.name == "monitor_escalations_total" and sample.labels["camera"] == camera and sample.labels["outcome"] == outcome
    )


def test_the_jacket_is_escalated_and_no_person_down_dismisses_the_event(broker, subscriber_factory, segment, tmp_path):
    server = FakeOpenAI(
        expect_long_side=512,
        expect_text=["Street corner outside a campus building", "zone lot", "zone path", "zone lawn", "- person"],
        default=Answer(totals={"person": 4}, events_real=False, note="no person is down: a yellow jacket lies on the lawn"),
    ).start()
    data = street_config(broker.port, source=str(segment))
    data["escalation"] = escalation_section(server, dataset={"dir": str(tmp_path / "escalated")})
    data["cameras"]["street"]["safety"] = [
        {"rule": "person_down", "zones": ["lawn"], "min_seconds": 0.5, "unreviewed_after_s": 3.0, "wide_ratio": None}
    ]
    data["cameras"]["street"]["escalation"] = {
        "max_per_hour": 5,
        "audit_every_s": None,
        "thresholds": {"grey_classes": ["Fall"], "stretch_s": 1.0, "cooldown_s": 600},
    }
    sub = subscriber_factory(broker.port, ["monitor/street/#"])
    try:
        monitor = run_monitor(write_config(tmp_path, data))
        assert sub.wait_for(lambda s: s.on("monitor/street/escalations"), timeout=10)
        time.sleep(0.5)
    finally:
        server.stop()
    assert server.problems == []
    assert len(server.received) == 1  # one stretch, then the cooldown: not every frame
    assert max(server.received[0].image.shape[:2]) == 512
    first = sub.json_on("monitor/street/escalations")[0]
    assert first["reason"] in ("weak_event", "grey_band") and first["outcome"] == "ok"
    falls = [e for e in first["evidence"] if e.get("class") == "Fall"]
    assert falls, first["evidence"]
    x1, y1, x2, y2 = falls[0]["box"]
    jx1, jy1, jx2, jy2 = JACKET_REGION
    assert jx1 <= x1 and x2 <= jx2 and jy1 <= y1 and y2 <= jy2
    assert 0.45 <= falls[0]["conf"] <= 0.53
    assert "Fall at [" in server.received[0].prompt
    assert first["model"]["totals"] == {"person": 4}
    assert first["detector"]["totals"]["person"] >= 1
    assert first["cost_estimated"] == pytest.approx(0.01)
    # the candidate person_down on the lawn was the event asked about, and the answer dismissed it
    verdicts = first["events"]
    assert [(v["rule"], v["real"]) for v in verdicts] == [("person_down", False)]
    assert "jacket" in verdicts[0]["note"]
    starts = [e for e in sub.json_on("monitor/street/events") if e.get("type") == "start" and e.get("rule") == "person_down"]
    assert starts == []  # without the review it would have started "unconfirmed" after 3 s of video
    assert value(monitor, "monitor_escalations_total", camera="street", reason=first["reason"], outcome="ok") == 1
    # counts payloads say where the counts come from
    counts = sub.json_on("monitor/street/counts")
    assert counts and all(c["source"] == "detector" for c in counts)
    # the learning loop kept the frame with the detector's boxes and the answer
    records = list((tmp_path / "escalated" / "street").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["answer"]["counts"]["_all"] == {"person": 4}
    assert any(record["class_names"][d["class_id"]] == "Fall" for d in record["detections"])


def test_budget_and_hourly_cap_hold_over_many_ambiguous_frames(broker, segment, tmp_path):
    server = FakeOpenAI(expect_long_side=512).start()
    data = street_config(broker.port, source=str(segment))
    data["models"]["person"]["imgsz"] = 320
    # 0.01 per call, no token prices: the budget is exactly 6 calls across both cameras
    data["escalation"] = escalation_section(server, daily_budget=0.06, queue_size=50)
    every_frame = {"audit_every_s": None, "thresholds": {"grey_margin": 1.0, "stretch_s": 0.0, "cooldown_s": 0.0}}
    data["cameras"]["street"]["escalation"] = {**every_frame, "max_per_hour": 2}
    data["cameras"]["street2"] = {**data["cameras"]["street"], "escalation": {**every_frame, "max_per_hour": 100}}
    try:
        monitor = run_monitor(write_config(tmp_path, data))
    finally:
        server.stop()
    assert server.problems == []
    calls = {cam: escalations(monitor, cam, "ok") for cam in ("street", "street2")}
    capped = escalations(monitor, "street", "hourly_cap")
    over_budget = sum(escalations(monitor, cam, "over_budget") for cam in calls)
    print(f"calls {calls}, hourly-capped {capped}, over budget {over_budget}")
    assert len(server.received) == sum(calls.values()) == 6
    assert calls["street"] <= 2 and capped >= 40  # ~48 ambiguous frames offered, 2 allowed
    assert over_budget >= 1
    assert value(monitor, "monitor_escalation_budget_remaining") == pytest.approx(0.0, abs=1e-9)
    assert sum(value(monitor, "monitor_escalation_cost_total", camera=cam) for cam in calls) == pytest.approx(0.06)


def test_video_keeps_its_frame_rate_while_the_server_hangs(broker, segment, tmp_path):
    server = FakeOpenAI(expect_long_side=512, default=Hang(60)).start()
    data = street_config(broker.port, source=str(segment), realtime=True, fps=4)
    data["models"]["person"]["imgsz"] = 320
    data["escalation"] = escalation_section(server, timeout_s=2.0, max_retries=0, queue_size=1)
    data["cameras"]["street"]["escalation"] = {
        "audit_every_s": None,
        "max_per_hour": 1000,
        "thresholds": {"grey_margin": 1.0, "stretch_s": 0.0, "cooldown_s": 0.0},
    }
    step_seconds: list[float] = []

    def time_the_escalation_step(monitor: Monitor) -> None:
        escalation = monitor.loops["street"].escalation
        step = escalation.step

        def timed(result, safety=None):
            started = time.perf_counter()
            try:
                return step(result, safety)
            finally:
                step_seconds.append(time.perf_counter() - started)

        escalation.step = timed

    started = time.monotonic()
    try:
        monitor = run_monitor(write_config(tmp_path, data), during=time_the_escalation_step)
    finally:
        server.stop()
    wall_s = time.monotonic() - started
    captured = value(monitor, "monitor_frames_total", camera="street", stage="captured")
    processed = value(monitor, "monitor_frames_total", camera="street", stage="processed")
    timeouts = escalations(monitor, "street", "timeout")
    dropped = escalations(monitor, "street", "dropped")
    print(
        f"captured {captured:.0f} processed {processed:.0f} frames (target 4 fps) in {wall_s:.1f} s while the server hung; "
        f"escalation step max {1000 * max(step_seconds):.1f} ms, total {1000 * sum(step_seconds):.0f} ms; "
        f"{timeouts:.0f} timeouts, {dropped:.0f} dropped"
    )
    assert timeouts >= 1 and dropped >= 1  # the server really held the worker past the timeout; the queue overflowed
    assert len(step_seconds) == processed >= 10  # every processed frame offered itself, none waited for an answer
    # the frame path's share of escalation work stays tiny while each model call blocks its worker for 2 s
    assert max(step_seconds) < 0.25
    assert sum(step_seconds) < 0.05 * wall_s
