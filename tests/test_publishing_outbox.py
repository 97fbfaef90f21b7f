"""The durable outbox: storage, size policy, seq persistence, and store-and-forward through a real Mosquitto."""

from __future__ import annotations

import json
import time

import pytest
from conftest import Broker
from publishing_support import RecordingEvents, counts_payload

from monitor.config import MqttConfig, OutboxConfig
from monitor.publishing.outbox import COUNT, EVENT, STATE, Outbox, classify
from monitor.publishing import Message, Publisher


def test_classify_by_topic():
    assert classify("monitor/street/counts", True) == COUNT
    assert classify("monitor/street/lot/person", True) == STATE
    assert classify("monitor/street/events", False) == EVENT
    assert classify("monitor/street/events/fall", True) == EVENT
    assert classify("monitor/street/anything", False) == EVENT


def test_messages_survive_reopening_in_order(tmp_path):
    path = tmp_path / "outbox.sqlite"
    stored_from = time.time()
    box = Outbox(path)
    ids = [box.add("monitor/cam/counts", counts_payload("cam", seq), 1, True) for seq in range(1, 6)]
    box.add("monitor/cam/events", '{"kind":"fall"}', 1, False)
    box.close()

    reopened = Outbox(path)
    pending = reopened.pending()
    assert [m.id for m in pending[:5]] == ids
    assert [json.loads(m.payload)["seq"] for m in pending[:5]] == [1, 2, 3, 4, 5]
    assert pending[5].topic == "monitor/cam/events" and pending[5].retain is False
    assert reopened.last_seq("cam") == 5 and reopened.last_seq("other") == 0
    assert reopened.size() == 6
    assert stored_from + 60 - time.time() <= reopened.oldest_age(now=stored_from + 60) <= 60  # the first row's own time
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ack_removes_and_seq_is_kept(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    ids = [box.add("p/cam/counts", counts_payload("cam", seq), 1, True) for seq in (7, 8)]
    box.ack(ids)
    assert box.size() == 0 and box.pending() == [] and box.oldest_age() == 0.0
    assert box.last_seq("cam") == 8  # seq keeps growing after the messages are gone


def test_state_keeps_only_the_latest_per_topic(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    for n in range(5):
        box.add("p/cam/lot/person", str(n), 1, True)
    box.add("p/cam/path/person", "9", 1, True)
    assert [(m.topic, m.payload) for m in box.pending()] == [("p/cam/lot/person", "4"), ("p/cam/path/person", "9")]


def test_count_history_is_bounded_per_topic(tmp_path):
    events = RecordingEvents()
    box = Outbox(tmp_path / "o.sqlite", count_history=3, events=events)
    for seq in range(1, 11):
        box.add("p/a/counts", counts_payload("a", seq), 1, True)
    box.add("p/b/counts", counts_payload("b", 1), 1, True)
    seqs = [(m.topic, json.loads(m.payload)["seq"]) for m in box.pending()]
    assert seqs == [("p/a/counts", 8), ("p/a/counts", 9), ("p/a/counts", 10), ("p/b/counts", 1)]
    assert events.dropped == {COUNT: 7}


def test_hard_limit_drops_count_history_before_events_then_alarms(tmp_path):
    events = RecordingEvents()
    box = Outbox(tmp_path / "o.sqlite", max_messages=100, count_history=1000, events=events)
    for i in range(60):
        box.add("p/cam/events", json.dumps({"n": i}), 1, False)
    for seq in range(1, 61):
        box.add("p/cam/counts", counts_payload("cam", seq), 1, True)
    pending = box.pending(limit=1000)
    assert len(pending) == 100
    assert sum(m.topic.endswith("/events") for m in pending) == 60  # no event lost yet
    assert events.dropped == {COUNT: 20} and events.full == []
    # only events and the latest counts left: now the oldest events go, with the alarm
    for i in range(60, 120):
        box.add("p/cam/events", json.dumps({"n": i}), 1, False)
    pending = box.pending(limit=1000)
    event_ns = [json.loads(m.payload)["n"] for m in pending if m.topic.endswith("/events")]
    assert len(pending) == 100 and event_ns[-1] == 119 and event_ns == sorted(event_ns)
    assert json.loads([m for m in pending if m.topic.endswith("/counts")][-1].payload)["seq"] == 60  # latest count kept
    assert events.dropped[EVENT] > 0 and events.full == [True]
    box.ack([m.id for m in pending[:50]])
    assert events.full == [True, False]


def test_a_failing_database_reports_and_does_not_raise(tmp_path):
    events = RecordingEvents()
    box = Outbox(tmp_path / "o.sqlite", events=events)
    box._db.close()  # stands for a disk that failed under it
    assert box.add("p/cam/counts", counts_payload("cam", 1), 1, True) is None
    assert events.errors == 1 and events.full == [True]


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    from monitor.publishing.outbox import OutboxError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        Outbox(blocker / "sub" / "o.sqlite")


# --- with a real broker ---------------------------------------------------------------------


def mqtt_config(port: int, path, client_id="outbox-test") -> MqttConfig:
    return MqttConfig(port=port, client_id=client_id, outbox=OutboxConfig(path=path, inflight=20))


def test_messages_published_while_the_broker_is_down_arrive_in_order(tmp_path, subscriber_factory):
    broker = Broker(tmp_path)  # not started yet: the monitor comes up before its broker
    publisher = Publisher(mqtt_config(broker.port, tmp_path / "o.sqlite"))
    publisher.start()
    try:
        for seq in range(1, 51):
            publisher.publish(Message("monitor/cam/counts", counts_payload("cam", seq), 1, True))
        time.sleep(0.5)
        assert publisher.outbox.size() == 50
        broker.start()
        sub = subscriber_factory(broker.port, ["monitor/cam/counts"])
        assert publisher.connected.wait(15)
        for seq in range(51, 61):
            publisher.publish(Message("monitor/cam/counts", counts_payload("cam", seq), 1, True))
        assert sub.wait_for(lambda s: 60 in [m["seq"] for m in s.json_on("monitor/cam/counts")], 20)
        seqs = [m["seq"] for m in sub.json_on("monitor/cam/counts")]
        # a subscriber that joins late gets the retained newest first; everything after in order
        assert seqs[-10:] == list(range(51, 61))
        assert time.sleep(1.0) or publisher.outbox.size() == 0
    finally:
        publisher.stop()
        broker.stop()


def test_unacknowledged_messages_are_resent_by_the_next_process(tmp_path, broker, subscriber_factory):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)  # what a killed monitor left behind
    for seq in range(1, 21):
        box.add("monitor/cam/counts", counts_payload("cam", seq), 1, True)
    box.close()
    sub = subscriber_factory(broker.port, ["monitor/cam/counts"])
    time.sleep(0.3)
    publisher = Publisher(mqtt_config(broker.port, path))
    assert publisher.last_seq("cam") == 20
    publisher.start()
    try:
        assert sub.wait_for(lambda s: len(s.on("monitor/cam/counts")) >= 20, 15)
        assert [m["seq"] for m in sub.json_on("monitor/cam/counts")] == list(range(1, 21))
        assert sub.wait_for(lambda s: publisher.outbox.size() == 0, 5)
    finally:
        publisher.stop()


def test_add_many_is_one_transaction_in_order(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    batch = [Message("p/cam/counts", counts_payload("cam", 1), 1, True), Message("p/cam/lot/person", "3", 1, True),
             Message("p/cam/events", "{}", 1, False, kind=EVENT)]
    assert box.add_many(batch)
    assert [m.topic for m in box.pending()] == ["p/cam/counts", "p/cam/lot/person", "p/cam/events"]
    assert box.last_seq("cam") == 1 and box.size() == 3
    box._db.close()
    assert box.add_many(batch) is False
