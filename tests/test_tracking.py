"""Tracking and zones: polygon membership by anchor point, line crossings, track ids over a dropped frame."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.config import CameraConfig, LineConfig, ModelConfig
from monitor.detection import ClassThresholds
from monitor.frame import Boxes
from monitor.geometry import anchor_points, points_in_polygon
from monitor.tracking import LOST_TRACK_FRAMES, LineCounter, ObjectTracker, ZoneMap

SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
L_SHAPE = np.array([[0, 0], [10, 0], [10, 4], [4, 4], [4, 10], [0, 10]], np.float64)  # concave


def boxes(xyxy: list[list[float]], track_ids: list[int] | None = None, conf: float = 0.9, class_id: int = 0) -> Boxes:
    n = len(xyxy)
    return Boxes(
        np.asarray(xyxy, np.float32).reshape(n, 4),
        np.full(n, conf, np.float32),
        np.full(n, class_id, np.int32),
        np.asarray(track_ids if track_ids is not None else [-1] * n, np.int64),
    )


def box_at(x: float, y: float, w: float = 20, h: float = 40) -> list[float]:
    """A box whose bottom centre (feet) is at (x, y)."""
    return [x - w / 2, y - h, x + w / 2, y]


class TestPointsInPolygon:
    def test_square(self):
        points = np.array([[5, 5], [0.5, 9.5], [11, 5], [-1, 5], [5, -0.1], [5, 10.5]])
        assert points_in_polygon(points, SQUARE).tolist() == [True, True, False, False, False, False]

    def test_concave_polygon_excludes_its_notch(self):
        points = np.array([[2, 2], [8, 2], [2, 8], [8, 8], [6, 6]])
        assert points_in_polygon(points, L_SHAPE).tolist() == [True, True, True, False, False]

    def test_no_points(self):
        assert points_in_polygon(np.zeros((0, 2)), SQUARE).tolist() == []


def test_anchor_points_bottom_centre_and_centre():
    xyxy = np.array([[10, 20, 30, 60]], np.float32)
    assert anchor_points(xyxy, "bottom_center").tolist() == [[20, 60]]
    assert anchor_points(xyxy, "center").tolist() == [[20, 40]]


def camera(**overrides) -> CameraConfig:
    data = dict(
        source="clip.avi",
        model="m",
        zones={
            "road": {"polygon": [[0, 100], [200, 100], [200, 200], [0, 200]]},
            "lawn": {"polygon": [[0, 200], [200, 200], [200, 300], [0, 300]], "classes": ["person"]},
        },
    )
    data.update(overrides)
    return CameraConfig.model_validate(data)


class TestZoneMap:
    def test_a_box_is_in_the_zone_of_its_bottom_centre(self):
        # a tall person standing on the road with the head over the lawn's top edge still counts on the road
        objects = boxes([box_at(50, 150, h=120), box_at(50, 250), box_at(150, 199.5, h=10), box_at(50, 350)])
        assert ZoneMap(camera()).assign(objects, ["person"] * 4) == [("road",), ("lawn",), ("road",), ()]

    def test_centre_anchor(self):
        objects = boxes([box_at(50, 250, h=120)])  # feet on the lawn, centre (y 190) on the road
        assert ZoneMap(camera()).assign(objects, ["person"]) == [("lawn",)]
        assert ZoneMap(camera(anchor="center")).assign(objects, ["person"]) == [("road",)]

    def test_zone_classes_limit_what_counts_there(self):
        objects = boxes([box_at(50, 150), box_at(50, 250)])
        assert ZoneMap(camera()).assign(objects, ["car", "car"]) == [("road",), ()]

    def test_overlapping_zones_both_count(self):
        zones = {"all": {"polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}, "left": {"polygon": [[0, 0], [50, 0], [50, 100], [0, 100]]}}
        assert ZoneMap(camera(zones=zones)).assign(boxes([box_at(25, 90)]), ["person"]) == [("all", "left")]

    def test_no_zones_or_no_objects(self):
        assert ZoneMap(camera(zones={})).assign(boxes([box_at(5, 5)]), ["person"]) == [()]
        assert ZoneMap(camera()).assign(Boxes.empty(), []) == []


def line(points, classes=None) -> dict[str, LineConfig]:
    return {"gate": LineConfig(points=points, classes=classes)}


def walk(counter: LineCounter, track_path: dict[int, list[tuple[float, float]]], labels: dict[int, str] | None = None):
    """Feed one frame per step; each track id walks its list of feet positions."""
    steps = max(len(p) for p in track_path.values())
    totals = None
    for step in range(steps):
        ids = [t for t, path in track_path.items() if step < len(path)]
        objects = boxes([box_at(*track_path[t][step]) for t in ids], ids)
        totals = counter.update(objects, [(labels or {}).get(t, "person") for t in ids])
    return totals


class TestLineCounter:
    # a line drawn from (100, 0) down to (100, 200): standing at its start looking along it, "in" is a
    # crossing from your left to your right, i.e. here from the image's right to its left
    def test_in_is_from_the_left_of_the_line_to_its_right(self):
        counter = LineCounter(line(((100, 0), (100, 200))), "bottom_center")
        assert walk(counter, {1: [(130, 100), (110, 100), (90, 100), (60, 100)]}) == {"gate": {"in": 1, "out": 0}}
        assert walk(counter, {1: [(80, 100), (120, 100)]}) == {"gate": {"in": 1, "out": 1}}

    def test_reversing_the_line_swaps_in_and_out(self):
        counter = LineCounter(line(((100, 200), (100, 0))), "bottom_center")
        assert walk(counter, {1: [(130, 100), (60, 100)]}) == {"gate": {"in": 0, "out": 1}}

    def test_two_people_in_opposite_directions(self):
        counter = LineCounter(line(((100, 0), (100, 200))), "bottom_center")
        totals = walk(counter, {1: [(90, 50), (110, 50)], 2: [(120, 150), (105, 150), (95, 150)]})
        assert totals == {"gate": {"in": 1, "out": 1}}

    def test_passing_beyond_the_segment_ends_does_not_count(self):
        counter = LineCounter(line(((100, 0), (100, 200))), "bottom_center")
        assert walk(counter, {1: [(80, 260), (120, 260)]}) == {"gate": {"in": 0, "out": 0}}

    def test_untracked_boxes_and_other_classes_do_not_count(self):
        counter = LineCounter(line(((100, 0), (100, 200)), classes=["cart"]), "bottom_center")
        assert walk(counter, {1: [(80, 100), (120, 100)]}, labels={1: "person"}) == {"gate": {"in": 0, "out": 0}}
        untracked = LineCounter(line(((100, 0), (100, 200))), "bottom_center")
        for x in (80, 120):
            untracked.update(boxes([box_at(x, 100)]), ["person"])
        assert untracked.update(Boxes.empty(), []) == {"gate": {"in": 0, "out": 0}}

    def test_a_track_lost_for_too_long_is_forgotten(self):
        counter = LineCounter(line(((100, 0), (100, 200))), "bottom_center")
        counter.update(boxes([box_at(80, 100)], [7]), ["person"])
        for _ in range(LOST_TRACK_FRAMES + 1):
            counter.update(Boxes.empty(), [])
        assert counter.update(boxes([box_at(120, 100)], [7]), ["person"]) == {"gate": {"in": 0, "out": 0}}


@pytest.fixture
def thresholds() -> ClassThresholds:
    model = ModelConfig(path="unused.pt", conf=0.35, class_conf={"Fall": 0.6})
    return ClassThresholds.build(model, ["Normal", "Fall"])


IMAGE = np.zeros((480, 640, 3), np.uint8)


def two_people(step: int, conf: float = 0.9) -> Boxes:
    return boxes([box_at(100 + 5 * step, 300, 30, 80), box_at(400 - 5 * step, 350, 30, 80)], conf=conf)


class TestObjectTracker:
    def test_ids_survive_a_dropped_frame(self, thresholds):
        tracker = ObjectTracker("bytetrack", thresholds)
        ids_before = None
        for step in range(5):
            objects = tracker.update(two_people(step), IMAGE)
            assert len(objects) == 2
            ids_before = sorted(objects.track_id.tolist())
        assert len(tracker.update(Boxes.empty(), IMAGE)) == 0  # the detector missed both people in this frame
        objects = tracker.update(two_people(6), IMAGE)
        assert sorted(objects.track_id.tolist()) == ids_before
        assert all(t >= 0 for t in ids_before) and len(set(ids_before)) == 2

    def test_boxes_follow_their_track(self, thresholds):
        tracker = ObjectTracker("bytetrack", thresholds)
        for step in range(4):
            objects = tracker.update(two_people(step), IMAGE)
        left = objects.xyxy[:, 0].argmin()
        np.testing.assert_allclose(objects.xyxy[left], box_at(115, 300, 30, 80), atol=3)

    def test_a_weak_box_keeps_a_track_alive_but_never_starts_one(self, thresholds):
        tracker = ObjectTracker("bytetrack", thresholds)
        for step in range(3):
            tracker.update(two_people(step), IMAGE)
        weak = tracker.update(two_people(3, conf=0.2), IMAGE)  # below conf 0.35, above the tracker's floor
        assert len(weak) == 2
        fresh = ObjectTracker("bytetrack", thresholds)
        for step in range(4):
            assert len(fresh.update(two_people(step, conf=0.2), IMAGE)) == 0

    def test_class_thresholds_apply(self, thresholds):
        """A Fall box at 0.5 (the jacket on the lawn) is below its 0.6 threshold: never counted; a Normal box at 0.5 is."""
        for kind in ("bytetrack", "none"):
            tracker = ObjectTracker(kind, thresholds)
            for _ in range(5):
                objects = tracker.update(boxes([box_at(100, 500, 60, 30)], conf=0.5, class_id=1), IMAGE)
            assert len(objects) == 0, kind
        tracker = ObjectTracker("bytetrack", thresholds)
        assert len(tracker.update(boxes([box_at(300, 300)], conf=0.5, class_id=0), IMAGE)) == 1

    def test_a_new_object_counts_at_once_and_gets_its_id_when_confirmed(self, thresholds):
        tracker = ObjectTracker("bytetrack", thresholds)
        for step in range(3):
            tracker.update(two_people(step), IMAGE)
        newcomer = box_at(250, 450, 30, 80)
        first = tracker.update(two_people(3).concat(boxes([newcomer])), IMAGE)
        assert len(first) == 3 and sorted(first.track_id.tolist())[0] == -1  # ByteTrack confirms it next frame
        second = tracker.update(two_people(4).concat(boxes([newcomer])), IMAGE)
        assert len(second) == 3 and (second.track_id >= 0).all()

    def test_objects_still_count_when_frames_are_far_apart(self, thresholds):
        """At 1 processed frame a second people move further than a box width: no IoU match, yet every person counts."""
        tracker = ObjectTracker("bytetrack", thresholds)
        for step in range(8):
            jumping = boxes([box_at(100 + 60 * step, 300, 30, 80), box_at(600 - 60 * step, 380, 30, 80)])
            assert len(tracker.update(jumping, IMAGE)) == 2, step

    def test_without_tracker_boxes_pass_untracked(self, thresholds):
        objects = ObjectTracker("none", thresholds).update(two_people(0), IMAGE)
        assert len(objects) == 2 and objects.track_id.tolist() == [-1, -1]

    def test_botsort_keeps_ids_too(self, thresholds):
        tracker = ObjectTracker("botsort", thresholds)
        for step in range(5):
            ids = sorted(tracker.update(two_people(step), IMAGE).track_id.tolist())
        tracker.update(Boxes.empty(), IMAGE)
        assert sorted(tracker.update(two_people(6), IMAGE).track_id.tolist()) == ids
