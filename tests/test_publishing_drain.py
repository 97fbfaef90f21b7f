"""Handing outbox rows to paho: a row leaves the outbox only on its PUBACK, and messages the outbox could not
store go out at their place in the order. paho's side is a recording stand-in here; the real broker path is
in test_outbox.py and test_storage_faults.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

from monitor.publishing.drain import OutboxDrain
from monitor.publishing.message import Message
from monitor.publishing.outbox import Outbox


class RecordingClient:
    """paho's publish(): records what was handed over and gives each a mid; ``refuse`` makes it say no."""

    def __init__(self):
        self.handed: list[tuple[int, str, str]] = []
        self.refuse = False

    def publish(self, topic, payload, qos=0, retain=False):
        if self.refuse:
            return SimpleNamespace(rc=7, mid=0)  # MQTT_ERR_CONN_LOST-like: not accepted
        mid = len(self.handed) + 1
        self.handed.append((mid, topic, payload))
        return SimpleNamespace(rc=0, mid=mid)


def event(n: int) -> str:
    return json.dumps({"camera": "cam", "epoch": 1, "seq": n})


def test_a_row_stays_in_the_outbox_until_its_puback(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    client = RecordingClient()
    drain = OutboxDrain(outbox, client, inflight=10)
    for n in (1, 2, 3):
        outbox.add("p/cam/events", event(n), 1, False)
    assert drain.pump(connected=True) == 3
    assert outbox.size() == 3, "handed to paho is not delivered: rows stay until the broker acknowledges them"
    assert drain.pump(connected=True) == 0, "each row is handed over once"
    mids = [mid for mid, _, _ in client.handed]
    drain.acknowledged(mids[1])
    drain.pump(connected=True)
    assert [json.loads(m.payload)["seq"] for m in outbox.pending()] == [1, 3]
    drain.acknowledged(mids[0])
    drain.acknowledged(mids[2])
    assert drain.idle() and outbox.size() == 0


def test_nothing_is_handed_over_while_disconnected_or_refused(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    client = RecordingClient()
    drain = OutboxDrain(outbox, client, inflight=10)
    outbox.add("p/cam/events", event(1), 1, False)
    assert drain.pump(connected=False) == 0 and client.handed == []
    client.refuse = True
    assert drain.pump(connected=True) == 0
    client.refuse = False
    assert drain.pump(connected=True) == 1, "a refused row is tried again"
    assert json.loads(client.handed[0][2])["seq"] == 1


def test_held_messages_go_out_in_their_place_in_the_order(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    client = RecordingClient()
    drain = OutboxDrain(outbox, client, inflight=2)  # a small window: the order must hold across pumps
    outbox.add("p/cam/events", event(1), 1, False)
    outbox.add("p/cam/events", event(2), 1, False)
    drain.hold(Message("p/cam/events", event(3), 1, False), outbox.last_id)  # the disk failed for 3 and 4
    drain.hold(Message("p/cam/events", event(4), 1, False), outbox.last_id)
    outbox.add("p/cam/events", event(5), 1, False)  # and works again for 5
    while not drain.idle():
        drain.pump(connected=True)
        for mid, _, _ in client.handed:
            drain.acknowledged(mid)
    assert [json.loads(payload)["seq"] for _, _, payload in client.handed] == [1, 2, 3, 4, 5]
    assert outbox.size() == 0


def test_held_messages_are_bounded_and_the_oldest_dropped_are_counted(tmp_path):
    dropped = []
    drain = OutboxDrain(Outbox(tmp_path / "o.sqlite"), RecordingClient(), inflight=10, held_limit=3,
                        dropped=lambda: dropped.append(1))
    for n in range(1, 6):
        drain.hold(Message("p/cam/events", event(n), 1, False), 0)
    assert len(dropped) == 2 and drain.held == 3
    assert [json.loads(h.message.payload)["seq"] for h in drain.take_held()] == [3, 4, 5]
