"""A camera's count messages: the retained counts JSON with its seq, and the bare integer topics."""

from __future__ import annotations

import json

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from conftest import street_config

from monitor.common import ALL_ZONES
from monitor.config import ConfigError, MqttConfig, parse_config
from monitor.frame import CapturedFrame, FrameResult
from monitor.publishing import CountsTopics, Message
from monitor.publishing.sequence import Sequence
from monitor.publishing.topics import bare_filter, bare_topic, status_topic, warn_if_legacy_layout

WALL = 1_700_000_000.25


def result(counts: dict, lines: dict | None = None, wall: float = WALL) -> FrameResult:
    frame = CapturedFrame("street", 1, np.zeros((2, 2, 3), np.uint8), wall_time=wall, mono_time=9.0)
    return FrameResult(frame, ["person"], counts=counts, line_totals=lines or {})


def counts_of(messages: list[Message]) -> dict:
    (counts,) = [m for m in messages if m.topic.endswith("/counts")]
    return json.loads(counts.payload)


def bare(messages: list[Message]) -> dict[str, str]:
    return {m.topic: m.payload for m in messages if not m.topic.endswith("/counts")}


STREET = {"lot": {"person": 1}, "path": {"person": 2}, ALL_ZONES: {"person": 3}}


def test_seq_grows_by_one_per_message_from_the_given_start():
    topics = CountsTopics(MqttConfig(), "street", Sequence("street/counts", 1_700_000_000_000, 41))
    pairs = [(c["epoch"], c["seq"]) for c in (counts_of(topics.messages(result(STREET))) for _ in range(3))]
    assert pairs == [(1_700_000_000_000, n) for n in (42, 43, 44)] and topics.sequence.current() == (1_700_000_000_000, 44)
    assert counts_of(CountsTopics(MqttConfig(), "street").messages(result(STREET)))["seq"] == 1


def test_counts_payload_keys_and_values():
    (counts, *_) = CountsTopics(MqttConfig(prefix="site/a"), "street").messages(result(STREET))
    assert counts.topic == "site/a/street/counts" and counts.retain and counts.qos == 1
    payload = json.loads(counts.payload)
    assert list(payload) == ["camera", "ts", "epoch", "seq", "zones", "totals"]
    assert payload["camera"] == "street"
    assert payload["ts"] == "2023-11-14T22:13:20.250Z"  # the frame's wall time, not the time of sending
    assert payload["zones"] == {"lot": {"person": 1}, "path": {"person": 2}}
    assert payload["totals"] == {"person": 3}


def test_lines_only_when_the_camera_has_line_totals():
    topics = CountsTopics(MqttConfig(), "street")
    assert "lines" not in counts_of(topics.messages(result(STREET)))
    with_lines = counts_of(topics.messages(result(STREET, {"door": {"in": 4, "out": 1}})))
    assert with_lines["lines"] == {"door": {"in": 4, "out": 1}}


def test_extra_fields_are_added_to_the_payload():
    payload = counts_of(CountsTopics(MqttConfig(), "street").messages(result(STREET), extra={"source": "llm"}))
    assert payload["source"] == "llm" and payload["totals"] == {"person": 3}


def test_bare_topics_per_zone_label_and_totals():
    messages = CountsTopics(MqttConfig(qos=0), "street").messages(result(STREET))
    assert bare(messages) == {"monitor/street/count/lot/person": "1", "monitor/street/count/path/person": "2",
                              "monitor/street/count/_total/person": "3"}
    assert all(m.retain and m.qos == 0 for m in messages)


def test_bare_messages_only_for_changed_values_unless_forced():
    topics = CountsTopics(MqttConfig(), "street")
    topics.messages(result(STREET))
    assert bare(topics.messages(result(STREET))) == {}
    moved = {"lot": {"person": 0}, "path": {"person": 3}, ALL_ZONES: {"person": 3}}
    assert bare(topics.messages(result(moved))) == {"monitor/street/count/lot/person": "0", "monitor/street/count/path/person": "3"}
    forced = bare(topics.messages(result(moved), force_bare=True))
    assert forced == {"monitor/street/count/lot/person": "0", "monitor/street/count/path/person": "3",
                      "monitor/street/count/_total/person": "3"}


def test_bare_topics_off_sends_only_the_counts_json():
    messages = CountsTopics(MqttConfig(bare_topics=False), "street").messages(result(STREET))
    assert [m.topic for m in messages] == ["monitor/street/counts"]


COUNTS = {"lot": {"person": 1}, "path": {"person": 2}, "_all": {"person": 3}}


@pytest.mark.parametrize("prefix", ["monitor", "site/cams"])
def test_the_bare_filter_selects_every_bare_value_and_nothing_else(prefix):
    config = MqttConfig(prefix=prefix)
    messages = CountsTopics(config, "street").messages(result(COUNTS))
    bare = [m.topic for m in messages if not m.topic.endswith("/counts")]
    assert sorted(bare) == sorted(f"{prefix}/street/count/{z}/person" for z in ("lot", "path", "_total"))
    others = [f"{prefix}/street/counts", f"{prefix}/street/events", f"{prefix}/street/events/active",
              f"{prefix}/street/escalations", status_topic(prefix), status_topic(prefix, "street")]
    assert all(mqtt.topic_matches_sub(bare_filter(prefix), topic) for topic in bare)
    assert not [topic for topic in others if mqtt.topic_matches_sub(bare_filter(prefix), topic)]


def test_the_legacy_layout_stays_behind_its_switch_and_logs_a_deprecation(caplog):
    config = MqttConfig(prefix="monitor", bare_layout="legacy")
    topics = sorted(m.topic for m in CountsTopics(config, "street").messages(result(COUNTS))[1:])
    assert topics == ["monitor/street/lot/person", "monitor/street/path/person", "monitor/street/totals/person"]
    assert bare_topic(MqttConfig(), "street", "_all", "person") == "monitor/street/count/_total/person"
    warn_if_legacy_layout(config)
    assert "mqtt.bare_layout: legacy is deprecated" in caplog.text and "monitor/+/count/+/+" in caplog.text
    caplog.clear()
    warn_if_legacy_layout(MqttConfig())
    assert caplog.text == ""


def test_a_zone_cannot_take_the_totals_name():
    data = street_config(1883)  # the bundled config.yaml
    data["cameras"]["street"]["zones"]["_total"] = data["cameras"]["street"]["zones"]["lot"]
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert any(p.startswith("cameras.street.zones._total: '_total' is reserved") for p in error.value.problems)
