"""Escalation benchmark: what escalation costs the frame path, and a round trip to a loopback OpenAI-compatible server.

    python -m bench.escalation --frames 300

Steps ``CameraEscalation.step`` on a real street frame (768x576) with an unsure ``Fall`` box (the jacket), every
frame ambiguous (stretch 0, cooldown 0, so each frame is offered), against tests/fake_openai.py answering at
once, then hanging. Prints a table and writes bench/results/escalation-latest.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2

from bench.report import write_results
from bench.run import ROOT, percentile
from monitor.metrics import Metrics
from tests.fake_openai import Answer, FakeOpenAI, Hang


def step_times(server: FakeOpenAI, image, frames: int, timeout_s: float) -> tuple[list[float], Metrics]:
    from tests.test_escalation import JACKET_DETECTIONS, PEOPLE, app_config, camera_escalation, frame_result

    metrics = Metrics()
    app = app_config(
        server,
        escalation={"timeout_s": timeout_s, "max_retries": 0, "daily_budget": 1000.0},
        max_per_hour=100000,
        thresholds={"stretch_s": 0.0, "cooldown_s": 0.0},
    )
    escalation, service = camera_escalation(app, metrics)
    service.start()
    times = []
    try:
        for i in range(frames):
            result = frame_result(image, index=i, detections=JACKET_DETECTIONS, objects=PEOPLE)
            started = time.perf_counter()
            escalation.step(result)
            times.append(time.perf_counter() - started)
            time.sleep(0.01)
    finally:
        service.stop(timeout=1.0)
    return times, metrics


def summary(times: list[float]) -> dict:
    return {
        "mean_ms": round(1000 * statistics.mean(times), 3),
        "p50_ms": round(1000 * percentile(times, 50), 3),
        "p99_ms": round(1000 * percentile(times, 99), 3),
        "max_ms": round(1000 * max(times), 3),
    }


def latency(metrics: Metrics) -> dict:
    total = metrics.registry.get_sample_value("monitor_escalation_seconds_sum", {"camera": "street"}) or 0.0
    count = metrics.registry.get_sample_value("monitor_escalation_seconds_count", {"camera": "street"}) or 0.0
    return {"calls": int(count), "mean_call_ms": round(1000 * total / count, 1) if count else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    capture = cv2.VideoCapture(str(ROOT / "data" / "vtest.avi"))
    ok, image = capture.read()
    capture.release()
    assert ok, "data/vtest.avi missing: run scripts/setup.sh"
    results = {}
    for name, action in (("answering", Answer(totals={"person": 3})), ("hanging", Hang(3600))):
        server = FakeOpenAI(expect_long_side=512, default=action).start()
        try:
            times, metrics = step_times(server, image, args.frames, timeout_s=2.0)
        finally:
            server.stop()
        results[name] = {**summary(times), **latency(metrics), "server_problems": len(server.problems)}
    results["jpeg_bytes_512"] = len(cv2.imencode(".jpg", cv2.resize(image, (512, 384)), [cv2.IMWRITE_JPEG_QUALITY, 85])[1])
    print(f"{'server':<10} {'step mean':>10} {'p99':>8} {'max':>8}  calls  mean call")
    for name in ("answering", "hanging"):
        r = results[name]
        print(f"{name:<10} {r['mean_ms']:>8.2f}ms {r['p99_ms']:>6.2f}ms {r['max_ms']:>6.2f}ms  {r['calls']:>5}  {r['mean_call_ms']} ms")
    write_results("escalation-latest", {"frames": args.frames, **results})


if __name__ == "__main__":
    main()
