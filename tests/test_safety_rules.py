"""Safety rules: what each kind of rule observes (intrusion per zone and by class, person down from a fall class
or a track turning wide, occupancy above and below, dwell, a frozen or black stream), driven through the engine."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from safety_support import DOWN, FALL, IN_LOT, INTRUSION, LYING, NORMAL, OUTSIDE, STALE, Scene, person


def test_per_zone_intrusion_is_one_event_across_track_switches_and_lists_every_intruder():
    scene = Scene([{**INTRUSION, "per": "zone"}])
    scene.run(2.0, [person(IN_LOT, 1)])
    scene.run(2.0, [person(IN_LOT, 4)])  # the tracker lost him and gave him a new id
    scene.run(1.0, [person(IN_LOT, 4), person(IN_LOT, 5)])  # and a second person joins
    scene.run(1.0, [person(IN_LOT, -1)])  # an untracked box still holds the zone
    scene.run(3.0, [person(OUTSIDE, 4)])
    events = scene.events()
    assert [e["type"] for e in events if e["type"] != "update"] == ["start", "end"]
    assert len({e["id"] for e in events}) == 1
    assert events[0]["track_ids"] == [1] and events[0]["start_s"] == pytest.approx(0.0)
    assert events[-1]["track_ids"] == [1, 4, 5]  # everyone who was in the zone during the event
    assert events[-1]["end_s"] == pytest.approx(5.9)


def test_objects_outside_the_rule_classes_do_not_count():
    scene = Scene([{**INTRUSION, "classes": ["Fall"]}])  # raw model class names work too
    scene.run(3.0, [person(IN_LOT, 1, class_id=NORMAL)])
    assert scene.events() == []
    scene.run(3.0, [person(IN_LOT, 2, class_id=FALL)])
    assert [e["type"] for e in scene.events()] == ["start"]


def test_person_down_sure_fall_detection_starts_after_min_seconds():
    scene = Scene([DOWN])
    scene.run(2.5, [], detections=[person(LYING, -1, 0.8, FALL)])
    assert scene.events() == []
    scene.run(1.0, [], detections=[person(LYING, -1, 0.8, FALL)])
    (start,) = scene.events()
    assert start["type"] == "start" and start["verdict"] == "auto" and start["ambiguous"] is False
    assert start["detail"] == {"cues": ["fall_class"]} and start["start_s"] == 0.0


def test_person_down_without_zones_says_which_camera_zone_it_is_in_and_where_the_box_is():
    scene = Scene([DOWN])  # the rule watches the whole image
    in_the_lot = (20, 60, 90, 90)  # lying, feet at (55, 90): inside the camera's lot
    scene.run(3.5, [], detections=[person(in_the_lot, -1, 0.8, FALL), person(LYING, -1, 0.8, FALL)])
    starts = {e["zone"]: e for e in scene.events() if e["type"] == "start"}
    assert set(starts) == {"lot", None}  # LYING's feet are in no zone
    assert starts["lot"]["boxes"] == [list(map(float, in_the_lot))] and starts[None]["boxes"] == [list(map(float, LYING))]


def test_person_down_below_the_band_is_ignored():
    scene = Scene([DOWN])
    scene.run(20.0, [], detections=[person(LYING, -1, 0.2, FALL)])
    assert scene.events() == [] and scene.engine.open_events() == []


def test_person_down_from_a_track_turning_wide_is_ambiguous():
    scene = Scene([{**DOWN, "unreviewed_after_s": 0}])
    standing, lying = (100, 100, 130, 190), (80, 160, 160, 190)
    scene.run(2.0, [person(standing, 4)])
    scene.run(4.0, [person(lying, 4)])
    (start,) = scene.events()
    assert start["detail"] == {"cues": ["turned_wide"]} and start["track_ids"] == [4]
    assert start["ambiguous"] is True and start["verdict"] == "unconfirmed"
    assert start["start_s"] == pytest.approx(2.0)


def test_a_box_that_was_always_wide_is_not_a_fall():
    scene = Scene([{**DOWN, "unreviewed_after_s": 0}])
    scene.run(10.0, [person((80, 160, 160, 190), 4)])  # e.g. a car or a bench seen as a person
    assert scene.events() == []


def test_sure_and_weak_cues_on_the_same_spot_are_one_event():
    scene = Scene([DOWN])
    standing, lying = (100, 100, 130, 190), (80, 150, 160, 190)
    scene.run(1.0, [person(standing, 4)])
    scene.run(4.0, [person(lying, 4)], detections=[person(lying, -1, 0.7, FALL)])
    (start,) = scene.events()
    assert start["detail"] == {"cues": ["fall_class", "turned_wide"]} and start["track_ids"] == [4]
    assert start["ambiguous"] is False and start["verdict"] == "auto"


def test_occupancy_above():
    rule = {"name": "crowd", "rule": "occupancy", "zones": ["lot"], "above": 2, "min_seconds": 1, "clear_seconds": 1}
    scene = Scene([rule])
    two = [person(IN_LOT, 1), person((10, 20, 30, 80), 2)]
    three = two + [person((70, 20, 90, 80), 3)]
    scene.run(3.0, two)
    assert scene.events() == []
    scene.run(3.0, three)
    scene.run(3.0, two)
    start, end = scene.events()
    assert start["detail"] == {"count": 3, "above": 2} and start["zone"] == "lot" and start["track_ids"] == [1, 2, 3]
    assert start["start_s"] == pytest.approx(3.0) and end["end_s"] == pytest.approx(5.9)


def test_occupancy_below_for_stock_low():
    rule = {"name": "ice_low", "rule": "occupancy", "zones": ["yard"], "below": 2, "min_seconds": 2, "clear_seconds": 1, "classes": ["person"]}
    scene = Scene([rule])
    bags = [person((210, 20, 230, 80), 1), person((250, 20, 270, 80), 2)]
    scene.run(3.0, bags)
    scene.run(3.0, bags[:1])
    (start,) = scene.events()
    assert start["detail"] == {"count": 1, "below": 2} and start["start_s"] == pytest.approx(3.0)


def test_dwell_starts_when_the_stay_passes_max_seconds():
    rule = {"name": "loiter", "rule": "dwell", "zones": ["lot"], "max_seconds": 5, "clear_seconds": 1, "cooldown_s": 100}
    scene = Scene([rule])
    scene.run(4.0, [person(IN_LOT, 9)])
    scene.run(0.5, [])  # a short miss does not reset the stay
    scene.run(3.0, [person(IN_LOT, 9)])
    (start,) = scene.events()
    assert start["start_s"] == pytest.approx(5.0) and start["detail"]["dwell_s"] >= 5.0
    scene.run(2.0, [])
    scene.run(8.0, [person(IN_LOT, 9)])  # back, stays again: within cooldown
    assert [e["type"] for e in scene.events()] == ["start", "end"]


def _first_clip_frame() -> np.ndarray:
    capture = cv2.VideoCapture(str(Path(__file__).resolve().parent.parent / "data" / "vtest.avi"))
    ok, image = capture.read()
    capture.release()
    assert ok, "data/vtest.avi missing: run scripts/setup.sh"
    return image


def test_frozen_stream_raises_stale_camera_and_clears_when_it_moves_again():
    scene = Scene([STALE], image_shape=(576, 768, 3))
    scene.run(1.0)  # noise: moving
    frozen = _first_clip_frame()
    scene.run(2.5, image=frozen)
    (start,) = scene.events()
    assert start["kind"] == "stale_camera" and start["detail"]["reason"] == "frozen" and start["zone"] is None
    assert start["start_s"] == pytest.approx(1.1)  # the second identical frame
    scene.run(2.0)
    assert [e["type"] for e in scene.events()] == ["start", "end"]


def test_black_stream_raises_stale_camera():
    scene = Scene([STALE])
    scene.run(1.0)
    noisy_black = scene.rng.integers(0, 6, (240, 320, 3), dtype=np.uint8)
    scene.run(3.0, image=noisy_black)  # changes every frame (sensor noise), but black
    (start,) = scene.events()
    assert start["detail"]["reason"] == "black" and start["detail"]["brightness"] < 12
