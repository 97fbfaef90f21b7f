"""Availability: the retained ``online``/``offline`` of the monitor (``<prefix>/status``) and of each camera
(``<prefix>/<camera>/status``).

MQTT keeps one last will per connection, and a camera's topic must turn ``offline`` by itself when the process
dies (SIGKILL, a crash, a power cut, a lost network), so each status topic has its own small connection that holds
only that will and publishes ``online`` (retained) on every (re)connect. A clean stop publishes ``offline`` on each.

They live apart from the publisher's connection so that a reload, which rebuilds the pipeline and its publisher,
is not an outage: the status connections stay up across it and nothing flickers (``set_cameras`` turns the
cameras a reload removed ``offline`` and adds the new ones).
"""

from __future__ import annotations

import threading

from monitor.config import MqttConfig
from monitor.publishing.publisher import make_client
from monitor.publishing.topics import OFFLINE, ONLINE, status_topic

STATUS_QOS = 1
PUBLISH_WAIT_S = 2.0
CONNECTION_KEYS = ("host", "port", "prefix", "client_id", "username", "password", "tls", "keepalive_s")


class StatusConnection:
    """One connection that holds the last will ``offline`` on ``topic`` and says ``online`` on every connect."""

    def __init__(self, config: MqttConfig, topic: str, client_id: str):
        self.topic = topic
        self.connected = threading.Event()
        self._client = make_client(config, client_id)
        self._client.will_set(topic, OFFLINE, qos=STATUS_QOS, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda client, userdata, flags, reason_code, properties: self.connected.clear()
        self._address = (config.host, config.port, config.keepalive_s)

    def start(self) -> None:
        host, port, keepalive = self._address
        self._client.connect_async(host, port, keepalive=keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        """``offline`` (when connected), then a clean disconnect (which discards the will)."""
        if self.connected.is_set():
            info = self._client.publish(self.topic, OFFLINE, qos=STATUS_QOS, retain=True)
            try:
                info.wait_for_publish(timeout=PUBLISH_WAIT_S)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return  # the publisher's connection logs why
        client.publish(self.topic, ONLINE, qos=STATUS_QOS, retain=True)
        self.connected.set()


class Availability:
    """The monitor's status connection and one per camera; explicit ``start``/``stop``."""

    def __init__(self, config: MqttConfig, cameras: list[str]):
        self.config = config
        self._monitor = StatusConnection(config, status_topic(config.prefix), f"{config.client_id}-status")
        self._cameras: dict[str, StatusConnection] = {name: self._camera_connection(name) for name in cameras}
        self._started = False

    def serves(self, config: MqttConfig) -> bool:
        """Whether these connections fit ``config`` (same broker, login, prefix and client id): a reload keeps them."""
        return all(getattr(config, key) == getattr(self.config, key) for key in CONNECTION_KEYS)

    def start(self) -> None:
        """Idempotent: the service starts it once and keeps it across reloads."""
        if self._started:
            return
        self._started = True
        self._monitor.start()
        for connection in self._cameras.values():
            connection.start()

    def set_cameras(self, cameras: list[str]) -> None:
        """After a reload: removed cameras go ``offline``, added ones get their connection; the rest are untouched."""
        for name in [name for name in self._cameras if name not in cameras]:
            self._cameras.pop(name).stop()
        for name in cameras:
            if name not in self._cameras:
                self._cameras[name] = self._camera_connection(name)
                if self._started:
                    self._cameras[name].start()

    def stop(self) -> None:
        """Cameras first, then the monitor: ``offline`` on every status topic."""
        for connection in self._cameras.values():
            connection.stop()
        self._monitor.stop()
        self._started = False

    def _camera_connection(self, camera: str) -> StatusConnection:
        return StatusConnection(self.config, status_topic(self.config.prefix, camera), f"{self.config.client_id}-status-{camera}")

