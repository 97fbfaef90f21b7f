"""Home Assistant MQTT discovery: each count a ``sensor``, each safety rule a ``binary_sensor``, one device per camera.

Discovery messages are retained under ``<discovery_prefix>/<component>/<node>/<object>/config`` and sent again on
every (re)connect, so a broker restarted without persistence, or a Home Assistant started later, still finds them.
The entities read the topics the monitor publishes anyway:

- counts: the retained ``<prefix>/<camera>/counts`` JSON, one value picked per zone and class by a ``value_template``
  (so they work with ``mqtt.bare_topics`` off too);
- safety rules: the retained ``<prefix>/<camera>/events/active`` JSON (``{"camera", "count", "events": [...]}``,
  monitor/safety/); the rule's sensor is ``ON`` while an event of that rule (its name) is listed there, and carries
  that event's ``id``, ``zone``, ``start``, ``snapshot`` and ``detail`` as attributes (for automations).

Each entity's availability is its camera's ``<prefix>/<camera>/status`` (``online``; ``offline`` on a stop and as
that topic's last will, monitor/publishing/availability.py). Names read naturally after the device's name
(Home Assistant shows "Camera store Ice bag in storage"): the count's label is also its unit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from monitor import __version__
from monitor.common import ALL_ZONES
from monitor.config import AppConfig, CameraConfig, HomeAssistantConfig, MqttConfig
from monitor.publishing.message import Message
from monitor.publishing.publisher import Publisher
from monitor.publishing.topics import OFFLINE, ONLINE, camera_topic, status_topic

ORIGIN = {"name": "camera-monitor", "sw_version": __version__}
TOTALS_OBJECT = "totals"


def topic_safe(text: str) -> str:
    """Home Assistant's node_id and object_id allow only [a-zA-Z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "_"


def jinja_string(text: str) -> str:
    return json.dumps(text)  # a double-quoted literal that Jinja parses like Python


def spoken(name: str) -> str:
    """A config name as words: ``ice_bag`` -> ``ice bag``."""
    return re.sub(r"[_-]+", " ", name).strip() or name


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class CameraEntities:
    """What one camera exposes: zone -> counted labels (``_all`` for the whole image), lines, safety rules."""

    camera: str
    description: str
    zone_labels: dict[str, list[str]]
    lines: list[str]
    safety_rules: list[str]


