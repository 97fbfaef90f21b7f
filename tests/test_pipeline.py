"""End to end: `monitor run` as a user runs it, with the real model on a segment of the real clip, a real
Mosquitto, real paho subscribers and a real scrape of the Prometheus endpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Broker, cut_clip, free_port, street_config, Subscriber, write_config
from monitor import __version__

pytestmark = pytest.mark.slow

SEGMENT_START, SEGMENT_FRAMES = 640, 50  # people on the path and one on the lawn
ZONES = ("lot", "path", "lawn")
COUNTS = "monitor/street/counts"


@pytest.fixture(scope="module")
def segment(tmp_path_factory, clip) -> Path:
    return cut_clip(clip, tmp_path_factory.mktemp("segment") / "street-640.avi", SEGMENT_START, SEGMENT_FRAMES)


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("broker")).start()
    yield broker
    broker.stop()


class MonitorProcess:
    """`python -m monitor run --config FILE` in its own folder, its log in a file."""

    def __init__(self, folder: Path, config: dict):
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "monitor.log"
        self.config_path = write_config(folder, config)
        self.metrics_port = config["metrics"]["port"] if config["metrics"]["enabled"] else None
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "YOLO_OFFLINE": "1"},
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"monitor run did not exit in {timeout}s:\n{self.log[-3000:]}") from None

    def scrape(self) -> dict[tuple[str, tuple], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def metric(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def seqs(subscriber: Subscriber) -> list[int]:
    return [message["seq"] for message in subscriber.json_on(COUNTS)]


def assert_bare_topics_match_json(subscriber: Subscriber, counts: dict) -> None:
    for zone, per_label in counts["zones"].items():
        for label, n in per_label.items():
            assert subscriber.on(f"monitor/street/count/{zone}/{label}")[-1] == str(n), (zone, label)
    for label, n in counts["totals"].items():
        assert subscriber.on(f"monitor/street/count/_total/{label}")[-1] == str(n), label


def wait_for_exit_after(signum: int, run: MonitorProcess) -> int:
    run.process.send_signal(signum)
    return run.wait(60)


@pytest.fixture(scope="module")
def whole_segment(tmp_path_factory, segment, module_broker):
    """Run 1: the segment as fast as possible (realtime: false); the monitor stops by itself at its end."""
    subscriber = Subscriber(module_broker.port, ["monitor/#"])
    config = street_config(module_broker.port, source=str(segment))
    run = MonitorProcess(tmp_path_factory.mktemp("run-whole"), config)
    code = run.wait(300)
    time.sleep(0.5)
    yield run, code, subscriber
    subscriber.close()


def test_the_monitor_stops_by_itself_after_the_clip(whole_segment):
    run, code, _ = whole_segment
    assert code == 0, run.log[-3000:]
    assert "all cameras finished" in run.log


def test_counts_arrive_with_contiguous_seq(whole_segment):
    _, _, subscriber = whole_segment
    messages = subscriber.json_on(COUNTS)
    assert len(messages) >= 3  # the counts changed several times over 50 frames of a busy street
    assert seqs(subscriber) == list(range(1, len(messages) + 1))
    for message in messages:
        assert message["camera"] == "street"
        assert message["ts"].endswith("Z") and "T" in message["ts"]
        assert set(message["zones"]) == set(ZONES)
        assert all(set(per_label) == {"person"} for per_label in message["zones"].values())
        # each count is smoothed on its own (a median), so zones may add up to more than the total, but no
        # zone can exceed it: a zone's raw count never does, and a running median keeps that order
        assert all(message["zones"][z]["person"] <= message["totals"]["person"] for z in ZONES)
    assert max(m["totals"]["person"] for m in messages) >= 5
    assert max(m["zones"]["lawn"]["person"] for m in messages) >= 1  # the woman walking on the lawn
    assert messages[-1]["lines"]["crossing"].keys() == {"in", "out"}


def test_bare_integer_topics_match_the_json(whole_segment):
    _, _, subscriber = whole_segment
    assert_bare_topics_match_json(subscriber, subscriber.json_on(COUNTS)[-1])


def test_status_goes_online_then_offline(whole_segment):
    _, _, subscriber = whole_segment
    assert subscriber.on("monitor/status") == ["online", "offline"]
    assert subscriber.on("monitor/street/status") == ["online", "offline"]
    topics = [topic for topic, _, _ in subscriber.messages]
    assert topics.index("monitor/status") < topics.index(COUNTS)


def test_a_late_subscriber_gets_the_retained_values(whole_segment, module_broker):
    _, _, subscriber = whole_segment
    last = subscriber.json_on(COUNTS)[-1]
    late = Subscriber(module_broker.port, ["monitor/#"])
    try:
        assert late.wait_for(lambda s: s.on(COUNTS) and s.on("monitor/status") and s.on("monitor/street/count/_total/person"), 10)
        assert late.json_on(COUNTS) == [last]
        assert late.on("monitor/status") == ["offline"] and late.on("monitor/street/status") == ["offline"]
        assert all(retained for _, _, retained in late.messages)
        assert_bare_topics_match_json(late, last)
    finally:
        late.close()


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, segment, module_broker):
    """Run 2: the segment played like a camera, looping; scraped while it runs, then stopped with SIGTERM."""
    subscriber = Subscriber(module_broker.port, ["monitor/live/#"])
    config = street_config(module_broker.port, metrics_port=free_port(), source=str(segment), realtime=True, loop=True)
    config["mqtt"].update(prefix="monitor/live", heartbeat_s=1)
    config["logging"]["interval_s"] = 1
    run = MonitorProcess(tmp_path_factory.mktemp("run-live"), config)
    try:
        assert subscriber.wait_for(lambda s: len(s.on("monitor/live/street/counts")) >= 3, 180), run.log[-3000:]
        samples = run.scrape()
        later = scrape_until_processed_grows(run, samples, 120)
        code = wait_for_exit_after(signal.SIGTERM, run)
        time.sleep(0.5)
        yield run, samples, later, code, subscriber
    finally:
        if run.process.poll() is None:
            run.process.kill()
        subscriber.close()


def scrape_until_processed_grows(run: MonitorProcess, samples: dict, timeout: float) -> dict:
    processed = metric(samples, "monitor_frames_total", camera="street", stage="processed")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        later = run.scrape()
        if metric(later, "monitor_frames_total", camera="street", stage="processed") > processed:
            return later
    return later


def test_prometheus_metrics_during_a_run(live_run):
    _, samples, later, _, _ = live_run
    frames = {stage: metric(samples, "monitor_frames_total", camera="street", stage=stage) for stage in ("captured", "processed", "dropped")}
    assert frames["captured"] >= frames["processed"] > 0
    # every captured frame was processed, replaced by a newer one (dropped), or was still waiting or in work
    assert 0 <= frames["captured"] - frames["processed"] - frames["dropped"] <= 2, frames
    assert metric(later, "monitor_frames_total", camera="street", stage="processed") > frames["processed"]
    assert metric(samples, "monitor_inference_seconds_count", model="person") > 0
    assert 0 < metric(samples, "monitor_inference_seconds_sum", model="person") / metric(samples, "monitor_inference_seconds_count", model="person") < 5
    for zone in (*ZONES, "_all"):
        assert metric(samples, "monitor_object_count", camera="street", zone=zone, **{"class": "person"}) is not None, zone
    people = metric(samples, "monitor_object_count", camera="street", zone="_all", **{"class": "person"})
    assert 1 <= people <= 15
    assert all(metric(samples, "monitor_object_count", camera="street", zone=z, **{"class": "person"}) <= people for z in ZONES)
    assert metric(samples, "monitor_camera_up", camera="street") == 1
    assert metric(samples, "monitor_camera_reconnects_total", camera="street") == 0
    assert metric(samples, "monitor_mqtt_connected") == 1
    assert metric(samples, "monitor_mqtt_messages_total", result="sent") > 0
    assert metric(samples, "monitor_build_info", version=__version__, device="cpu") == 1


def test_the_default_engine_on_a_cpu_is_openvino_logged_once_and_exported(live_run):
    run, samples, _, _, _ = live_run
    assert metric(samples, "monitor_model_info", model="person", engine="openvino", device="cpu", reason="auto_cpu_openvino") == 1
    chosen = [line for line in run.log.splitlines() if "model person: engine" in line]
    assert len(chosen) == 1 and "engine openvino on cpu (auto: a CPU, and the OpenVINO runtime is installed)" in chosen[0]


def test_sigterm_stops_cleanly_and_publishes_offline(live_run):
    run, _, _, code, subscriber = live_run
    assert code == 0, run.log[-3000:]
    assert subscriber.on("monitor/live/status") == ["online", "offline"]
    assert seqs_on(subscriber, "monitor/live/street/counts") == list(range(1, len(subscriber.on("monitor/live/street/counts")) + 1))
    assert "stopping" in run.log
    assert "Traceback" not in run.log


def test_run_logs_one_line_per_camera_per_interval(live_run):
    run, _, _, _, _ = live_run
    lines = [line for line in run.log.splitlines() if re.search(r"camera street: [\d.]+ fps, lot=\{'person': \d+\} path=", line)]
    assert lines, run.log[-3000:]


def seqs_on(subscriber: Subscriber, topic: str) -> list[int]:
    return [message["seq"] for message in subscriber.json_on(topic)]


def test_sigint_stops_cleanly_and_publishes_offline(tmp_path, segment, module_broker):
    subscriber = Subscriber(module_broker.port, ["monitor/int/#"])
    config = street_config(module_broker.port, source=str(segment), realtime=True, loop=True)
    config["mqtt"]["prefix"] = "monitor/int"
    run = MonitorProcess(tmp_path / "run-sigint", config)
    try:
        assert subscriber.wait_for(lambda s: s.on("monitor/int/street/counts"), 180), run.log[-3000:]
        code = wait_for_exit_after(signal.SIGINT, run)
        assert subscriber.wait_for(lambda s: s.on("monitor/int/status")[-1:] == ["offline"], 5)
    finally:
        if run.process.poll() is None:
            run.process.kill()
        subscriber.close()
    assert code == 0, run.log[-3000:]
    assert subscriber.on("monitor/int/status") == ["online", "offline"]
    assert "KeyboardInterrupt" not in run.log
