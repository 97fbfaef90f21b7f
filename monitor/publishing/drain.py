"""Handing the outbox's messages to paho, oldest first, and forgetting them only on the broker's PUBACK.

A message the outbox could not store (a full or failing disk) is held in memory at its place in the
order: after every row stored before it, before every row stored after it. So a subscriber sees every
stream in the order it was produced even while the disk fails, and its ``(epoch, seq)`` rule never
drops a message for arriving late. Held messages are bounded (``mqtt.queue_size``, the oldest dropped and
counted) and do not survive a restart of the monitor.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from monitor.publishing.message import Message
from monitor.publishing.outbox import Outbox

log = logging.getLogger(__name__)

ACCEPTED = (0, 4)  # MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN (paho keeps it and sends it on reconnect)


@dataclass(frozen=True, slots=True)
class Held:
    """A message the outbox could not store, to go out after row ``after_id``."""

    after_id: int
    message: Message


class OutboxDrain:
    """Hands stored (and held) messages to paho in order, at most ``inflight`` unacknowledged at a time.

    Only the publisher's thread calls ``pump``; paho's network thread calls ``acknowledged``, which
    only queues the mid (paho holds its own locks while it calls back, so taking ours there could
    deadlock with ``publish``). paho re-sends its unacknowledged QoS 1 messages itself after a
    reconnect, so a message is handed to paho once per process; after a restart the outbox still
    holds everything unacknowledged and sends it again from the start.
    """

    def __init__(self, outbox: Outbox, client, inflight: int, held_limit: int = 10_000, dropped: Callable[[], None] = lambda: None):
        self.outbox = outbox
        self.client = client
        self.window = inflight
        self.held_limit = held_limit
        self.dropped = dropped
        self._inflight: dict[int, int | None] = {}  # paho mid -> outbox row id (None: a held message)
        self._acked: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._held: deque[Held] = deque()
        self._held_lock = threading.Lock()
        self._last_handed = 0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def held(self) -> int:
        with self._held_lock:
            return len(self._held)

    def hold(self, message: Message, after_id: int) -> None:
        """Keep a message the outbox could not store (any thread)."""
        with self._held_lock:
            if len(self._held) >= self.held_limit:
                self._held.popleft()
                self.dropped()
            self._held.append(Held(after_id, message))

    def take_held(self) -> list[Held]:
        """At stop: what the broker never took."""
        with self._held_lock:
            held, self._held = list(self._held), deque()
        return held

    def acknowledged(self, mid: int) -> None:
        self._acked.put(mid)

    def pump(self, connected: bool) -> int:
        """Forget acknowledged messages and hand on new ones in order; returns how many were handed on."""
        self._take_acks()
        room = self.window - len(self._inflight)
        if not connected or room <= 0:
            return 0
        rows = deque(self.outbox.pending(self._last_handed, room))
        handed = 0
        while handed < room:
            held = self._first_held()
            if held is not None and (not rows or held.after_id < rows[0].id):
                if not self._hand(held.message.topic, held.message.payload, held.message.qos, held.message.retain, None):
                    break
                with self._held_lock:
                    self._held.popleft()
            elif rows:
                row = rows.popleft()
                if not self._hand(row.topic, row.payload, row.qos, row.retain, row.id):
                    break
                self._last_handed = row.id
            else:
                break
            handed += 1
        return handed

    def idle(self) -> bool:
        """Nothing in flight and nothing waiting to be handed on."""
        self._take_acks()
        return not self._inflight and self._first_held() is None and not self.outbox.pending(self._last_handed, 1)

    def _hand(self, topic: str, payload: str, qos: int, retain: bool, row_id: int | None) -> bool:
        info = self.client.publish(topic, payload, qos=max(1, qos), retain=retain)
        if info.rc not in ACCEPTED:
            log.warning("MQTT publish to %s not accepted by paho (rc %s); kept for the next try", topic, info.rc)
            return False
        self._inflight[info.mid] = row_id
        return True

    def _first_held(self) -> Held | None:
        with self._held_lock:
            return self._held[0] if self._held else None

    def _take_acks(self) -> None:
        done = []
        while True:
            try:
                mid = self._acked.get_nowait()
            except queue.Empty:
                break
            row = self._inflight.pop(mid, None)
            if row is not None:
                done.append(row)
        self.outbox.ack(done)
