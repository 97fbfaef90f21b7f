"""MQTT across hosts: an edge Mosquitto bridged to a central one with the shipped drop-ins (mosquitto/); both
brokers restarted mid-run; a persistent subscriber on the central broker receives every ``seq`` in order."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path

import pytest
from conftest import ROOT, Broker, Subscriber, cut_clip, street_config

from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.pipeline import Monitor

EDGE = ROOT / "mosquitto" / "edge-bridge.conf"
CENTRAL = ROOT / "mosquitto" / "central.conf"
LEFT_OUT = ("listener", "password_file", "allow_anonymous")  # the test's Broker listens on loopback, anonymously


def rendered(drop_in: Path, workdir: Path, **replace: str) -> str:
    """A shipped drop-in with its placeholders filled, on top of what Debian's mosquitto.conf sets (persistence)."""
    # run as root, Mosquitto would switch to the mosquitto user, which cannot write in the test's folders
    lines = ["persistence true", f"persistence_location {workdir}/", f"user {getpass.getuser()}"]
    for line in drop_in.read_text().splitlines():
        if line.split()[:1] and line.split()[0] in LEFT_OUT:
            continue
        for old, new in replace.items():
            line = line.replace(old, new)
        lines.append(line)
    return "\n".join(lines)


def test_drop_ins_have_no_trailing_comments():
    for drop_in in (EDGE, CENTRAL):
        for line in drop_in.read_text().splitlines():
            assert line.startswith("#") or "#" not in line.replace("monitor/#", ""), f"{drop_in.name}: {line}"


@pytest.fixture
def segment(tmp_path, clip):
    return cut_clip(clip, tmp_path / "segment.avi", 0, 40)


def test_every_seq_reaches_the_central_broker_in_order_across_restarts(tmp_path, segment):
    """The harsh order: the central broker goes away, the edge broker restarts while it is away (its bridge queue
    must survive on disk), the consumer is offline when the central broker comes back and restarts once more (the
    consumer's queued messages must survive on disk there), then the consumer returns."""
    (tmp_path / "central").mkdir()
    (tmp_path / "edge").mkdir()
    central = Broker(tmp_path / "central")
    central.extra_config = rendered(CENTRAL, tmp_path / "central")
    central.start()
    edge = Broker(tmp_path / "edge")
    replace = {"central.example.net:1883": f"127.0.0.1:{central.port}", "EDGE-NAME": "edge1"}
    edge.extra_config = rendered(EDGE, tmp_path / "edge", **replace)
    edge.start()
    data = street_config(edge.port, source=str(segment), realtime=True, loop=True, fps=10, safety=[])
    data["mqtt"]["heartbeat_s"] = 1  # a counts message at least every second
    data["models"]["person"]["imgsz"] = 320
    monitor = Monitor(parse_config(data), Metrics())
    consumers: list[Subscriber] = []

    def consumer() -> Subscriber:
        """A consumer on the central broker with a persistent session (fixed id, clean session off), as central.conf says."""
        consumers.append(Subscriber(central.port, ["monitor/street/counts"], client_id="scada", clean=False))
        return consumers[-1]

    def seqs() -> list[int]:
        return [json.loads(p)["seq"] for c in consumers for topic, p, retained in list(c.messages) if not retained]

    def wait_beyond(seq: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and max(seqs(), default=0) <= seq:
            time.sleep(0.1)
        assert max(seqs(), default=0) > seq, f"the consumer got up to seq {max(seqs(), default=0)}"

    first = consumer()
    monitor.start()
    try:
        wait_beyond(3)
        central.stop()  # the WAN (or the central host) is away: the edge queues
        first.close()  # the consumer is away too
        time.sleep(2)
        edge.stop()  # the edge restarts meanwhile: its queue goes to disk; the monitor's outbox holds the rest
        time.sleep(1)
        edge.start()
        time.sleep(2)
        central.start()  # the bridge delivers the queue; the central broker keeps it for the absent consumer
        time.sleep(3)
        central.stop()  # and restarts once more before the consumer is back
        central.start()
        produced_while_away = monitor.loops["street"].topics.sequence.current()[1]
        consumer()
        wait_beyond(produced_while_away + 3)
    finally:
        monitor.stop()
        for c in consumers[1:]:
            c.close()
        edge.stop()
        central.stop()
    received = seqs()
    # every seq, and each new one after the one before: QoS 1 across broker restarts may deliver a message again
    # after newer ones (an unacknowledged one resent), which a subscriber keeping only greater seqs ignores
    unique = list(dict.fromkeys(received))
    assert unique == list(range(unique[0], unique[-1] + 1)), f"gaps or a new seq out of order: {received}"
    assert unique[0] <= 3 and unique[-1] > produced_while_away > 10
