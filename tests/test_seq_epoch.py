"""The seq contract end to end, with the real pipeline, model, clip and Mosquitto: a subscriber that follows the
README's rule (keep the last (epoch, seq) per stream, accept only a greater one) receives every counts, events
and events/active message exactly once, across restarts, a reload, a deleted or corrupt outbox, another
client_id and a disabled outbox; no (epoch, seq) ever stands for two different messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import cut_clip, street_config, write_config

from monitor.config import load_config
from monitor.pipeline import Monitor

CAMERA = "street"
STREAMS = [f"monitor/{CAMERA}/counts", f"monitor/{CAMERA}/events", f"monitor/{CAMERA}/events/active"]
STATUS = "monitor/status"
ON_PATH = {"name": "on_path", "rule": "intrusion", "zones": ["path"], "classes": ["person"], "per": "zone",
           "min_seconds": 0.2, "clear_seconds": 0.5}


@pytest.fixture(scope="module")
def busy_clip(tmp_path_factory, clip) -> Path:
    """4 seconds with several people on the path: counts and an event in every run."""
    return cut_clip(clip, tmp_path_factory.mktemp("seq-clip") / "busy.avi", start=124, count=40)


def config_data(port: int, clip: Path, **mqtt) -> dict:
    data = street_config(port, source=str(clip), safety=[ON_PATH])
    data["models"]["person"].update(imgsz=320)
    data["mqtt"].update(mqtt)
    return data


def play(path: Path) -> None:
    """One run of the monitor over the clip, to its end and its clean stop."""
    monitor = Monitor(load_config(path))
    monitor.start()
    try:
        deadline = time.monotonic() + 180
        while not all(loop.finished for loop in monitor.loops.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        monitor.stop()


def pair(message: dict) -> tuple[int, int]:
    return message.get("epoch", 0), message["seq"]


def readme_rule(messages: list[dict]) -> list[dict]:
    """What a subscriber following the README keeps: a message only if its (epoch, seq) is greater than the last."""
    kept, last = [], (-1, -1)
    for message in messages:
        if pair(message) > last:
            kept.append(message)
            last = pair(message)
    return kept


def check_streams(sub) -> dict[str, list[dict]]:
    """Per stream: no (epoch, seq) with two different payloads, and the README's rule keeps every distinct message."""
    kept = {}
    for topic in STREAMS:
        received = sub.json_on(topic)
        by_pair: dict[tuple[int, int], dict] = {}
        for message in received:
            assert by_pair.setdefault(pair(message), message) == message, f"{topic}: {pair(message)} stands for two messages"
        kept[topic] = readme_rule(received)
        assert len(kept[topic]) == len(by_pair), f"{topic}: the README's rule discarded new messages"
    return kept


def test_restarts_and_lost_outboxes_never_make_a_subscriber_discard_a_new_message(tmp_path, broker, subscriber_factory, busy_clip):
    sub = subscriber_factory(broker.port, STREAMS + [STATUS])
    time.sleep(0.3)
    data = config_data(broker.port, busy_clip)
    path = write_config(tmp_path, data)
    outbox = load_config(path).mqtt.outbox.path
    runs = []

    def run(label: str, config: Path = path) -> None:
        stops = sub.on(STATUS).count("offline")
        play(config)  # a clean stop: "offline" comes after everything the run sent
        assert sub.wait_for(lambda s: s.on(STATUS).count("offline") > stops, 30), label
        runs.append((label, pair(sub.json_on(STREAMS[0])[-1]), pair(sub.json_on(STREAMS[1])[-1])))

    run("first")
    run("restart")  # the outbox and seq-epochs.json agree: the numbering goes on
    assert runs[1][1][0] == runs[0][1][0] and runs[1][2][0] == runs[0][2][0], "same epoch after a plain restart"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{outbox}{suffix}").unlink(missing_ok=True)
    run("outbox deleted")
    Path(outbox).write_bytes(b"this is not an outbox" * 100)
    run("outbox corrupt")
    run("another client_id", write_config(tmp_path, config_data(broker.port, busy_clip, client_id="renamed"), "renamed.yaml"))
    run("back to the first client_id")
    no_outbox = write_config(tmp_path, {**data, "mqtt": {**data["mqtt"], "outbox": {"enabled": False}}}, "no-outbox.yaml")
    run("outbox off", no_outbox)
    run("outbox off again", no_outbox)

    kept = check_streams(sub)
    for (label, counts, events), (_, earlier_counts, earlier_events) in zip(runs[1:], runs):
        assert counts > earlier_counts and events > earlier_events, label
    firsts = [m["seq"] for m in kept[STREAMS[0]] if m["seq"] == 1]
    assert len(firsts) == 7, "every run but the plain restart started a new epoch at seq 1"
    assert len({m.get("epoch") for m in kept[STREAMS[1]]}) == 7


