"""The contract as clients use it, on one real `monitor run`: the one wildcard filter of the bare integers receives
only integers while events are active (with a prefix that holds ``/``), a zone counts only its own classes, the
active-events gauge is read while an event is active, and SIGTERM ends active events as ``shutdown`` (not
``stream_end``). The topic names themselves: tests/test_publishing_topics.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Broker, cut_clip, free_port, street_config, Subscriber, write_config
from monitor.publishing.topics import bare_filter

PREFIX = "site/cams"  # a prefix with a slash: the filter must not depend on its depth
RULE = "path_busy"


# --- one real run: `monitor run` with a safety event active, stopped by SIGTERM ------------------------


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory, clip, person_model):
    """Both raw classes counted (no aliases), the lot counting only Normal; an occupancy event on the path (people
    walk there all through the segment) active when SIGTERM arrives. Scraped while the event is active."""
    folder = tmp_path_factory.mktemp("sigterm")
    segment = cut_clip(clip, folder / "segment.avi", 0, 40)
    broker = Broker(folder).start()
    everything = Subscriber(broker.port, [f"{PREFIX}/#"])
    bare = Subscriber(broker.port, [bare_filter(PREFIX)])
    metrics_port = free_port()
    data = street_config(broker.port, metrics_port, source=str(segment), realtime=True, loop=True, fps=5,
                         classes=["Normal", "Fall"])
    data["cameras"]["street"]["zones"]["lot"]["classes"] = ["Normal"]
    data["cameras"]["street"]["safety"] = [
        {"name": RULE, "rule": "occupancy", "zones": ["path"], "above": 0, "min_seconds": 0, "clear_seconds": 30}
    ]
    data["models"]["person"].update(aliases={}, imgsz=320)
    data["mqtt"]["prefix"] = PREFIX
    data["state_dir"] = str(folder / "state")
    config_path = write_config(folder, data)
    log_path = folder / "monitor.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config_path)],
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "YOLO_OFFLINE": "1"})
    try:
        started = lambda s: any(e["type"] == "start" for e in s.json_on(f"{PREFIX}/street/events"))
        assert everything.wait_for(started, 180), log_path.read_text()[-3000:]
        assert everything.wait_for(lambda s: len(s.on(f"{PREFIX}/street/counts")) >= 3, 120)
        active = everything.json_on(f"{PREFIX}/street/events/active")[-1]
        scraped = scrape(metrics_port)
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        yield {"code": code, "log": log_path.read_text(), "all": everything, "bare": bare, "active": active, "metrics": scraped}
    finally:
        if process.poll() is None:
            process.kill()
        everything.close()
        bare.close()
        broker.stop()


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_sigterm_ends_active_events_as_shutdown(sigterm_run):
    assert sigterm_run["code"] == 0, sigterm_run["log"][-3000:]
    events = sigterm_run["all"].json_on(f"{PREFIX}/street/events")
    ends = [e for e in events if e["type"] == "end"]
    assert ends and ends[-1]["end_reason"] == "shutdown", [(e["type"], e["end_reason"]) for e in events]
    assert all(e["end_reason"] == "shutdown" for e in ends)  # clear_seconds 30: nothing ended before the stop
    assert "source finished" not in sigterm_run["log"]
    assert sigterm_run["all"].json_on(f"{PREFIX}/street/events/active")[-1]["events"] == []


def test_the_active_events_gauge_is_read_while_an_event_is_active(sigterm_run):
    assert sigterm_run["active"]["count"] == 1  # one occupancy event per zone
    assert sigterm_run["metrics"][("monitor_safety_events_active", (("camera", "street"), ("rule", RULE)))] == 1
    assert sigterm_run["metrics"][("monitor_safety_events_total", (("camera", "street"), ("rule", RULE)))] >= 1


def test_a_zone_counts_only_its_own_classes(sigterm_run):
    counts = sigterm_run["all"].json_on(f"{PREFIX}/street/counts")
    assert counts
    for payload in counts:
        assert set(payload["zones"]["lot"]) == {"Normal"}
        assert set(payload["zones"]["path"]) == set(payload["zones"]["lawn"]) == {"Normal", "Fall"}
        assert set(payload["totals"]) == {"Normal", "Fall"}
    topics = {topic for topic, _, _ in sigterm_run["bare"].messages}
    assert f"{PREFIX}/street/count/lot/Normal" in topics and f"{PREFIX}/street/count/lot/Fall" not in topics


def test_the_bare_filter_received_only_integers_while_events_were_active(sigterm_run):
    received = sigterm_run["bare"].messages
    assert len(received) >= 7  # 3 zones (lot: one class) + 2 totals, at least once
    not_integers = [(topic, payload) for topic, payload, _ in received if not payload.isdigit()]
    assert not_integers == []
    assert any(json.loads(p)["count"] >= 1 for p in sigterm_run["all"].on(f"{PREFIX}/street/events/active"))


def test_per_camera_status_goes_online_then_offline(sigterm_run):
    assert sigterm_run["all"].on(f"{PREFIX}/street/status") == ["online", "offline"]
    assert sigterm_run["all"].on(f"{PREFIX}/status") == ["online", "offline"]
