"""Durable store-and-forward for MQTT: every count and event message is written here first.

A message leaves the outbox only when the broker acknowledges it (QoS 1 PUBACK); after a broker
outage, a lost connection or a restart of the monitor (even SIGKILL or a power cut) it is sent
again, oldest first, with its original payload (``ts`` and ``seq`` included).

Storage: one SQLite file in WAL mode under the state directory. ``synchronous=FULL`` by default,
so an acknowledged write survives a power cut.

Size policy (``mqtt.outbox``), applied on every write:
- ``state`` messages (retained bare integers such as ``<camera>/<zone>/<label>``): only the latest
  per topic is kept; an older unsent value is replaced (it would be overwritten by the retain anyway).
- ``count`` messages (``<camera>/counts``): the latest ``count_history`` per topic; older ones are
  dropped oldest first and counted in ``monitor_outbox_dropped{kind="count"}``.
- ``event`` messages (everything else: safety events, escalations): never dropped, until the outbox
  holds ``max_messages`` rows; then count history (all but the latest per topic) goes first, and only
  when nothing else is left are the oldest events dropped, counted in
  ``monitor_outbox_dropped{kind="event"}`` with the alarm ``monitor_outbox_full`` set to 1.
- A disk-full (or otherwise failing) database does not stop publishing: the message goes out
  unrecorded, ``monitor_outbox_errors`` counts it and ``monitor_outbox_full`` is set.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from monitor.config import OutboxConfig

log = logging.getLogger(__name__)

COUNT, STATE, EVENT = "count", "state", "event"

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_topic ON messages (topic, id);
CREATE TABLE IF NOT EXISTS seqs (camera TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class OutboxEvents(Protocol):
    def outbox_dropped(self, kind: str, n: int) -> None: ...
    def outbox_error(self) -> None: ...
    def outbox_full(self, full: bool) -> None: ...


class NullOutboxEvents:
    def outbox_dropped(self, kind: str, n: int) -> None: ...
    def outbox_error(self) -> None: ...
    def outbox_full(self, full: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    topic: str
    payload: str
    qos: int
    retain: bool
    created: float


def classify(topic: str, retain: bool) -> str:
    """The size-policy kind of a message from its topic (see the module docstring)."""
    if topic.endswith("/counts"):
        return COUNT
    parts = topic.split("/")
    if "events" in parts or "escalations" in parts:
        return EVENT
    return STATE if retain else EVENT


class OutboxError(Exception):
    pass


class Outbox:
    """Thread-safe: camera loops add, the publisher reads and acknowledges."""

    def __init__(
        self,
        path: Path,
        max_messages: int = 100_000,
        count_history: int = 1000,
        synchronous: str = "full",
        events: OutboxEvents | None = None,
    ):
        self.path = Path(path)
        self.max_messages = max_messages
        self.count_history = count_history
        self.events = events or NullOutboxEvents()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc
        self._rows = self._scalar("SELECT COUNT(*) FROM messages")
        self._full = False

    # --- writing ---------------------------------------------------------------------------

    def add(self, topic: str, payload: str, qos: int, retain: bool, kind: str | None = None) -> int | None:
        """Store a message; its row id, or None when the database failed (the caller sends it anyway)."""
        kind = kind or classify(topic, retain)
        with self._lock:
            try:
                return self._add_locked(topic, payload, qos, retain, kind)
            except sqlite3.Error as exc:
                self._rollback()
                log.error("outbox %s: cannot store a message for %s: %s", self.path, topic, exc)
                self.events.outbox_error()
                self._set_full(True)
                return None

    def add_many(self, messages: list) -> bool:
        """Store several messages (anything with topic, payload, qos, retain, kind) in one transaction:
        one disk sync per frame instead of one per message. False when the database failed."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for m in messages:
                    self._insert(m.topic, m.payload, m.qos, m.retain, m.kind or classify(m.topic, m.retain))
                self._db.execute("COMMIT")
                return True
            except sqlite3.Error as exc:
                self._rollback()
                log.error("outbox %s: cannot store %d messages: %s", self.path, len(messages), exc)
                self.events.outbox_error()
                self._set_full(True)
                return False

    def _add_locked(self, topic: str, payload: str, qos: int, retain: bool, kind: str) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        row_id = self._insert(topic, payload, qos, retain, kind)
        self._db.execute("COMMIT")
        return row_id

    def _insert(self, topic: str, payload: str, qos: int, retain: bool, kind: str) -> int:
        db = self._db
        if kind == STATE:
            self._rows -= db.execute("DELETE FROM messages WHERE topic = ? AND kind = ?", (topic, STATE)).rowcount
        cursor = db.execute(
            "INSERT INTO messages (topic, payload, qos, retain, kind, created) VALUES (?, ?, ?, ?, ?, ?)",
            (topic, payload, qos, int(retain), kind, time.time()),
        )
        self._rows += 1
        if kind == COUNT:
            self._remember_seq(payload)
            self._trim_topic_history(topic)
        if self._rows > self.max_messages:
            self._enforce_hard_limit()
        return cursor.lastrowid

    def _remember_seq(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            camera, seq = data["camera"], int(data["seq"])
        except (ValueError, KeyError, TypeError):
            return
        self._db.execute(
            "INSERT INTO seqs (camera, seq) VALUES (?, ?) ON CONFLICT(camera) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            (camera, seq),
        )

    def _trim_topic_history(self, topic: str) -> None:
        dropped = self._db.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE topic = ? AND kind = ? ORDER BY id DESC LIMIT -1 OFFSET ?)",
            (topic, COUNT, self.count_history),
        ).rowcount
        if dropped:
            self._rows -= dropped
            self.events.outbox_dropped(COUNT, dropped)

    def _enforce_hard_limit(self) -> None:
        excess = self._rows - self.max_messages
        # count history first: every counts row that is not the newest of its topic
        dropped = self._db.execute(
            """DELETE FROM messages WHERE id IN (
                   SELECT id FROM messages WHERE kind = ? AND id NOT IN (SELECT MAX(id) FROM messages WHERE kind = ? GROUP BY topic)
                   ORDER BY id LIMIT ?)""",
            (COUNT, COUNT, excess),
        ).rowcount
        self._rows -= dropped
        if dropped:
            self.events.outbox_dropped(COUNT, dropped)
        excess = self._rows - self.max_messages
        if excess <= 0:
            return
        dropped = self._db.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE kind = ? ORDER BY id LIMIT ?)", (EVENT, excess)
        ).rowcount
        self._rows -= dropped
        if dropped:
            log.error("outbox %s is full (%d messages): dropped the %d oldest events", self.path, self.max_messages, dropped)
            self.events.outbox_dropped(EVENT, dropped)
            self._set_full(True)

    # --- reading and acknowledging ---------------------------------------------------------

    def pending(self, after_id: int = 0, limit: int = 100) -> list[StoredMessage]:
        """Unacknowledged messages with id > ``after_id``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, topic, payload, qos, retain, created FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                log.error("outbox %s: cannot read: %s", self.path, exc)
                self.events.outbox_error()
                return []
        return [StoredMessage(i, t, p.decode() if isinstance(p, bytes) else p, q, bool(r), c) for i, t, p, q, r, c in rows]

    def ack(self, ids: list[int]) -> None:
        """The broker has the messages: forget them."""
        if not ids:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                removed = self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids]).rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                log.error("outbox %s: cannot remove acknowledged messages: %s", self.path, exc)
                self.events.outbox_error()
                return
            self._rows = max(0, self._rows - removed)
            if self._full and self._rows < self.max_messages * 0.9:
                self._set_full(False)

    # --- state -----------------------------------------------------------------------------

    def last_seq(self, camera: str) -> int:
        """The highest counts ``seq`` ever stored for a camera (0 if none): seq keeps growing across restarts."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM seqs WHERE camera = ?", (camera,)).fetchone()
        return int(row[0]) if row else 0

    def size(self) -> int:
        with self._lock:
            return self._rows

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds since the oldest unacknowledged message was stored (0 when empty)."""
        with self._lock:
            row = self._db.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
        return 0.0 if row is None else max(0.0, (now or time.time()) - row[0])

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()

    def _scalar(self, sql: str) -> int:
        return int(self._db.execute(sql).fetchone()[0])

    def _rollback(self) -> None:
        """Undo a failed write and recount (the counter may have moved before the failure)."""
        try:
            self._db.execute("ROLLBACK")
            self._rows = self._scalar("SELECT COUNT(*) FROM messages")
        except sqlite3.Error:
            pass

    def _set_full(self, full: bool) -> None:
        if full != self._full:
            self._full = full
            self.events.outbox_full(full)


class OutboxDrain:
    """Hands stored messages to paho oldest first, at most ``inflight`` unacknowledged at a time.

    Only the publisher's thread calls ``pump``; paho's network thread calls ``acknowledged``, which
    only queues the mid (paho holds its own locks while it calls back, so taking ours there could
    deadlock with ``publish``). paho re-sends its unacknowledged QoS 1 messages itself after a
    reconnect, so a message is handed to paho once per process; after a restart the outbox still
    holds everything unacknowledged and sends it again from the start.
    """

    def __init__(self, outbox: Outbox, client, inflight: int):
        self.outbox = outbox
        self.client = client
        self.window = inflight
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._acked: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._last_handed = 0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def acknowledged(self, mid: int) -> None:
        self._acked.put(mid)

    def pump(self, connected: bool) -> int:
        """Forget acknowledged messages and hand on new ones; returns how many were handed on."""
        self._take_acks()
        if not connected or len(self._inflight) >= self.window:
            return 0
        handed = 0
        for message in self.outbox.pending(self._last_handed, self.window - len(self._inflight)):
            info = self.client.publish(message.topic, message.payload, qos=max(1, message.qos), retain=message.retain)
            self._last_handed = message.id
            if info.rc not in (0, 4):  # MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN (paho keeps it and sends on reconnect)
                log.warning("MQTT publish to %s not accepted by paho (rc %s); kept in the outbox", message.topic, info.rc)
                self._last_handed = message.id - 1
                break
            self._inflight[info.mid] = message.id
            handed += 1
        return handed

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

    def idle(self) -> bool:
        """Nothing in flight and nothing waiting to be handed on."""
        self._take_acks()
        return not self._inflight and not self.outbox.pending(self._last_handed, 1)


def open_outbox(settings: OutboxConfig, events: OutboxEvents | None = None) -> Outbox | None:
    """The outbox ``mqtt.outbox`` asks for; None when disabled or not resolved to a path. OutboxError if it cannot open."""
    if not settings.enabled or settings.path is None:
        return None
    outbox = Outbox(settings.path, settings.max_messages, settings.count_history, settings.synchronous, events)
    pending = outbox.size()
    if pending:
        log.info("outbox %s: %d messages from before the restart will be sent first", outbox.path, pending)
    return outbox
