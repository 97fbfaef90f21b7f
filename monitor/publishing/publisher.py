"""The publisher: owns the MQTT connection (paho-mqtt 2.x) and sends every message off the frame path.

QoS 1/2 messages go through the durable outbox (``monitor.publishing.outbox``) and leave it only on the
broker's acknowledgement (``monitor.publishing.drain``). The ``status`` topics and their last wills have
connections of their own (``monitor.publishing.availability``). A broker that cannot be reached, refuses us
or never answers our CONNECT is logged once per reason until a connection works.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from typing import Callable, Protocol

import paho.mqtt.client as mqtt

from monitor.config import ConfigError, MqttConfig
from monitor.publishing.drain import OutboxDrain
from monitor.publishing.message import Message
from monitor.publishing.outbox import NullOutboxEvents, OutboxError, OutboxEvents, SeqListener, open_outbox

log = logging.getLogger(__name__)

_PUMP = object()  # wakes the sender thread to hand outbox messages to paho


class PublishEvents(OutboxEvents, Protocol):
    def mqtt_state(self, connected: bool) -> None: ...
    def mqtt_message(self, result: str) -> None: ...
    def outbox_state(self, messages: int, oldest_s: float) -> None: ...


class NullPublishEvents(NullOutboxEvents):
    def mqtt_state(self, connected: bool) -> None: ...
    def mqtt_message(self, result: str) -> None: ...
    def outbox_state(self, messages: int, oldest_s: float) -> None: ...


class MessageTap(Protocol):
    """Sees every message the publisher is given, on the caller's thread (e.g. the operator's page)."""

    def message(self, message: Message) -> None: ...


class NullMessageTap:
    def message(self, message: Message) -> None: ...


def make_client(config: MqttConfig, client_id: str | None = None) -> mqtt.Client:
    """A paho client with the config's credentials, TLS and reconnect policy (``client_id`` default: the config's)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or config.client_id, clean_session=True)
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
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.max_queued_messages_set(config.queue_size)
    return client


def explain_connect_failure(config: MqttConfig) -> str:
    """Why a connection to the broker fails, for the log line (paho only says that it did)."""
    try:
        with socket.create_connection((config.host, config.port), timeout=3) as raw:
            if not config.tls:
                return "TCP connects, the MQTT handshake failed"
            tls = config.tls
            context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
            if tls.cert_file:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
            context.check_hostname = not tls.insecure
            with context.wrap_socket(raw, server_hostname=config.host):
                return "TLS handshake works, the MQTT handshake failed"
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: the broker's certificate is not trusted ({exc.verify_message}); check mqtt.tls.ca_file"
    except ssl.SSLError as exc:
        return f"TLS: {exc.reason or exc}"
    except OSError as exc:
        return exc.strerror or str(exc)


