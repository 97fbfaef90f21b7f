"""Message numbering: every counts, events and events/active message carries ``epoch`` and ``seq``.

``seq`` grows by one per message of a stream (a camera's counts, its events, its active set). ``epoch``
is new whenever a stream's numbering starts again: milliseconds since 1970 at that moment, or one more
than any epoch known here if the clock is behind. So ``(epoch, seq)`` only ever grows, and a subscriber
keeps the last pair per stream and accepts a message only if its pair is greater.

A stream goes on with its old epoch after a restart only when both witnesses agree: the outbox holds its
last ``(epoch, seq)`` (written in the same transaction as the message), and ``<state_dir>/seq-epochs.json``
names that epoch as the stream's current one. Anything else (the outbox deleted, moved aside as corrupt,
another ``client_id``'s outbox, the outbox off, seqs that a full disk kept from being recorded) starts a new
epoch. While a seq is not recorded, the file is removed (which needs no free space) and not written again
until the outbox has caught up.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

log = logging.getLogger(__name__)

EPOCHS_FILE = "seq-epochs.json"
COUNTS, EVENTS, ACTIVE = "counts", "events", "active"


def stream_name(camera: str, kind: str) -> str:
    return f"{camera}/{kind}"


class SeqStore(Protocol):
    """Where the last (epoch, seq) of each stream is recorded with its message (the outbox)."""

    def stored_seq(self, stream: str) -> tuple[int, int] | None: ...
    def highest_epoch(self) -> int: ...


class Sequence:
    """One stream's numbering; thread-safe."""

    def __init__(self, stream: str, epoch: int, seq: int = 0):
        self.stream = stream
        self.epoch = epoch
        self.seq = seq
        self._lock = threading.Lock()

    def next(self) -> tuple[int, int]:
        with self._lock:
            self.seq += 1
            return self.epoch, self.seq

    def current(self) -> tuple[int, int]:
        with self._lock:
            return self.epoch, self.seq


def new_sequence(stream: str, clock: Callable[[], float] = time.time) -> Sequence:
    """A stream that nothing records (tools, tests): a new epoch from the clock."""
    return Sequence(stream, int(clock() * 1000))


class Sequences:
    """Every stream of this process, kept across reloads; new streams are resumed or given a new epoch."""

    def __init__(self, state_dir: Path | None, clock: Callable[[], float] = time.time):
        self.path = Path(state_dir) / EPOCHS_FILE if state_dir is not None else None
        self.clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, Sequence] = {}
        self._store_key: object = None
        self._unrecorded = False
        self._epochs, self._highest = self._load()

    def bind(self, store_key: object) -> None:
        """The streams so far belong to one outbox (its path, None without one); another one starts them anew."""
        with self._lock:
            if store_key != self._store_key:
                self._streams.clear()
                self._store_key = store_key

    def stream(self, camera: str, kind: str, store: SeqStore | None) -> Sequence:
        name = stream_name(camera, kind)
        with self._lock:
            if name not in self._streams:
                self._streams[name] = self._resume_or_start(name, store)
            return self._streams[name]

    # --- told by the outbox ---------------------------------------------------------------------

    def seqs_unrecorded(self) -> None:
        """A seq went out that the outbox could not record: a restart must not resume from the outbox."""
        with self._lock:
            if self._unrecorded or self.path is None:
                return
            self._unrecorded = True
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot remove %s (%s): a restart now might reuse seq numbers", self.path, exc.strerror)

    def seqs_recorded(self) -> None:
        """The outbox has caught up with every seq handed out."""
        with self._lock:
            if self._unrecorded:
                self._unrecorded = False
                self._save()

    # --- inside ----------------------------------------------------------------------------------

    def _resume_or_start(self, name: str, store: SeqStore | None) -> Sequence:
        stored = store.stored_seq(name) if store is not None else None
        if stored is not None and self._epochs.get(name) == stored[0] and not self._unrecorded:
            log.info("%s: seq goes on from %d (epoch %d)", name, stored[1], stored[0])
            return Sequence(name, *stored)
        known = [self._highest, stored[0] if stored else 0, store.highest_epoch() if store is not None else 0]
        epoch = max(int(self.clock() * 1000), max(known) + 1)
        self._epochs[name], self._highest = epoch, epoch
        self._save()
        why = "nothing recorded" if stored is None else f"the outbox's epoch {stored[0]} is not this stream's latest"
        log.info("%s: new epoch %d, seq starts at 1 (%s)", name, epoch, why)
        return Sequence(name, epoch)

    def _load(self) -> tuple[dict[str, int], int]:
        if self.path is None:
            return {}, 0
        try:
            saved = json.loads(self.path.read_text())
            epochs = {str(k): int(v) for k, v in saved["streams"].items()}
            return epochs, max([int(saved["highest"]), *epochs.values()])
        except FileNotFoundError:
            return {}, 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s is unreadable (%s): every stream starts a new epoch", self.path, exc)
            return {}, 0

    def _save(self) -> None:
        """Atomically, and never while a seq is unrecorded (that would vouch for an outbox that lags)."""
        if self.path is None or self._unrecorded:
            return
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "w") as file:
                json.dump({"highest": self._highest, "streams": self._epochs}, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:  # the next start then begins new epochs: safe
            log.warning("cannot write %s (%s)", self.path, exc.strerror)
            temporary.unlink(missing_ok=True)
