"""A safety event's record: what it accumulates, its MQTT payload, what an update is for, the open view, the shadow."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from monitor.safety.events import OpenEvent, SafetyEvent
from monitor.safety.rules import Observation

WALL = 1_700_000_000.0
BOX = (10.0, 20.0, 30.0, 80.0)


def event(**changes) -> SafetyEvent:
    fields = dict(
        id="cam-lot-1", rule="lot_intrusion", kind="intrusion", camera="cam", key=("track", 7), zone="lot",
        first_seen=12.0, first_wall=WALL, last_seen=15.5, last_wall=WALL + 3.5,
    )
    return SafetyEvent(**{**fields, **changes})


def observation(track_ids=(7,), confidence=0.8, ambiguous=False, detail=None) -> Observation:
    return Observation(("track", 7), "lot", tuple(track_ids), confidence, ambiguous, [BOX], detail or {})


def test_payload_of_an_active_event():
    e = event(track_ids=[7], confidence=0.81234, ambiguous=False, status="active", detail={"count": 3}, snapshot="/ev/x.jpg",
              boxes=[(10.04, 20.0, 30.0, 80.06)])
    payload = e.payload("start", epoch=1_700_000_000_000, seq=4)
    assert list(payload) == [
        "type", "epoch", "seq", "id", "rule", "kind", "camera", "zone", "track_ids", "status", "verdict", "ambiguous", "confidence",
        "start", "start_s", "last_seen", "end", "end_s", "end_reason", "duration_s", "updates", "snapshot", "boxes", "detail",
        "reviews",
    ]
    assert payload["boxes"] == [[10.0, 20.0, 30.0, 80.1]]  # where the evidence is, in image pixels
    assert payload["type"] == "start" and (payload["epoch"], payload["seq"]) == (1_700_000_000_000, 4) and payload["id"] == "cam-lot-1"
    assert payload["confidence"] == 0.812 and payload["verdict"] == "auto" and payload["status"] == "active"
    assert payload["start"] == "2023-11-14T22:13:20.000Z" and payload["last_seen"] == "2023-11-14T22:13:23.500Z"
    assert payload["start_s"] == 12.0 and payload["duration_s"] == 3.5  # so far: until last seen
    assert payload["end"] is None and payload["end_s"] is None and payload["end_reason"] is None
    assert payload["snapshot"] == "/ev/x.jpg" and payload["detail"] == {"count": 3} and payload["reviews"] == []


def test_payload_of_an_ended_event_measures_to_its_end():
    e = event(status="ended", end_s=20.25, end_wall=WALL + 8.25, end_reason="cleared")
    payload = e.payload("end", epoch=1_700_000_000_000, seq=5)
    assert payload["end"] == "2023-11-14T22:13:28.250Z" and payload["end_s"] == 20.25
    assert payload["duration_s"] == 8.25 and payload["end_reason"] == "cleared"


def test_observe_accumulates_tracks_and_confidence_and_stays_ambiguous_only_while_every_cue_is():
    e = event(last_seen=12.0, last_wall=WALL)
    image = np.zeros((4, 4, 3), np.uint8)
    e.observe(observation((7, -1), 0.6, ambiguous=True), 13.0, WALL + 1, image)
    e.observe(observation((9,), 0.5, ambiguous=False), 14.0, WALL + 2, None)
    assert e.track_ids == [7, 9]  # untracked (-1) boxes are not listed
    assert e.confidence == 0.6 and e.ambiguous is False
    assert (e.last_seen, e.last_wall) == (14.0, WALL + 2)
    assert e.image is image  # a frame without an image keeps the last one


def test_state_changes_for_tracks_verdict_and_stable_detail_but_not_for_drifting_measures():
    e = event(track_ids=[7], detail={"cues": ["fall_class"], "dwell_s": 5.0})
    before = e.state()
    e.detail = {"cues": ["fall_class"], "dwell_s": 9.5, "silent_s": 3.0, "brightness": 4.0, "change": 0.1}
    assert e.state() == before
    e.detail = {"cues": ["fall_class", "turned_wide"]}
    assert e.state() != before
    same = {"track_ids": [7], "detail": {"cues": ["fall_class"]}}
    for change in ({"track_ids": [7, 8]}, {"verdict": "confirmed"}, {"ambiguous": False}):
        assert event(**{**same, **change}).state() != event(**same).state(), change


def test_open_view_is_a_frozen_copy():
    image = np.zeros((4, 4, 3), np.uint8)
    e = event(track_ids=[7], boxes=[BOX], image=image, status="candidate", verdict="pending")
    view = e.open_view()
    assert view == OpenEvent("cam-lot-1", "lot_intrusion", "intrusion", "lot", (7,), True, "candidate", "pending", (BOX,))
    assert view.image is image
    e.track_ids.append(8)
    e.boxes.append(BOX)
    assert view.track_ids == (7,) and view.boxes == (BOX,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.status = "active"


def test_dismissed_shadow_is_a_silent_record_of_the_same_condition():
    e = event(track_ids=[7], boxes=[BOX], status="active", verdict="dismissed", confidence=0.9, snapshot="/ev/x.jpg",
              reviews=[{"real": False}], end_reason="dismissed")
    shadow = e.dismissed_shadow()
    assert (shadow.id, shadow.key, shadow.zone, shadow.first_seen, shadow.last_seen) == ("cam-lot-1", ("track", 7), "lot", 12.0, 15.5)
    assert shadow.status == "candidate" and shadow.verdict == "dismissed" and shadow.boxes == [BOX]
    assert shadow.track_ids == [] and shadow.snapshot is None and shadow.reviews == [] and shadow.end_reason is None
