"""The outbox on a real full file system (a small tmpfs this test mounts) and on corrupt files: its row count
stays exact, no stored message is lost to a wrong count, the disk-full episode is logged once, and a corrupt
file is moved aside for a fresh outbox instead of stopping the monitor."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

from conftest import Broker

from monitor.config import MqttConfig, OutboxConfig
from monitor.metrics import Metrics
from monitor.publishing import Message, Outbox, Publisher


class Alarms:
    """The outbox's reports, read from the real metrics registry it reports to."""

    def __init__(self):
        self.metrics = Metrics()

    def value(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    @property
    def full(self) -> float:
        return self.value("monitor_outbox_full")

    @property
    def errors(self) -> float:
        return self.value("monitor_outbox_errors_total")

    @property
    def corrupt(self) -> float:
        return self.value("monitor_outbox_corrupt_total")


def rows_on_disk(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM messages ORDER BY id")]


def event(n: int, pad: int = 0) -> str:
    return json.dumps({"camera": "cam", "epoch": 1, "seq": n, "pad": "x" * pad})


def test_a_full_disk_keeps_the_count_exact_and_no_stored_event_is_dropped(small_disk, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    disk = small_disk("2m")
    filler = disk / "filler"
    filler.write_bytes(b"\0" * 600_000)  # what frees up later: another program's file
    events = Alarms()
    path = disk / "outbox.sqlite"
    outbox = Outbox(path, max_messages=100, events=events.metrics)
    stored = [row for n in range(200) if (row := outbox.add("p/cam/events", event(n, pad=20_000), 1, False)) is not None]
    assert 5 < len(stored) < 100, "the disk filled up part way (and the size policy never had a reason to act)"
    assert outbox.size() == len(rows_on_disk(path)) == len(stored)
    assert events.errors == 200 - len(stored) and events.full == 1
    outbox_errors = [r for r in caplog.records if r.name == "monitor.publishing.outbox" and r.levelno >= logging.ERROR]
    assert len(outbox_errors) == 1, "a disk-full episode is logged once, not once per message"
    assert "database or disk is full" in outbox_errors[0].getMessage()

    filler.unlink()  # space comes back
    for n in range(200, 210):
        assert outbox.add("p/cam/events", event(n), 1, False) is not None
    on_disk = rows_on_disk(path)
    assert len(on_disk) == len(stored) + 10, "10 new events stored, none of the earlier ones deleted"
    assert on_disk[: len(stored)] == stored
    assert outbox.size() == len(on_disk) and events.value("monitor_outbox_dropped_total", kind="event") == 0
    assert events.full == 0
    assert "works again after" in caplog.text
    outbox.close()


def test_acknowledged_rows_that_cannot_be_deleted_on_a_full_disk_go_with_the_next_delete(small_disk):
    disk = small_disk("2m")
    filler = disk / "filler"
    path = disk / "outbox.sqlite"
    outbox = Outbox(path)
    ids = [outbox.add("p/cam/events", event(n, pad=1000), 1, False) for n in range(20)]
    with open(filler, "wb") as file:  # fill the disk to the last block
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError:
            pass
    outbox.ack(ids[:10])
    assert outbox.size() == len(rows_on_disk(path)), "the count is what is on disk, deleted or not"
    filler.unlink()
    outbox.ack([])  # the next pump
    outbox.ack(ids[10:12])
    assert rows_on_disk(path) == ids[12:] and outbox.size() == 8
    outbox.close()


# --- corrupt files ------------------------------------------------------------------------------


def corrupt_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


def test_a_file_that_is_not_a_database_is_moved_aside_and_a_fresh_outbox_starts(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    path = tmp_path / "outbox-monitor.sqlite"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    events = Alarms()
    outbox = Outbox(path, events=events.metrics)
    (kept,) = corrupt_copies(path)
    assert kept.read_bytes() == garbage, "kept for inspection, as it was"
    assert events.corrupt == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(kept) in errors[0] and "corrupt" in errors[0]
    assert outbox.add("p/cam/events", event(1), 1, False) is not None and outbox.size() == 1


def test_a_truncated_database_with_its_header_intact_is_moved_aside(tmp_path):
    path = tmp_path / "outbox-monitor.sqlite"
    outbox = Outbox(path)
    for n in range(300):
        outbox.add("p/cam/events", event(n, pad=500), 1, False)
    outbox.close()
    data = path.read_bytes()
    assert data.startswith(b"SQLite format 3\0")
    path.write_bytes(data[: len(data) // 2])
    events = Alarms()
    fresh = Outbox(path, events=events.metrics)
    assert events.corrupt == 1 and len(corrupt_copies(path)) == 1
    assert fresh.size() == 0 and fresh.pending() == []


def test_wal_and_shared_memory_files_go_aside_with_it(tmp_path):
    from monitor.publishing.outbox import move_aside

    path = tmp_path / "outbox-monitor.sqlite"
    for suffix, content in (("", b"db"), ("-wal", b"wal"), ("-shm", b"shm")):
        (tmp_path / f"outbox-monitor.sqlite{suffix}").write_bytes(content)
    kept = move_aside(path)
    assert kept.name.startswith("outbox-monitor.sqlite.corrupt-") and kept.name.endswith("Z")
    assert [(tmp_path / f"{kept.name}{suffix}").read_bytes() for suffix in ("", "-wal", "-shm")] == [b"db", b"wal", b"shm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{kept.name}{suffix}" for suffix in ("", "-wal", "-shm"))
    path.write_bytes(b"again")
    assert move_aside(path) != kept, "a second corrupt file in the same second gets its own name"


def test_a_publisher_on_a_corrupt_outbox_starts_and_its_messages_arrive(tmp_path, subscriber_factory):
    broker = Broker(tmp_path).start()
    path = tmp_path / "state" / "outbox-corrupt-test.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"\x00" * 100 + b"not sqlite" * 500)
    sub = subscriber_factory(broker.port, ["monitor/cam/events"])
    time.sleep(0.3)
    publisher = Publisher(MqttConfig(port=broker.port, client_id="corrupt-test", outbox=OutboxConfig(path=path)))
    publisher.start()
    try:
        for n in range(1, 6):
            publisher.publish(Message("monitor/cam/events", event(n), 1, False))
        assert sub.wait_for(lambda s: len(s.on("monitor/cam/events")) == 5, 20)
        assert [json.loads(p)["seq"] for p in sub.on("monitor/cam/events")] == [1, 2, 3, 4, 5]
        assert len(corrupt_copies(path)) == 1
    finally:
        publisher.stop()
        broker.stop()
