"""The whole story on real parts: the broker goes down, the state dir's disk (a real tmpfs) fills up, space comes
back, the broker comes back, then the outbox file is deleted and the monitor restarted. A subscriber that applies
the README's rule receives every counts and events message exactly once and in order, and the outbox metrics
match the rows on disk."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import Broker, cut_clip, street_config, wait_until, write_config

from monitor.config import load_config
from monitor.pipeline import Monitor

CAMERA = "street"
STREAMS = [f"monitor/{CAMERA}/counts", f"monitor/{CAMERA}/events", f"monitor/{CAMERA}/events/active"]
ON_PATH = {"name": "on_path", "rule": "intrusion", "zones": ["path"], "classes": ["person"], "per": "zone",
           "min_seconds": 0.2, "clear_seconds": 0.5}


@pytest.fixture
def persistent_broker(tmp_path):
    store = tmp_path / "mosquitto-data"
    store.mkdir()
    broker = Broker(tmp_path, f"persistence true\npersistence_location {store}/\nautosave_interval 1\nuser root\n").start()
    yield broker
    broker.stop()


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 16384)
                file.flush()
        except OSError:
            pass
    return filler


def rows_on_disk(path: Path) -> int:
    with sqlite3.connect(path, timeout=10) as db:
        return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]


def pair(message: dict) -> tuple[int, int]:
    return message.get("epoch", 0), message["seq"]


def test_broker_down_disk_full_space_back_broker_back_outbox_deleted_restart(
    tmp_path, small_disk, persistent_broker, subscriber_factory, clip, caplog
):
    caplog.set_level(logging.INFO, logger="monitor")
    state_disk = small_disk("4m")
    data = street_config(persistent_broker.port, source=str(cut_clip(clip, tmp_path / "street.avi", start=124, count=250)),
                         realtime=True, fps=5, safety=[ON_PATH])
    data["models"]["person"].update(imgsz=320)
    data["mqtt"]["heartbeat_s"] = 1
    data["state_dir"] = str(state_disk)
    data["evidence"] = {"enabled": False}
    config = load_config(write_config(tmp_path, data))
    outbox_path = config.mqtt.outbox.path
    sub = subscriber_factory(persistent_broker.port, STREAMS + ["monitor/status"], client_id="scada-storage", clean=False)
    assert sub.wait_for(lambda s: s.client.is_connected(), 10)
    time.sleep(0.3)

    monitor = Monitor(config)
    sample = lambda name: monitor.metrics.registry.get_sample_value(name) or 0.0  # noqa: E731
    monitor.start()
    try:
        assert sub.wait_for(lambda s: len(s.on(STREAMS[0])) >= 3 and s.on(STREAMS[1]), 120), "counts and an event"
        persistent_broker.stop()
        assert wait_until(lambda: rows_on_disk(outbox_path) >= 5, 30), "the outbox holds what the broker cannot take"
        filler = fill(state_disk)
        assert wait_until(lambda: sample("monitor_outbox_errors_total") >= 5, 60), "writes fail on the full disk"
        assert sample("monitor_outbox_full") == 1
        filler.unlink()  # space comes back
        assert wait_until(lambda: sample("monitor_outbox_full") == 0, 30), "writes work again"
        assert wait_until(lambda: monitor.loops[CAMERA].finished, 120), "the clip ends: nothing new is written"
        assert wait_until(lambda: sample("monitor_outbox_messages") == rows_on_disk(outbox_path) > 0, 10), \
            (sample("monitor_outbox_messages"), rows_on_disk(outbox_path))
        persistent_broker.start()
        assert wait_until(lambda: rows_on_disk(outbox_path) == 0 and sample("monitor_outbox_messages") == 0, 60)
    finally:
        monitor.stop()
    first_run = {topic: len(sub.on(topic)) for topic in STREAMS}
    episode = [r.getMessage() for r in caplog.records if r.name == "monitor.publishing.outbox" and r.levelno >= logging.ERROR]
    assert len(episode) == 1 and "database or disk is full" in episode[0], episode

    for suffix in ("", "-wal", "-shm"):
        Path(f"{outbox_path}{suffix}").unlink(missing_ok=True)
    restarted = Monitor(load_config(write_config(tmp_path, {**data, "cameras": {CAMERA: {**data["cameras"][CAMERA], "realtime": False}}})))
    stops = sub.on("monitor/status").count("offline")
    restarted.start()
    try:
        assert sub.wait_for(lambda s: all(len(s.on(t)) > first_run[t] for t in STREAMS), 120), "the restarted monitor is heard"
        assert wait_until(lambda: restarted.loops[CAMERA].finished, 120)
    finally:
        restarted.stop()
    assert sub.wait_for(lambda s: s.on("monitor/status").count("offline") > stops, 30), "a clean stop: offline comes last"

    for topic in STREAMS:
        received = sub.json_on(topic)
        by_pair: dict[tuple[int, int], dict] = {}
        for message in received:
            assert by_pair.setdefault(pair(message), message) == message, f"{topic}: {pair(message)} stands for two messages"
        kept, last = [], (-1, -1)
        for message in received:  # the README's rule
            if pair(message) > last:
                kept.append(message)
                last = pair(message)
        assert len(kept) == len(by_pair), f"{topic}: the README's rule discarded {len(by_pair) - len(kept)} new messages"
        epochs = sorted({pair(m)[0] for m in kept})
        assert len(epochs) == 2, f"{topic}: one epoch per outbox"
        for epoch in epochs:
            seqs = [m["seq"] for m in kept if pair(m)[0] == epoch]
            assert seqs == list(range(1, len(seqs) + 1)), f"{topic}: every message of epoch {epoch}, in order, none lost"