class Publisher:
    """Owns the MQTT connection; a sender thread drains a bounded queue of messages."""

    def __init__(
        self,
        config: MqttConfig,
        events: PublishEvents | None = None,
        seq_listener: SeqListener | None = None,
        tap: MessageTap | None = None,
    ):
        self.config = config
        self.events = events or NullPublishEvents()
        self.tap = tap or NullMessageTap()
        self.connected = threading.Event()
        self.last_progress = time.monotonic()
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=config.queue_size)
        self._client = make_client(config)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        try:
            self.outbox = open_outbox(config.outbox, self.events, seq_listener)
        except OutboxError as exc:
            raise ConfigError([f"state_dir: {exc}"]) from None
        self._drain = (
            OutboxDrain(self.outbox, self._client, config.outbox.inflight, config.queue_size, lambda: self._count("dropped"))
            if self.outbox else None
        )
        self._connect_problem: str | None = None  # the last one logged; None once connected
        self._refused = False  # the broker answered CONNECT with a refusal (paho then disconnects)
        self._stopping = False
        self._client.max_inflight_messages_set(config.outbox.inflight)
        self._stop_deadline = 0.0
        self._outbox_reported = 0.0
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self.on_connect: list[Callable[[], None]] = []  # run after every (re)connect, e.g. to resend discovery

    @property
    def alive(self) -> bool:
        """The sender thread runs (for the service's health check)."""
        return self._thread.is_alive()

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def start(self) -> None:
        if self.outbox:
            self.outbox.refresh()
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()
        self._thread.start()

    def publish(self, message: Message) -> None:
        """Queue a message; never blocks the frame path (a full queue drops the oldest and counts it).

        QoS 1/2 messages go to the durable outbox first and leave it only on the broker's PUBACK.
        """
        self.tap.message(message)
        self._publish_one(message)

    def _publish_one(self, message: Message) -> None:
        if self._drain and message.qos > 0:
            if self.outbox.add(message.topic, message.payload, message.qos, message.retain, message.kind) is None:
                self._drain.hold(message, self.outbox.last_id)
            self._wake()
            return
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
            self.tap.message(message)
        durable = [m for m in messages if m.qos > 0] if self._drain else []
        if durable:
            if not self.outbox.add_many(durable):
                after_id = self.outbox.last_id
                for message in durable:
                    self._drain.hold(message, after_id)
            self._wake()
            messages = [m for m in messages if m.qos == 0]
        for message in messages:
            self._publish_one(message)

    def last_seq(self, camera: str) -> int:
        return self.outbox.last_seq(camera) if self.outbox else 0

    def _wake(self) -> None:
        try:
            self._queue.put_nowait(_PUMP)
        except queue.Full:
            pass  # the sender is busy anyway and pumps after each message

    def stop(self, timeout: float = 5.0) -> None:
        """Drain what is queued (bounded by ``timeout``), disconnect."""
        self._stopping = True
        self._stop_deadline = time.monotonic() + max(0.5, timeout - 1.0)
        self._queue.put(None)
        self._thread.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        if self._drain:
            self._store_held()
        self.close()

    def _store_held(self) -> None:
        """Messages held in memory that the broker never took: stored if nothing was stored after them (order)."""
        held = self._drain.take_held()
        if not held:
            return
        if held[0].after_id >= self.outbox.last_id and self.outbox.add_many([h.message for h in held]):
            log.warning("stored %d messages that were held in memory while the outbox could not write", len(held))
            return
        log.error("%d messages held in memory while the outbox could not write never reached the broker: lost", len(held))
        for _ in held:
            self._count("dropped")

    def close(self) -> None:
        """Release the outbox (also for a publisher that was built but never started)."""
        if self.outbox:
            self.outbox.close()

    def _run(self) -> None:
        while True:
            try:
                message = self._queue.get(timeout=0.5)
            except queue.Empty:
                message = _PUMP
            if message is None:
                self._flush_outbox()
                return
            if message is not _PUMP:
                self._send(message)
            self._pump_outbox()
            self.last_progress = time.monotonic()

    def _pump_outbox(self) -> None:
        if not self._drain:
            return
        self._drain.pump(self.connected.is_set())
        now = time.monotonic()
        if now - self._outbox_reported >= 1.0:
            self._outbox_reported = now
            self.events.outbox_state(self.outbox.size(), self.outbox.oldest_age())

    def _flush_outbox(self) -> None:
        """On stop: let what is in flight be acknowledged, until the deadline; the rest waits in the outbox."""
        while self._drain and self.connected.is_set() and time.monotonic() < self._stop_deadline:
            self._drain.pump(True)
            if self._drain.idle():
                return
            time.sleep(0.02)

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
            self._refused = True
            self._connect_failed(f"MQTT broker {self.where} refused the connection: {reason_code}", logging.ERROR)
            return
        self._connect_problem = None
        log.info("MQTT connected to %s", self.where)
        self.connected.set()
        for hook in self.on_connect:
            hook()
        self.events.mqtt_state(True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            log.warning("MQTT disconnected from %s: %s", self.where, reason_code)
        elif not self._refused and not self._stopping:
            # TCP (and TLS) worked but no CONNACK came (paho waits one keep-alive): not an MQTT broker, or a hung one
            self._connect_failed(
                f"MQTT broker {self.where} accepted the connection but never answered CONNECT ({reason_code}, "
                f"keep-alive {self.config.keepalive_s}s): is it an MQTT broker, and does it expect TLS? Retrying"
            )
        self._refused = False
        self.connected.clear()
        self.events.mqtt_state(False)

    def _on_connect_fail(self, client, userdata) -> None:
        self._connect_failed(f"MQTT cannot connect to {self.where} ({explain_connect_failure(self.config)}); retrying")

    def _connect_failed(self, problem: str, level: int = logging.WARNING) -> None:
        """Once per problem until a connection works, not at every retry."""
        if problem != self._connect_problem:
            self._connect_problem = problem
            log.log(level, "%s", problem)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if self._drain and not reason_code.is_failure:
            self._drain.acknowledged(mid)
        self._count("sent" if not reason_code.is_failure else "failed")

    def _count(self, result: str) -> None:
        self.events.mqtt_message(result)
