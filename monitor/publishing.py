"""Publishing: counts (and later events) to MQTT with paho-mqtt 2.x, off the frame path.

Topics under ``<prefix>``:
- ``status``: ``online`` / ``offline``, retained; ``offline`` is also the last will.
- ``<camera>/counts``: retained JSON with a per-camera ``seq`` that grows by 1 per message.
- ``<camera>/<zone>/<class>`` and ``<camera>/totals/<class>``: the bare integer, retained.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import paho.mqtt.client as mqtt

from monitor.config import MqttConfig
from monitor.counting import ALL_ZONES
from monitor.frame import FrameResult

log = logging.getLogger(__name__)

TOTALS_TOPIC = "totals"
RESERVED_TOPIC_NAMES = frozenset({"counts", "events", "escalations", "status", TOTALS_TOPIC})


class PublishEvents(Protocol):
    def mqtt_state(self, connected: bool) -> None: ...
    def mqtt_message(self, result: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: str
    qos: int
    retain: bool


def iso_utc(wall_time: float) -> str:
    return datetime.fromtimestamp(wall_time, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CountsTopics:
    """Builds a camera's count messages; tracks seq and which bare values changed."""

    def __init__(self, config: MqttConfig, camera: str):
        self.config = config
        self.camera = camera
        self.seq = 0
        self._last_bare: dict[str, int] = {}

    def messages(self, result: FrameResult, extra: dict | None = None, force_bare: bool = False) -> list[Message]:
        self.seq += 1
        zones = {zone: dict(per_label) for zone, per_label in result.counts.items() if zone != ALL_ZONES}
        totals = dict(result.counts.get(ALL_ZONES, {}))
        payload = {
            "camera": self.camera,
            "ts": iso_utc(result.frame.wall_time),
            "seq": self.seq,
            "zones": zones,
            "totals": totals,
        }
        if result.line_totals:
            payload["lines"] = result.line_totals
        payload.update(extra or {})
        prefix = f"{self.config.prefix}/{self.camera}"
        out = [Message(f"{prefix}/counts", json.dumps(payload, separators=(",", ":")), self.config.qos, True)]
        if self.config.bare_topics:
            out += self._bare_messages(prefix, zones, totals, force_bare)
        return out

    def _bare_messages(self, prefix: str, zones: dict, totals: dict, force: bool) -> list[Message]:
        values = {f"{prefix}/{zone}/{label}": n for zone, per_label in zones.items() for label, n in per_label.items()}
        values.update({f"{prefix}/{TOTALS_TOPIC}/{label}": n for label, n in totals.items()})
        changed = {topic: n for topic, n in values.items() if force or self._last_bare.get(topic) != n}
        self._last_bare.update(changed)
        return [Message(topic, str(n), self.config.qos, True) for topic, n in changed.items()]


def make_client(config: MqttConfig) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id, clean_session=True)
    if config.username:
        password = config.password.reveal() if config.password else None
        client.username_pw_set(config.username, password)
    if config.tls:
        tls = config.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(tls.insecure)
    client.will_set(f"{config.prefix}/status", "offline", qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.max_queued_messages_set(config.queue_size)
    return client


class Publisher:
    """Owns the MQTT connection; a sender thread drains a bounded queue of messages."""

    def __init__(self, config: MqttConfig, events: PublishEvents | None = None):
        self.config = config
        self.events = events
        self.connected = threading.Event()
        self.last_progress = time.monotonic()
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=config.queue_size)
        self._client = make_client(config)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._status_topic = f"{config.prefix}/status"

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def start(self) -> None:
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()
        self._thread.start()

    def publish(self, message: Message) -> None:
        """Queue a message; never blocks the frame path (a full queue drops the oldest and counts it)."""
        while True:
            try:
                self._queue.put_nowait(message)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._count("dropped")
                except queue.Empty:
                    pass

    def publish_all(self, messages: list[Message]) -> None:
        for message in messages:
            self.publish(message)

    def stop(self, timeout: float = 5.0) -> None:
        """Drain what is queued (bounded by ``timeout``), publish ``offline``, disconnect."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self.connected.is_set():
            info = self._client.publish(self._status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            self._send(message)
            self.last_progress = time.monotonic()

    def _send(self, message: Message) -> None:
        info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self._count("dropped")
        elif info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._count("failed")
            log.warning("MQTT publish to %s failed: %s", message.topic, mqtt.error_string(info.rc))
        elif message.qos == 0:
            self._count("sent")

    # --- paho callbacks (paho's network thread) -------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.where, reason_code)
            return
        log.info("MQTT connected to %s", self.where)
        client.publish(self._status_topic, "online", qos=1, retain=True)
        self.connected.set()
        if self.events:
            self.events.mqtt_state(True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            log.warning("MQTT disconnected from %s: %s", self.where, reason_code)
        self.connected.clear()
        if self.events:
            self.events.mqtt_state(False)

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("MQTT cannot connect to %s; retrying", self.where)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._count("sent" if not reason_code.is_failure else "failed")

    def _count(self, result: str) -> None:
        if self.events:
            self.events.mqtt_message(result)
