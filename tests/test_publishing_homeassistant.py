"""Home Assistant MQTT discovery against a real Mosquitto and a real monitor on the clip.

Each discovery payload is checked for what Home Assistant's MQTT ``sensor`` and ``binary_sensor`` need
(state_topic, unique_id, device, availability), and each state topic it names must carry a value that
its ``value_template`` (rendered with Jinja2, as Home Assistant does) turns into a count or ON/OFF.
"""

from __future__ import annotations

import json
import re
import threading

import jinja2
import pytest

from conftest import Broker, cut_clip, street_config, Subscriber
from monitor.config import HomeAssistantConfig, MqttConfig, parse_config
from monitor.publishing.homeassistant import CameraEntities, HomeAssistantDiscovery
from monitor.metrics import Metrics
from monitor.pipeline import Monitor

SEGMENT_FRAMES = 30
DISCOVERY_TOPIC = re.compile(r"^homeassistant/(sensor|binary_sensor)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config$")
SAFETY_RULES = [
    {"rule": "intrusion", "name": "lot_intrusion", "zones": ["lot"], "classes": ["person"]},
    {"rule": "person_down"},
]
# 3 zones + totals of `person`, the crossing line in and out, and the two safety rules
EXPECTED_SENSORS = {"lot_person", "path_person", "lawn_person", "totals_person", "line_crossing_in", "line_crossing_out"}
EXPECTED_BINARY_SENSORS = {"safety_lot_intrusion", "safety_person_down"}
JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)


def render(template: str, payload: str) -> str:
    """What Home Assistant's MQTT integration does with a value_template: value and value_json."""
    return JINJA.from_string(template).render(value=payload, value_json=json.loads(payload)).strip()


@pytest.fixture(scope="module")
def segment(tmp_path_factory, clip):
    return cut_clip(clip, tmp_path_factory.mktemp("clip") / "segment.avi", 0, SEGMENT_FRAMES)


@pytest.fixture(scope="module")
def running(tmp_path_factory, segment, person_model):
    """A broker, a subscriber on everything, and a monitor with discovery on, looping over the segment."""
    workdir = tmp_path_factory.mktemp("homeassistant")
    broker = Broker(workdir).start()
    subscriber = Subscriber(broker.port, ["homeassistant/#", "monitor/#"])
    data = street_config(broker.port, source=str(segment), loop=True, safety=SAFETY_RULES)
    data["home_assistant"] = {"enabled": True}
    data["state_dir"] = str(workdir / "state")
    monitor = Monitor(parse_config(data), Metrics())
    monitor.start()
    expected = len(EXPECTED_SENSORS) + len(EXPECTED_BINARY_SENSORS)
    try:
        assert subscriber.wait_for(lambda s: len(discovery(s)) >= expected, timeout=120), "no discovery messages"
        assert subscriber.wait_for(lambda s: s.on("monitor/street/counts"), timeout=120), "no counts"
        yield {"broker": broker, "subscriber": subscriber, "monitor": monitor}
    finally:
        subscriber.close()
        stopper = threading.Thread(target=monitor.stop)
        stopper.start()
        stopper.join(30)
        broker.stop()


def discovery(subscriber: Subscriber) -> dict[str, dict]:
    """The latest discovery payload per topic."""
    return {topic: json.loads(payload) for topic, payload, _ in subscriber.messages if topic.startswith("homeassistant/")}


def test_discovery_off_by_default():
    config = parse_config(street_config(1883))
    assert config.home_assistant.enabled is False
    assert config.home_assistant.discovery_prefix == "homeassistant"


def test_one_discovery_message_per_count_and_rule(running):
    found = discovery(running["subscriber"])
    objects = {"sensor": set(), "binary_sensor": set()}
    for topic in found:
        match = DISCOVERY_TOPIC.match(topic)
        assert match, f"not a valid discovery topic: {topic}"
        component, node, object_id = match.groups()
        assert node == "monitor_street"
        objects[component].add(object_id)
    assert objects["sensor"] == EXPECTED_SENSORS
    assert objects["binary_sensor"] == EXPECTED_BINARY_SENSORS


