"""The (epoch, seq) numbering of counts, events and events/active: it resumes only when both witnesses (the
outbox and seq-epochs.json) agree, and otherwise starts a greater epoch, whatever happened to the state dir."""

from __future__ import annotations

import json

from monitor.publishing.outbox import Outbox
from monitor.publishing.sequence import COUNTS, EPOCHS_FILE, EVENTS, Sequences

CAMERA = "cam"


def counts_payload(epoch: int, seq: int) -> str:
    return json.dumps({"camera": CAMERA, "epoch": epoch, "seq": seq, "ts": "2026-01-01T00:00:00.000Z"})


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(state, outbox_path, clock, messages: int = 3, kind: str = COUNTS) -> list[tuple[int, int]]:
    """One run of a monitor: a sequence from a fresh Sequences on the state dir, its messages stored in the outbox."""
    sequences = Sequences(state, clock)
    outbox = Outbox(outbox_path, seq_listener=sequences) if outbox_path else None
    sequences.bind(outbox_path)
    stream = sequences.stream(CAMERA, kind, outbox)
    sent = []
    for _ in range(messages):
        epoch, seq = stream.next()
        topic = f"p/{CAMERA}/{'counts' if kind == COUNTS else 'events'}"
        if outbox:
            outbox.add(topic, counts_payload(epoch, seq), 1, kind == COUNTS)
        sent.append((epoch, seq))
    if outbox:
        outbox.close()
    return sent


def test_a_restart_resumes_where_the_outbox_and_the_epoch_file_agree(tmp_path):
    clock = Clock(1_800_000_000.0)
    first = run(tmp_path, tmp_path / "o.sqlite", clock)
    assert first == [(1_800_000_000_000, 1), (1_800_000_000_000, 2), (1_800_000_000_000, 3)]
    clock.now += 60
    assert run(tmp_path, tmp_path / "o.sqlite", clock) == [(1_800_000_000_000, n) for n in (4, 5, 6)]


def test_a_lost_outbox_starts_a_greater_epoch(tmp_path):
    clock = Clock(1_800_000_000.0)
    first = run(tmp_path, tmp_path / "o.sqlite", clock)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"o.sqlite{suffix}").unlink(missing_ok=True)
    clock.now += 1
    second = run(tmp_path, tmp_path / "o.sqlite", clock)
    assert second[0] > first[-1] and second[0][1] == 1


def test_another_client_ids_outbox_and_back_never_resumes_an_old_epoch(tmp_path):
    clock = Clock(1_800_000_000.0)
    a = run(tmp_path, tmp_path / "outbox-a.sqlite", clock)
    clock.now += 1
    b = run(tmp_path, tmp_path / "outbox-b.sqlite", clock)
    clock.now += 1
    back = run(tmp_path, tmp_path / "outbox-a.sqlite", clock)  # outbox-a still says (epoch a, 3)
    assert a[-1] < b[0] < b[-1] < back[0]
    assert back[0][1] == 1


def test_a_clock_that_went_back_still_gives_a_greater_epoch(tmp_path):
    clock = Clock(1_800_000_000.0)
    first = run(tmp_path, None, clock)  # no outbox: every start is a new epoch
    clock.now -= 3600
    second = run(tmp_path, None, clock)
    assert second[0] == (first[0][0] + 1, 1)


def test_without_an_outbox_every_start_is_a_new_epoch(tmp_path):
    clock = Clock(1_800_000_000.0)
    runs = [run(tmp_path, None, clock) for _ in range(3)]
    assert runs[0][-1] < runs[1][0] < runs[1][-1] < runs[2][0]


def test_counts_and_events_are_separate_streams(tmp_path):
    clock = Clock(1_800_000_000.0)
    sequences = Sequences(tmp_path, clock)
    counts, events = sequences.stream(CAMERA, COUNTS, None), sequences.stream(CAMERA, EVENTS, None)
    assert [counts.next(), counts.next(), events.next()] == [(1_800_000_000_000, 1), (1_800_000_000_000, 2), (1_800_000_000_001, 1)]
    assert sequences.stream(CAMERA, COUNTS, None) is counts  # a reload keeps the stream


def test_a_seq_the_outbox_could_not_record_forbids_resuming_until_it_is_recorded(tmp_path):
    clock = Clock(1_800_000_000.0)
    sequences = Sequences(tmp_path, clock)
    outbox = Outbox(tmp_path / "o.sqlite", seq_listener=sequences)
    stream = sequences.stream(CAMERA, COUNTS, outbox)
    outbox.add("p/cam/counts", counts_payload(*stream.next()), 1, True)
    assert (tmp_path / EPOCHS_FILE).exists()
    db = outbox._db
    outbox._db = _Failing()  # the disk fails: seq 2 goes out unrecorded
    assert outbox.add("p/cam/counts", counts_payload(*stream.next()), 1, True) is None
    assert not (tmp_path / EPOCHS_FILE).exists(), "a restart now must not resume from (epoch, 1)"
    restarted = Sequences(tmp_path, clock)  # a restart now finds the outbox at (epoch, 1) and no file...
    assert restarted.stream(CAMERA, COUNTS, _Store((1_800_000_000_000, 1))).current()[0] > 1_800_000_000_000  # ...not seq 2 again
    outbox._db = db  # the disk works again: the next write records seq 3 and the missed 2
    outbox.add("p/cam/counts", counts_payload(*stream.next()), 1, True)
    assert outbox.stored_seq("cam/counts") == (1_800_000_000_000, 3)
    assert json.loads((tmp_path / EPOCHS_FILE).read_text())["streams"]["cam/counts"] == 1_800_000_000_000


def test_an_unreadable_epoch_file_means_new_epochs(tmp_path):
    clock = Clock(1_800_000_000.0)
    run(tmp_path, tmp_path / "o.sqlite", clock)
    (tmp_path / EPOCHS_FILE).write_text("{not json")
    clock.now += 1
    assert run(tmp_path, tmp_path / "o.sqlite", clock)[0] == (1_800_000_001_000, 1)


class _Store:
    def __init__(self, outbox_seq):
        self.outbox_seq = outbox_seq

    def stored_seq(self, stream):
        return self.outbox_seq

    def highest_epoch(self):
        return self.outbox_seq[0]


class _Failing:
    """A database on a failed disk: every statement fails like SQLite on ENOSPC."""

    def execute(self, *args):
        import sqlite3

        raise sqlite3.OperationalError("database or disk is full")

    executemany = execute