class HomeAssistantDiscovery:
    """Builds the retained discovery messages of every camera."""

    def __init__(self, config: HomeAssistantConfig, mqtt: MqttConfig, cameras: list[CameraEntities]):
        self.config = config
        self.mqtt = mqtt
        self.cameras = cameras
        # counts are re-sent at least every heartbeat: three missed heartbeats mark the value stale in Home Assistant
        self.expire_after = max(60, int(3 * mqtt.heartbeat_s))

    def messages(self) -> list[Message]:
        out = []
        for camera in self.cameras:
            out += [self._message("sensor", camera, object_id, payload) for object_id, payload in self.count_sensors(camera)]
            out += [self._message("sensor", camera, object_id, payload) for object_id, payload in self.line_sensors(camera)]
            out += [self._message("binary_sensor", camera, object_id, payload) for object_id, payload in self.rule_sensors(camera)]
        return out

    def attach(self, publisher: Publisher) -> None:
        """Send the discovery messages on every connect of ``publisher``."""
        publisher.on_connect.append(lambda: publisher.publish_all(self.messages()))

    def node_id(self, camera: str) -> str:
        return topic_safe(f"{self.mqtt.prefix}_{camera}")

    def discovery_topic(self, component: str, camera: str, object_id: str) -> str:
        return f"{self.config.discovery_prefix}/{component}/{self.node_id(camera)}/{topic_safe(object_id)}/config"

    def device(self, camera: CameraEntities) -> dict:
        return {
            "identifiers": [self.node_id(camera.camera)],
            "name": f"Camera {camera.camera}",
            "manufacturer": "camera-monitor",
            "model": camera.description or "YOLO zone counter",
            "sw_version": __version__,
        }

    def count_sensors(self, camera: CameraEntities) -> list[tuple[str, dict]]:
        sensors = []
        for zone, labels in camera.zone_labels.items():
            for label in labels:
                if zone == ALL_ZONES:
                    object_id, where = f"{TOTALS_OBJECT}_{label}", "in view"
                    template = f"{{{{ value_json.totals[{jinja_string(label)}] }}}}"
                else:
                    object_id, where = f"{zone}_{label}", f"in {spoken(zone)}"
                    template = f"{{{{ value_json.zones[{jinja_string(zone)}][{jinja_string(label)}] }}}}"
                payload = self._sensor(camera, object_id, sentence(f"{spoken(label)} {where}"), template)
                payload.update(unit_of_measurement=spoken(label), state_class="measurement", icon="mdi:counter")
                sensors.append((object_id, payload))
        return sensors

    def line_sensors(self, camera: CameraEntities) -> list[tuple[str, dict]]:
        sensors = []
        for line in camera.lines:
            for direction in ("in", "out"):
                object_id = f"line_{line}_{direction}"
                template = f"{{{{ value_json.lines[{jinja_string(line)}][{jinja_string(direction)}] }}}}"
                payload = self._sensor(camera, object_id, f"Crossings {direction} at {spoken(line)}", template)
                payload.update(unit_of_measurement="crossings", state_class="total_increasing", icon="mdi:transit-transfer")
                sensors.append((object_id, payload))
        return sensors

    def rule_sensors(self, camera: CameraEntities) -> list[tuple[str, dict]]:
        sensors = []
        active_topic = f"{camera_topic(self.mqtt.prefix, camera.camera)}/events/active"
        for rule in camera.safety_rules:
            object_id = f"safety_{rule}"
            events = f"value_json.events | selectattr('rule', 'equalto', {jinja_string(rule)}) | list"
            payload = self._common(camera, object_id, sentence(spoken(rule)))
            payload.update(
                state_topic=active_topic,
                value_template=f"{{{{ 'ON' if {events} else 'OFF' }}}}",
                payload_on="ON",
                payload_off="OFF",
                device_class="safety",
                json_attributes_topic=active_topic,
                json_attributes_template=(
                    f"{{% set found = {events} %}}{{{{ (found | first if found else {{}}) | tojson }}}}"
                ),
            )
            sensors.append((object_id, payload))
        return sensors

    def _sensor(self, camera: CameraEntities, object_id: str, name: str, template: str) -> dict:
        payload = self._common(camera, object_id, name)
        payload.update(
            state_topic=f"{camera_topic(self.mqtt.prefix, camera.camera)}/counts",
            value_template=template,
            expire_after=self.expire_after,
        )
        return payload

    def _common(self, camera: CameraEntities, object_id: str, name: str) -> dict:
        return {
            "name": name,
            "unique_id": f"{self.node_id(camera.camera)}_{topic_safe(object_id)}",
            "availability": [self.availability(camera.camera)],
            "availability_mode": "latest",
            "device": self.device(camera),
            "origin": ORIGIN,
            "qos": 1,
        }

    def availability(self, camera: str) -> dict:
        """The camera's own status topic: offline on a stop and when the monitor dies (its last will)."""
        return {"topic": status_topic(self.mqtt.prefix, camera), "payload_available": ONLINE, "payload_not_available": OFFLINE}

    def _message(self, component: str, camera: CameraEntities, object_id: str, payload: dict) -> Message:
        return Message(
            self.discovery_topic(component, camera.camera, object_id),
            json.dumps(payload, separators=(",", ":")),
            qos=1,
            retain=True,
        )


def safety_rule_names(camera: CameraConfig) -> list[str]:
    """The names of a camera's safety rules (each rule's ``key``: its name, or its kind when unnamed)."""
    return [rule.key for rule in camera.safety]


def build_discovery(app: AppConfig, zone_labels: dict[str, dict[str, list[str]]]) -> HomeAssistantDiscovery:
    """Discovery for every camera, from the config and each camera's zone -> counted labels map."""
    cameras = [
        CameraEntities(
            camera=name,
            description=camera.description,
            zone_labels=zone_labels[name],
            lines=list(camera.lines),
            safety_rules=safety_rule_names(camera),
        )
        for name, camera in app.cameras.items()
    ]
    return HomeAssistantDiscovery(app.home_assistant, app.mqtt, cameras)