def test_payloads_have_what_home_assistant_requires(running):
    found = discovery(running["subscriber"])
    unique_ids = [payload["unique_id"] for payload in found.values()]
    assert len(unique_ids) == len(set(unique_ids))
    for topic, payload in found.items():
        component = DISCOVERY_TOPIC.match(topic).group(1)
        assert payload["name"] and isinstance(payload["unique_id"], str), topic
        assert payload["state_topic"].startswith("monitor/street/") and not set("#+") & set(payload["state_topic"]), topic
        JINJA.parse(payload["value_template"])  # a template Home Assistant could not parse would fail the entity
        device = payload["device"]
        assert device["identifiers"] == ["monitor_street"] and device["name"] == "Camera street", topic
        assert payload["availability"] == [{"topic": "monitor/street/status", "payload_available": "online", "payload_not_available": "offline"}]
        if component == "sensor":
            assert payload["state_class"] in ("measurement", "total_increasing"), topic
        else:
            assert (payload["payload_on"], payload["payload_off"]) == ("ON", "OFF")
            assert payload["device_class"] == "safety"


def test_discovery_is_retained(running):
    late = Subscriber(running["broker"].port, ["homeassistant/#"])
    try:
        expected = len(EXPECTED_SENSORS) + len(EXPECTED_BINARY_SENSORS)
        assert late.wait_for(lambda s: len(s.messages) >= expected, timeout=10)
        assert all(retained for _, _, retained in late.messages)
    finally:
        late.close()


def test_state_topics_carry_values(running):
    subscriber = running["subscriber"]
    found = discovery(subscriber)
    for payload in found.values():
        topic = payload["state_topic"]
        assert subscriber.wait_for(lambda s: s.on(topic), timeout=60), f"nothing on {topic}"
    counts = json.loads(subscriber.on("monitor/street/counts")[-1])
    for topic, payload in found.items():
        state = subscriber.on(payload["state_topic"])[-1]
        value = render(payload["value_template"], state)
        object_id = DISCOVERY_TOPIC.match(topic).group(3)
        if object_id == "totals_person":
            assert value == str(json.loads(state)["totals"]["person"])
        elif object_id.startswith("line_"):
            assert value.isdigit()
        elif payload.get("payload_on"):
            assert value in ("ON", "OFF"), f"{topic}: {value!r}"
        else:
            zone = object_id.removesuffix("_person")
            assert value == str(json.loads(state)["zones"][zone]["person"]), topic
    # people walk on the path in the first seconds of the clip
    assert counts["totals"]["person"] >= 1
    assert subscriber.on("monitor/status")[-1] == "online"


def test_rule_sensor_turns_on_with_an_active_event():
    """The binary sensor template against the active-events payload monitor/safety.py publishes."""
    discovery_ = HomeAssistantDiscovery(
        HomeAssistantConfig(), MqttConfig(), [CameraEntities("c", "", {"_all": ["person"]}, [], ["lot_intrusion", "person_down"])]
    )
    (_, intrusion), (_, down) = discovery_.rule_sensors(discovery_.cameras[0])
    active = {"camera": "c", "count": 1, "events": [{"id": "c-lot_intrusion-1", "rule": "lot_intrusion", "kind": "intrusion"}]}
    assert render(intrusion["value_template"], json.dumps(active)) == "ON"
    assert render(down["value_template"], json.dumps(active)) == "OFF"
    assert render(intrusion["value_template"], json.dumps({"camera": "c", "count": 0, "events": []})) == "OFF"


def test_discovery_is_sent_again_after_a_broker_restart(running):
    """Mosquitto without persistence forgets retained messages; the monitor re-sends them on reconnect."""
    broker = running["broker"]
    broker.restart()  # paho reconnects within its 1-30 s delay
    fresh = Subscriber(broker.port, ["homeassistant/#"])
    try:
        expected = len(EXPECTED_SENSORS) + len(EXPECTED_BINARY_SENSORS)
        assert fresh.wait_for(lambda s: len({t for t, _, _ in s.messages}) >= expected, timeout=60)
    finally:
        fresh.close()
