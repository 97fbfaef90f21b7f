"""The topic contract as clients use it: one wildcard filter for the bare integers (nothing else matches it, with a
prefix that holds ``/`` too), the legacy layout behind its switch, a zone's own class list, the active-events
gauge read while an event is active, and SIGTERM ending active events as ``shutdown`` (not ``stream_end``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Broker, cut_clip, free_port, street_config, Subscriber, write_config
from monitor.config import ConfigError, MqttConfig, parse_config
from monitor.frame import CapturedFrame, FrameResult
from monitor.publishing.topics import CountsTopics, bare_filter, bare_topic, status_topic, warn_if_legacy_layout

PREFIX = "site/cams"  # a prefix with a slash: the filter must not depend on its depth
RULE = "path_busy"


def frame_result(counts: dict) -> FrameResult:
    frame = CapturedFrame("street", 1, np.zeros((4, 4, 3), np.uint8), 0.0, 0.0)
    result = FrameResult(frame, ["person"])
    result.counts = counts
    return result


COUNTS = {"lot": {"person": 1}, "path": {"person": 2}, "_all": {"person": 3}}


@pytest.mark.parametrize("prefix", ["monitor", "site/cams"])
def test_the_bare_filter_selects_every_bare_value_and_nothing_else(prefix):
    config = MqttConfig(prefix=prefix)
    messages = CountsTopics(config, "street").messages(frame_result(COUNTS))
    bare = [m.topic for m in messages if not m.topic.endswith("/counts")]
    assert sorted(bare) == sorted(f"{prefix}/street/count/{z}/person" for z in ("lot", "path", "_total"))
    others = [f"{prefix}/street/counts", f"{prefix}/street/events", f"{prefix}/street/events/active",
              f"{prefix}/street/escalations", status_topic(prefix), status_topic(prefix, "street")]
    assert all(mqtt.topic_matches_sub(bare_filter(prefix), topic) for topic in bare)
    assert not [topic for topic in others if mqtt.topic_matches_sub(bare_filter(prefix), topic)]


def test_the_legacy_layout_stays_behind_its_switch_and_logs_a_deprecation(caplog):
    config = MqttConfig(prefix="monitor", bare_layout="legacy")
    topics = sorted(m.topic for m in CountsTopics(config, "street").messages(frame_result(COUNTS))[1:])
    assert topics == ["monitor/street/lot/person", "monitor/street/path/person", "monitor/street/totals/person"]
    assert bare_topic(MqttConfig(), "street", "_all", "person") == "monitor/street/count/_total/person"
    warn_if_legacy_layout(config)
    assert "mqtt.bare_layout: legacy is deprecated" in caplog.text and "monitor/+/count/+/+" in caplog.text
    caplog.clear()
    warn_if_legacy_layout(MqttConfig())
    assert caplog.text == ""


def test_a_zone_cannot_take_the_totals_name():
    data = street_config(1883)
    data["cameras"]["street"]["zones"]["_total"] = data["cameras"]["street"]["zones"]["lot"]
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert any(p.startswith("cameras.street.zones._total: '_total' is reserved") for p in error.value.problems)


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
