"""``monitor clear-retained``: empty the retained topics that a renamed or removed camera left on the broker.

A camera's retained topics are everything under ``<prefix>/<camera>/`` (counts, bare values of either layout,
``events/active``, ``status``) and its Home Assistant discovery configs (``<discovery>/+/<node>/+/config`` whose
payload reads that camera's topics). They are found on the broker itself rather than derived from a config, so a
camera that is no longer configured, or an old topic layout, is cleared all the same. A round trip of a marker
message after the subscriptions tells when the broker has delivered every retained message (it sends a client's
messages in order).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field

from monitor.config import AppConfig
from monitor.publishing.homeassistant import topic_safe
from monitor.publishing.publisher import make_client
from monitor.publishing.topics import ONLINE, camera_topic, status_topic

ANSWER_TIMEOUT_S = 10.0


class BrokerError(Exception):
    pass


@dataclass
class RetainedScan:
    """The retained messages under some topic filters, as the broker holds them now."""

    messages: dict[str, bytes] = field(default_factory=dict)

    def camera_topics(self, config: AppConfig, camera: str) -> list[str]:
        """This camera's topics with a retained payload: under ``<prefix>/<camera>/``, and its discovery configs."""
        own = camera_topic(config.mqtt.prefix, camera) + "/"
        return sorted(t for t, payload in self.messages.items() if t.startswith(own) or self._discovers(config, own, t, payload))

    def cameras(self, config: AppConfig) -> set[str]:
        """Cameras that have a retained ``counts`` or ``status`` under the prefix."""
        prefix = config.mqtt.prefix + "/"
        found = set()
        for topic in self.messages:
            rest = topic[len(prefix):].split("/") if topic.startswith(prefix) else []
            if len(rest) == 2 and rest[1] in ("counts", "status"):
                found.add(rest[0])
        return found

    def online(self, config: AppConfig, camera: str) -> bool:
        return self.messages.get(status_topic(config.mqtt.prefix, camera)) == ONLINE.encode()

    @staticmethod
    def _discovers(config: AppConfig, own: str, topic: str, payload: bytes) -> bool:
        if not topic.startswith(config.home_assistant.discovery_prefix + "/"):
            return False
        try:
            state_topic = json.loads(payload).get("state_topic", "")
        except (ValueError, AttributeError):
            return False
        return isinstance(state_topic, str) and state_topic.startswith(own)


def camera_filters(config: AppConfig, camera: str) -> list[str]:
    node = topic_safe(f"{config.mqtt.prefix}_{camera}")
    return [f"{camera_topic(config.mqtt.prefix, camera)}/#", f"{config.home_assistant.discovery_prefix}/+/{node}/+/config"]


def all_cameras_filters(config: AppConfig) -> list[str]:
    return [f"{config.mqtt.prefix}/+/counts", f"{config.mqtt.prefix}/+/status"]


class BrokerSession:
    """A short connection for reading retained messages and clearing them."""

    def __init__(self, config: AppConfig):
        self.config = config
        self._client = make_client(config.mqtt, f"{config.mqtt.client_id}-clear-{uuid.uuid4().hex[:8]}")
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._marker_seen = threading.Event()
        self._marker = f"{config.mqtt.client_id}-clear/{uuid.uuid4().hex}"
        self._scan = RetainedScan()
        self._client.on_connect = lambda client, userdata, flags, reason_code, properties: (
            None if reason_code.is_failure else self._connected.set()
        )
        self._client.on_subscribe = lambda client, userdata, mid, reason_codes, properties: self._subscribed.set()
        self._client.on_message = self._on_message

    def __enter__(self) -> BrokerSession:
        mqtt = self.config.mqtt
        self._client.connect_async(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
        self._client.loop_start()
        if not self._connected.wait(ANSWER_TIMEOUT_S):
            self.__exit__()
            raise BrokerError(f"cannot connect to the MQTT broker at {mqtt.host}:{mqtt.port}")
        return self

    def __exit__(self, *exc) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def scan(self, filters: list[str]) -> RetainedScan:
        """Every retained message under ``filters``."""
        self._scan = RetainedScan()
        self._subscribed.clear()
        self._marker_seen.clear()
        self._client.subscribe([(f, 1) for f in filters] + [(self._marker, 1)])
        if not self._subscribed.wait(ANSWER_TIMEOUT_S):
            raise BrokerError("the broker did not acknowledge the subscription")
        self._client.publish(self._marker, b"end", qos=1)
        if not self._marker_seen.wait(ANSWER_TIMEOUT_S):
            raise BrokerError("the broker did not echo the end marker")
        self._client.unsubscribe(filters + [self._marker])
        return self._scan

    def clear(self, topics: list[str]) -> None:
        """An empty retained message on each topic (MQTT's way to delete a retained message)."""
        infos = [self._client.publish(topic, b"", qos=1, retain=True) for topic in topics]
        for info in infos:
            info.wait_for_publish(timeout=ANSWER_TIMEOUT_S)

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self._marker:
            self._marker_seen.set()
        elif message.retain and message.payload:
            self._scan.messages[message.topic] = message.payload


@dataclass
class ClearReport:
    cleared: dict[str, list[str]] = field(default_factory=dict)  # camera -> topics emptied
    refused: dict[str, str] = field(default_factory=dict)  # camera -> why not


def removed_cameras(config: AppConfig) -> list[str]:
    """Cameras with retained topics on the broker that the config no longer has."""
    with BrokerSession(config) as session:
        seen = session.scan(all_cameras_filters(config)).cameras(config)
    return sorted(seen - set(config.cameras))


def clear_cameras(config: AppConfig, cameras: list[str], dry_run: bool = False, force: bool = False) -> ClearReport:
    """Empty the retained topics of each camera; a camera whose status is ``online`` (a monitor runs it) is
    refused unless ``force``, since the running monitor would publish them again."""
    report = ClearReport()
    with BrokerSession(config) as session:
        for camera in cameras:
            scan = session.scan(camera_filters(config, camera))
            if scan.online(config, camera) and not force:
                report.refused[camera] = "its status is online (a monitor runs it): stop that monitor or remove the camera first"
                continue
            topics = scan.camera_topics(config, camera)
            if not dry_run:
                session.clear(topics)
            report.cleared[camera] = topics
    return report
