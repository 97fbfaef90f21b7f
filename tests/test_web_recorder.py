"""The recorder: what the publisher was given, per camera, by topic, bounded."""

from __future__ import annotations

import json

from monitor.publishing.message import Message
from monitor.web.recorder import KEEP_ESCALATIONS, KEEP_EVENTS, Recorder


def message(topic: str, payload: object) -> Message:
    return Message(topic, payload if isinstance(payload, str) else json.dumps(payload), 1, False)


def test_each_topic_lands_in_its_place_and_others_are_ignored():
    recorder = Recorder("site/a", ["street", "dock"])
    recorder.message(message("site/a/street/counts", {"seq": 1}))
    recorder.message(message("site/a/street/counts", {"seq": 2}))
    recorder.message(message("site/a/street/events/active", {"count": 0, "events": []}))
    recorder.message(message("site/a/street/events", {"id": "e1", "type": "start"}))
    recorder.message(message("site/a/street/escalations", {"frame": 4}))
    for topic in ("site/a/street/lot/person", "site/a/status", "other/street/counts", "site/a/gate/counts",
                  "homeassistant/sensor/x/config"):
        recorder.message(message(topic, {"seq": 99}))
    recorder.message(message("site/a/street/counts", "not json"))
    recorder.message(message("site/a/street/counts", "[1, 2]"))
    street, dock = recorder.view("street"), recorder.view("dock")
    assert street.counts == {"seq": 2} and street.active == {"count": 0, "events": []}
    assert street.events == [{"id": "e1", "type": "start"}] and street.escalations == [{"frame": 4}]
    assert (dock.counts, dock.active, dock.events, dock.escalations) == (None, None, [], [])


def test_the_history_is_bounded_and_newest_first():
    recorder = Recorder("site/a", ["street"])
    for i in range(KEEP_EVENTS + 30):
        recorder.message(message("site/a/street/events", {"id": f"e{i}", "type": "start"}))
    for i in range(KEEP_ESCALATIONS + 30):
        recorder.message(message("site/a/street/escalations", {"frame": i}))
    recorder.message(message("site/a/street/events", {"id": "e40", "type": "end"}))  # an update: its latest payload
    view = recorder.view("street")
    assert len(view.events) == KEEP_EVENTS and len(view.escalations) == KEEP_ESCALATIONS
    assert view.events[0] == {"id": "e40", "type": "end"} and view.events[-1]["id"] == "e30"
    assert [e["id"] for e in view.events].count("e40") == 1
    assert view.escalations[0] == {"frame": KEEP_ESCALATIONS + 29} and view.escalations[-1] == {"frame": 30}
