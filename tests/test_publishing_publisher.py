"""The publisher against a real Mosquitto: order, no status of its own, the bounded in-memory queue, errors."""

from __future__ import annotations

import json

import pytest
from conftest import Broker, wait_until
from publishing_support import RecordingEvents, counts_payload

from monitor.config import ConfigError, MqttConfig, OutboxConfig
from monitor.publishing import Message, Publisher


def config(port: int, tmp_path=None, **settings) -> MqttConfig:
    outbox = OutboxConfig(path=tmp_path / "outbox.sqlite") if tmp_path else OutboxConfig(enabled=False)
    return MqttConfig(port=port, client_id=f"publisher-test-{port}", outbox=outbox, **settings)


def started(config: MqttConfig, events=None) -> Publisher:
    publisher = Publisher(config, events)
    publisher.start()
    assert publisher.connected.wait(15)
    return publisher


@pytest.mark.parametrize("durable", [True, False], ids=["outbox", "queue"])
def test_qos1_messages_arrive_in_order(broker, subscriber_factory, tmp_path, durable):
    sub = subscriber_factory(broker.port, ["monitor/cam/counts"])
    assert sub.subscribed.wait(10)
    publisher = started(config(broker.port, tmp_path if durable else None))
    try:
        for seq in range(1, 101):
            publisher.publish(Message("monitor/cam/counts", counts_payload("cam", seq), 1, False))
        assert sub.wait_for(lambda s: len(s.on("monitor/cam/counts")) >= 100, 20)
    finally:
        publisher.stop()
    assert [m["seq"] for m in sub.json_on("monitor/cam/counts")] == list(range(1, 101))
    assert (publisher.outbox is not None) is durable


def test_the_publisher_leaves_the_status_topics_to_the_availability_connections(broker, subscriber_factory):
    """A reload replaces the publisher: were status its job, every reload would publish offline then online."""
    sub = subscriber_factory(broker.port, ["monitor/#"])
    assert sub.subscribed.wait(10)
    publisher = started(config(broker.port))
    try:
        publisher.publish(Message("monitor/cam/counts", counts_payload("cam", 1), 1, True))
        assert sub.wait_for(lambda s: s.on("monitor/cam/counts"), 10)
    finally:
        publisher.stop()
    assert [topic for topic, _, _ in sub.messages] == ["monitor/cam/counts"]


def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path, subscriber_factory):
    events = RecordingEvents()
    broker = Broker(tmp_path)  # down until the queue has gone to paho, which keeps QoS 1 messages until it connects
    publisher = Publisher(config(broker.port, queue_size=10), events)
    for n in range(15):  # not started: nothing drains the queue yet
        publisher.publish(Message(f"monitor/cam/n/{n}", str(n), 1, True))
    assert events.messages == {"dropped": 5}
    publisher.start()
    try:
        assert wait_until(lambda: publisher._queue.empty(), 10, step=0.01)
        broker.start()
        sub = subscriber_factory(broker.port, ["monitor/cam/n/+"])
        assert sub.wait_for(lambda s: len(s.messages) >= 10, 20)
    finally:
        publisher.stop()
        broker.stop()
    assert sorted(int(payload) for _, payload, _ in sub.messages) == list(range(5, 15))
    assert events.messages["dropped"] == 5


def test_an_unusable_state_dir_is_a_config_error_naming_state_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = MqttConfig(outbox=OutboxConfig(path=blocker / "sub" / "outbox.sqlite"))
    with pytest.raises(ConfigError) as error:
        Publisher(settings)
    (problem,) = error.value.problems
    assert problem.startswith("state_dir: cannot open the outbox") and str(blocker / "sub") in problem


def test_alive_while_running_and_not_after_stop(broker):
    publisher = started(config(broker.port))
    assert publisher.alive
    publisher.stop()
    assert not publisher.alive


def test_on_connect_hooks_run_after_connecting(broker, subscriber_factory):
    sub = subscriber_factory(broker.port, ["ha/#"])
    assert sub.subscribed.wait(10)
    publisher = Publisher(config(broker.port))
    publisher.on_connect.append(lambda: publisher.publish_all([Message("ha/sensor/config", '{"a":1}', 1, True)]))
    publisher.start()
    try:
        assert sub.wait_for(lambda s: s.json_on("ha/sensor/config") == [{"a": 1}], 15)
    finally:
        publisher.stop()


def test_last_seq_comes_from_the_outbox(tmp_path):
    publisher = Publisher(config(1883, tmp_path))
    publisher.outbox.add("monitor/cam/counts", counts_payload("cam", 7), 1, True)
    assert publisher.last_seq("cam") == 7 and publisher.last_seq("other") == 0
    assert Publisher(config(1883)).last_seq("cam") == 0
    publisher.outbox.close()


def test_published_payloads_arrive_unchanged(broker, subscriber_factory):
    sub = subscriber_factory(broker.port, ["monitor/cam/events"])
    assert sub.subscribed.wait(10)
    publisher = started(config(broker.port))
    payload = json.dumps({"type": "start", "note": "ünïcode"})
    try:
        publisher.publish(Message("monitor/cam/events", payload, 1, False))
        assert sub.wait_for(lambda s: s.on("monitor/cam/events"), 10)
    finally:
        publisher.stop()
    assert sub.messages == [("monitor/cam/events", payload, False)]


class RecordingTap:
    def __init__(self):
        self.topics: list[str] = []

    def message(self, message: Message) -> None:
        self.topics.append(message.topic)


@pytest.mark.parametrize("durable", [True, False], ids=["outbox", "queue"])
def test_the_tap_sees_every_message_once_in_order(tmp_path, durable):
    tap = RecordingTap()
    publisher = Publisher(config(1, tmp_path if durable else None), tap=tap)  # never started: the tap sees it anyway
    publisher.publish(Message("a/1", "1", 1, True))
    publisher.publish_all([Message("a/2", "2", 1, False), Message("a/3", "3", 0, False), Message("a/4", "4", 2, True)])
    assert tap.topics == ["a/1", "a/2", "a/3", "a/4"]
    if publisher.outbox:
        publisher.outbox.close()