def test_events_and_counts_go_on_across_a_reload(tmp_path, broker, subscriber_factory, busy_clip, monkeypatch):
    from test_service import FakeSystemd

    from monitor.service import Notifier, Service

    systemd = FakeSystemd(tmp_path / "notify.sock")
    sub = subscriber_factory(broker.port, STREAMS)
    time.sleep(0.3)
    data = config_data(broker.port, busy_clip)
    data["cameras"][CAMERA].update(loop=True, realtime=True, fps=5)
    path = write_config(tmp_path, data)
    service = Service(path, load_config(path), Notifier(str(systemd.path)), tick_s=0.1)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert systemd.wait_for("READY=1", 120)
        assert sub.wait_for(lambda s: len(s.on(STREAMS[1])) >= 1 and len(s.on(STREAMS[0])) >= 3, 60)
        before = {topic: sub.json_on(topic)[-1] for topic in STREAMS}
        mark = time.monotonic()
        service.reload_requested.set()
        assert systemd.wait_for("RELOADING=1", 30, since=mark) and systemd.wait_for("READY=1", 120, since=mark)
        for topic, ahead in ((STREAMS[0], 3), (STREAMS[1], 2)):  # the new pipeline's own messages have come
            assert sub.wait_for(lambda s: later(s.json_on(topic), before[topic], ahead), 90), topic
    finally:
        service.stop_requested.set()
        thread.join(60)
        systemd.close()
    kept = check_streams(sub)
    for topic in STREAMS:
        after = [m for m in kept[topic] if later([m], before[topic], 0)]
        assert {m.get("epoch") for m in after} == {before[topic].get("epoch")}, f"{topic}: the reload kept the epoch"
        assert [m["seq"] for m in after] == list(range(before[topic]["seq"] + 1, before[topic]["seq"] + 1 + len(after))), \
            f"{topic}: seq goes on by one across the reload"


def later(messages: list[dict], than: dict, by: int) -> bool:
    return any(pair(m) > (pair(than)[0], pair(than)[1] + by) for m in messages)


def test_a_sigkilled_monitor_leaves_offline_as_its_last_will(tmp_path, broker, subscriber_factory, busy_clip):
    data = config_data(broker.port, busy_clip)
    data["cameras"][CAMERA].update(loop=True, realtime=True, fps=2)
    path = write_config(tmp_path, data)
    status = subscriber_factory(broker.port, ["monitor/status"])
    log = (tmp_path / "monitor.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(path)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "YOLO_OFFLINE": "1"})
    try:
        assert status.wait_for(lambda s: s.on("monitor/status")[-1:] == ["online"], 120), (tmp_path / "monitor.log").read_text()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert status.wait_for(lambda s: s.on("monitor/status")[-1:] == ["offline"], 30), "the broker sends the will"
    late = subscriber_factory(broker.port, ["monitor/status"])
    assert late.wait_for(lambda s: s.messages, 10)
    assert late.messages == [("monitor/status", "offline", True)], "retained, for anyone who subscribes later"
