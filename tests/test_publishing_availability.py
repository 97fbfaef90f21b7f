"""The status topics against a real Mosquitto: retained online/offline for the monitor and each camera, each on its
own connection (so each has its own last will), cameras added and removed without touching the others."""

from __future__ import annotations

from monitor.config import MqttConfig
from monitor.publishing.availability import Availability

TOPICS = ["monitor/status", "monitor/a/status", "monitor/b/status"]


def statuses(subscriber) -> dict[str, list[str]]:
    return {topic: subscriber.on(topic) for topic in sorted({t for t, _, _ in subscriber.messages})}


def test_online_then_offline_retained_for_the_monitor_and_each_camera(broker, subscriber_factory):
    live = subscriber_factory(broker.port, ["monitor/#"])
    assert live.subscribed.wait(10)
    availability = Availability(MqttConfig(port=broker.port), ["a", "b"])
    availability.start()
    availability.start()  # idempotent: the service and the pipeline both start it
    assert live.wait_for(lambda s: statuses(s) == {t: ["online"] for t in TOPICS}, 10), statuses(live)
    availability.stop()
    assert live.wait_for(lambda s: statuses(s) == {t: ["online", "offline"] for t in TOPICS}, 10), statuses(live)
    late = subscriber_factory(broker.port, ["monitor/#"])
    assert late.wait_for(lambda s: len(s.messages) == 3, 10)
    assert sorted(late.messages) == sorted((t, "offline", True) for t in TOPICS)


def test_set_cameras_touches_only_the_cameras_that_change(broker, subscriber_factory):
    live = subscriber_factory(broker.port, ["monitor/#"])
    assert live.subscribed.wait(10)
    availability = Availability(MqttConfig(port=broker.port), ["a", "b"])
    availability.start()
    try:
        assert live.wait_for(lambda s: len(statuses(s)) == 3, 10)
        availability.set_cameras(["a", "c"])
        assert live.wait_for(lambda s: s.on("monitor/b/status") == ["online", "offline"] and s.on("monitor/c/status") == ["online"], 10)
        assert live.on("monitor/status") == ["online"] and live.on("monitor/a/status") == ["online"]
    finally:
        availability.stop()


def test_a_reload_keeps_the_connections_for_the_same_broker_and_prefix():
    availability = Availability(MqttConfig(port=1883, heartbeat_s=30), ["a"])
    assert availability.serves(MqttConfig(port=1883, heartbeat_s=5, bare_topics=False))
    assert not availability.serves(MqttConfig(port=1884))
    assert not availability.serves(MqttConfig(port=1883, prefix="site"))
    assert not availability.serves(MqttConfig(port=1883, client_id="other"))
