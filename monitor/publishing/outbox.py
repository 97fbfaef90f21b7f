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
- A disk-full (or otherwise failing) database does not stop publishing: the message is kept in memory
  and goes out in order (``monitor.publishing.drain``), ``monitor_outbox_errors`` counts it and
  ``monitor_outbox_full`` is set; it is logged once when writing starts to fail and once when it works again.
  The row count behind ``monitor_outbox_messages`` and the size policy stays exact through failed writes.
- Each counts, events and events/active message's ``(epoch, seq)`` is recorded in ``sequences`` in the
  same transaction (``monitor.publishing.sequence``); one that could not be recorded is recorded with the
  next write that works.
- A corrupt file (``PRAGMA quick_check``, or SQLite calling it not a database) is moved aside to
  ``<name>.corrupt-<UTC time>`` (with its ``-wal``/``-shm``), named in one ERROR line and counted in
  ``monitor_outbox_corrupt``; a fresh outbox takes its place.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from monitor.config import OutboxConfig
from monitor.publishing.sequence import ACTIVE, COUNTS, EVENTS, stream_name

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
CREATE TABLE IF NOT EXISTS sequences (stream TEXT PRIMARY KEY, epoch INTEGER NOT NULL, seq INTEGER NOT NULL);
"""
LEGACY_SEQS = "INSERT OR IGNORE INTO sequences SELECT camera || '/counts', 0, seq FROM seqs; DROP TABLE seqs;"
RECORD_SEQ = """INSERT INTO sequences (stream, epoch, seq) VALUES (?, ?, ?)
    ON CONFLICT(stream) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq
    WHERE excluded.epoch > sequences.epoch OR (excluded.epoch = sequences.epoch AND excluded.seq > sequences.seq)"""
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26

SeqMark = tuple[str, int, int]  # (stream, epoch, seq)


class OutboxEvents(Protocol):
    def outbox_dropped(self, kind: str, n: int) -> None: ...
    def outbox_error(self) -> None: ...
    def outbox_full(self, full: bool) -> None: ...
    def outbox_corrupt(self) -> None: ...


class NullOutboxEvents:
    def outbox_dropped(self, kind: str, n: int) -> None: ...
    def outbox_error(self) -> None: ...
    def outbox_full(self, full: bool) -> None: ...
    def outbox_corrupt(self) -> None: ...


class SeqListener(Protocol):
    """Told whether every seq handed out is recorded (``monitor.publishing.sequence.Sequences``)."""

    def seqs_unrecorded(self) -> None: ...
    def seqs_recorded(self) -> None: ...


class NullSeqListener:
    def seqs_unrecorded(self) -> None: ...
    def seqs_recorded(self) -> None: ...


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


def seq_mark(topic: str, payload: str) -> SeqMark | None:
    """The (stream, epoch, seq) a counts, events or events/active message carries, else None."""
    kind = next((k for suffix, k in SEQ_TOPICS if topic.endswith(suffix)), None)
    if kind is None:
        return None
    try:
        data = json.loads(payload)
        return stream_name(data["camera"], kind), int(data.get("epoch", 0)), int(data["seq"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


SEQ_TOPICS = (("/counts", COUNTS), ("/events", EVENTS), ("/events/active", ACTIVE))


class OutboxError(Exception):
    pass


class CorruptOutbox(Exception):
    pass


class Episode:
    """A failing operation, logged once when it starts failing and once when it works again."""

    def __init__(self, what: str, consequence: str):
        self.what = what
        self.consequence = consequence
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            log.error("%s failed (%s); %s. Logged once until it works again", self.what, exc, self.consequence)

    def worked(self) -> None:
        if self.failures:
            log.warning("%s works again after %d failures", self.what, self.failures)
            self.failures = 0


class Outbox:
    """Thread-safe: camera loops add, the publisher reads and acknowledges."""

    def __init__(
        self,
        path: Path,
        max_messages: int = 100_000,
        count_history: int = 1000,
        synchronous: str = "full",
        events: OutboxEvents | None = None,
        seq_listener: SeqListener | None = None,
    ):
        self.path = Path(path)
        self.max_messages = max_messages
        self.count_history = count_history
        self.events = events or NullOutboxEvents()
        self.seq_listener = seq_listener or NullSeqListener()
        self._lock = threading.Lock()
        self._db = open_database(self.path, synchronous, self.events)
        self._rows = 0
        self._last_id = 0
        self.refresh()
        self._over_limit = False  # events were dropped for max_messages
        self._alarm = False
        self._writes = Episode(f"outbox {self.path}: writing", "messages are kept in memory and sent in order, unrecorded")
        self._reads = Episode(f"outbox {self.path}: reading", "stored messages wait")
        self._unrecorded: dict[str, tuple[int, int]] = {}  # stream -> (epoch, seq) sent but not recorded
        self._unacked: list[int] = []  # acknowledged, not yet deleted (a failed delete is retried)
        self._dropped: dict[str, int] = {}  # by the size policy, in the transaction under way

    # --- writing ---------------------------------------------------------------------------

    def add(self, topic: str, payload: str, qos: int, retain: bool, kind: str | None = None) -> int | None:
        """Store a message; its row id, or None when the database failed (the caller keeps it in memory)."""
        ids = self._store([(topic, payload, qos, retain, kind or classify(topic, retain))])
        return ids[0] if ids else None

    def add_many(self, messages: list) -> bool:
        """Store several messages (anything with topic, payload, qos, retain, kind) in one transaction:
        one disk sync per frame instead of one per message. False when the database failed."""
        rows = [(m.topic, m.payload, m.qos, m.retain, m.kind or classify(m.topic, m.retain)) for m in messages]
        return self._store(rows) is not None

    def _store(self, rows: list[tuple]) -> list[int] | None:
        marks = [mark for topic, payload, *_ in rows if (mark := seq_mark(topic, payload))]
        with self._lock:
            caught_up = bool(self._unrecorded)
            try:
                ids = self._transaction(lambda: [self._insert(*row) for row in rows], marks)
            except sqlite3.Error as exc:
                for stream, epoch, seq in marks:
                    self._unrecorded[stream] = max(self._unrecorded.get(stream, (epoch, seq)), (epoch, seq))
                self._writes.failed(exc)
                self.events.outbox_error()
                self._update_alarm()
                ids = None
        if ids is None:
            if marks:
                self.seq_listener.seqs_unrecorded()  # outside our lock: the listener takes its own
        elif caught_up:
            self.seq_listener.seqs_recorded()
        return ids

    def _transaction(self, work, marks: list[SeqMark]):
        """``work`` and the seqs in one transaction; the row count stays exact when it fails."""
        rows_before = self._rows
        self._dropped = {}
        try:
            self._db.execute("BEGIN IMMEDIATE")
            result = work()
            for mark in marks + [(stream, *pair) for stream, pair in self._unrecorded.items()]:
                self._db.execute(RECORD_SEQ, mark)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._undo(rows_before)
            raise
        self._unrecorded.clear()
        if isinstance(result, list) and result:
            self._last_id = max(self._last_id, *result)
        self._writes.worked()
        self._report_drops()
        self._update_alarm()
        return result

    def _undo(self, rows_before: int) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back by itself after some failures (a full disk): there is nothing left to undo
        try:
            self._rows = self._count_rows()
        except sqlite3.Error:
            self._rows = rows_before  # the transaction did not happen

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
            self._trim_topic_history(topic)
        if self._rows > self.max_messages:
            self._enforce_hard_limit()
        return cursor.lastrowid

    def _trim_topic_history(self, topic: str) -> None:
        dropped = self._db.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE topic = ? AND kind = ? ORDER BY id DESC LIMIT -1 OFFSET ?)",
            (topic, COUNT, self.count_history),
        ).rowcount
        self._drop(COUNT, dropped)

    def _enforce_hard_limit(self) -> None:
        excess = self._rows - self.max_messages
        # count history first: every counts row that is not the newest of its topic
        dropped = self._db.execute(
            """DELETE FROM messages WHERE id IN (
                   SELECT id FROM messages WHERE kind = ? AND id NOT IN (SELECT MAX(id) FROM messages WHERE kind = ? GROUP BY topic)
                   ORDER BY id LIMIT ?)""",
            (COUNT, COUNT, excess),
        ).rowcount
        self._drop(COUNT, dropped)
        excess = self._rows - self.max_messages
        if excess <= 0:
            return
        dropped = self._db.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE kind = ? ORDER BY id LIMIT ?)", (EVENT, excess)
        ).rowcount
        self._drop(EVENT, dropped)

    def _drop(self, kind: str, n: int) -> None:
        if n:
            self._rows -= n
            self._dropped[kind] = self._dropped.get(kind, 0) + n

    def _report_drops(self) -> None:
        """After the commit: only drops that happened are reported."""
        for kind, n in self._dropped.items():
            if kind == EVENT:
                log.error("outbox %s is full (%d messages): dropped the %d oldest events", self.path, self.max_messages, n)
                self._over_limit = True
            self.events.outbox_dropped(kind, n)
        self._dropped = {}

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
                self._reads.failed(exc)
                self.events.outbox_error()
                return []
            self._reads.worked()
        return [StoredMessage(i, t, p.decode() if isinstance(p, bytes) else p, q, bool(r), c) for i, t, p, q, r, c in rows]

    def ack(self, ids: list[int]) -> None:
        """The broker has the messages: forget them (a delete that fails is tried again with the next)."""
        with self._lock:
            ids, self._unacked = self._unacked + list(ids), []
            if not ids:
                return
            caught_up = bool(self._unrecorded)
            try:
                self._transaction(lambda: self._delete(ids), [])
            except sqlite3.Error as exc:
                self._unacked = ids
                self._writes.failed(exc)
                self.events.outbox_error()
                self._update_alarm()
                return
            if self._over_limit and self._rows < self.max_messages * 0.9:
                self._over_limit = False
                self._update_alarm()
        if caught_up:
            self.seq_listener.seqs_recorded()

    def _delete(self, ids: list[int]) -> None:
        self._rows -= self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids]).rowcount

    # --- state -----------------------------------------------------------------------------

    def stored_seq(self, stream: str) -> tuple[int, int] | None:
        """The last (epoch, seq) recorded for a stream (``monitor.publishing.sequence``), None if none."""
        with self._lock:
            row = self._db.execute("SELECT epoch, seq FROM sequences WHERE stream = ?", (stream,)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def highest_epoch(self) -> int:
        with self._lock:
            return self._scalar("SELECT COALESCE(MAX(epoch), 0) FROM sequences")

    def last_seq(self, camera: str) -> int:
        """The highest counts ``seq`` recorded for a camera (0 if none)."""
        stored = self.stored_seq(stream_name(camera, COUNTS))
        return stored[1] if stored else 0

    def refresh(self) -> None:
        """Count again: another connection (the pipeline a reload replaces) wrote since this one opened."""
        with self._lock:
            self._rows = self._count_rows()
            self._last_id = max(self._last_id, self._scalar("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'messages'"))

    @property
    def last_id(self) -> int:
        """The newest row id ever stored: a message kept in memory now goes out after it."""
        with self._lock:
            return self._last_id

    def size(self) -> int:
        with self._lock:
            return self._rows

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds since the oldest unacknowledged message was stored (0 when empty)."""
        with self._lock:
            try:
                row = self._db.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
            except sqlite3.Error:
                return 0.0
        return 0.0 if row is None else max(0.0, (now or time.time()) - row[0])

    def close(self) -> None:
        with self._lock:
            caught_up = bool(self._unrecorded)
            try:
                if self._unrecorded or self._unacked:  # a last try for what failed to be written
                    ids, self._unacked = self._unacked, []
                    self._transaction(lambda: self._delete(ids), [])
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                caught_up = False
            self._db.close()
        if caught_up:
            self.seq_listener.seqs_recorded()

    def _count_rows(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM messages")

    def _scalar(self, sql: str) -> int:
        return int(self._db.execute(sql).fetchone()[0])

    def _update_alarm(self) -> None:
        alarm = self._over_limit or self._writes.failing
        if alarm != self._alarm:
            self._alarm = alarm
            self.events.outbox_full(alarm)


# --- opening, and a corrupt file -------------------------------------------------------------


def open_database(path: Path, synchronous: str, events: OutboxEvents) -> sqlite3.Connection:
    """The outbox's database; a corrupt one is moved aside for inspection and a fresh one started."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return connect(path, synchronous)
    except (CorruptOutbox, sqlite3.DatabaseError) as exc:
        if not is_corrupt(exc):
            raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc
        kept = move_aside(path)
        log.error(
            "outbox %s is corrupt (%s): moved aside to %s for inspection; a fresh outbox starts (its unsent "
            "messages stay in the old file; seq numbering starts a new epoch)", path, exc, kept,
        )
        events.outbox_corrupt()
    except OSError as exc:
        raise OutboxError(f"cannot open the outbox {path}: {exc.strerror or exc}") from exc
    try:
        return connect(path, synchronous)
    except (CorruptOutbox, sqlite3.Error) as exc:
        raise OutboxError(f"cannot open a fresh outbox {path}: {exc}") from exc


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise CorruptOutbox(f"quick_check: {verdict}")
        db.executescript(SCHEMA)
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seqs'").fetchone():
            db.executescript(f"BEGIN; {LEGACY_SEQS} COMMIT;")
        return db
    except BaseException:
        db.close()
        raise


def is_corrupt(exc: Exception) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, CorruptOutbox) or (code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB))


def move_aside(path: Path) -> Path:
    """``<name>.corrupt-<UTC time>``, with its WAL and shared-memory files beside it under the same name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, target)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
    except OSError as exc:
        raise OutboxError(f"the outbox {path} is corrupt and cannot be moved aside: {exc.strerror or exc}") from exc
    return target


def open_outbox(
    settings: OutboxConfig, events: OutboxEvents | None = None, seq_listener: SeqListener | None = None
) -> Outbox | None:
    """The outbox ``mqtt.outbox`` asks for; None when disabled or not resolved to a path. OutboxError if it cannot open."""
    if not settings.enabled or settings.path is None:
        return None
    outbox = Outbox(settings.path, settings.max_messages, settings.count_history, settings.synchronous, events, seq_listener)
    pending = outbox.size()
    if pending:
        log.info("outbox %s: %d messages from before the restart will be sent first", outbox.path, pending)
    return outbox
