"""Safety rules on scripted detection sequences: debounce, cooldown, lifecycle, reviews, stale camera, evidence bound."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.config import CameraConfig, ConfigError, EvidenceConfig, MqttConfig, parse_config
from monitor.evidence import EvidenceStore
from monitor.frame import Boxes, CapturedFrame, FrameResult
from monitor.safety import SafetyEngine

CLASS_NAMES = ["Normal", "Fall"]
LABELS = ["person", "person"]
NORMAL, FALL = 0, 1
ZONES = {
    "lot": {"polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]},
    "yard": {"polygon": [[200, 0], [300, 0], [300, 100], [200, 100]]},
}
IN_LOT = (40, 20, 60, 80)  # tall box, feet at (50, 80): inside the lot
OUTSIDE = (140, 120, 160, 180)
FPS = 10


class RecordingMetrics:
    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.active: dict[tuple[str, str], int] = {}

    def safety_event_started(self, camera: str, rule: str) -> None:
        self.started.append((camera, rule))

    def safety_events_active(self, camera: str, rule: str, n: int) -> None:
        self.active[(camera, rule)] = n


class Scene:
    """An engine for one camera and a stream clock; ``frame`` feeds one scripted frame at 10 fps."""

    def __init__(self, rules: list[dict], evidence: EvidenceStore | None = None, image_shape=(240, 320, 3)):
        camera = CameraConfig.model_validate({"source": "x.mp4", "model": "person", "zones": ZONES, "safety": rules})
        self.metrics = RecordingMetrics()
        self.engine = SafetyEngine("cam", camera, MqttConfig(), CLASS_NAMES, evidence, self.metrics)
        self.messages: list = []
        self.index = 0
        self.rng = np.random.default_rng(0)
        self.shape = image_shape

    @property
    def t(self) -> float:
        return self.index / FPS

    def frame(self, objects=(), detections=None, image: np.ndarray | None = None) -> list[dict]:
        """objects: (xyxy, track_id, class_id, conf); detections default to the objects' boxes."""
        boxes = _boxes(objects)
        dets = _boxes(detections) if detections is not None else Boxes(boxes.xyxy, boxes.conf, boxes.class_id, np.full(len(boxes), -1, np.int64))
        if image is None:
            image = self.rng.integers(60, 200, self.shape, dtype=np.uint8)
        # wall and monotonic clocks run 100x faster than the stream: events must follow the stream's time
        frame = CapturedFrame("cam", self.index, image, 1_700_000_000 + self.t / 100, 5000 + self.t / 100, self.t)
        result = FrameResult(frame, LABELS, detections=dets, objects=boxes)
        out = self.engine.update(result)
        self.messages += out
        self.index += 1
        return [json.loads(m.payload) for m in out if m.topic == "monitor/cam/events"]

    def run(self, seconds: float, objects=(), detections=None, image=None) -> list[dict]:
        events = []
        for _ in range(round(seconds * FPS)):
            events += self.frame(objects, detections, image)
        return events

    def events(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.messages if m.topic == "monitor/cam/events"]

    def active(self) -> dict:
        retained = [m for m in self.messages if m.topic == "monitor/cam/events/active"]
        assert all(m.retain and m.qos == 1 for m in retained)
        return json.loads(retained[-1].payload)


def _boxes(rows) -> Boxes:
    rows = list(rows)
    if not rows:
        return Boxes.empty()
    return Boxes(
        np.array([r[0] for r in rows], np.float32),
        np.array([r[3] for r in rows], np.float32),
        np.array([r[2] for r in rows], np.int32),
        np.array([r[1] for r in rows], np.int64),
    )


def person(box, track, conf=0.8, class_id=NORMAL):
    return (box, track, class_id, conf)


INTRUSION = {"name": "lot_intrusion", "rule": "intrusion", "zones": ["lot"], "classes": ["person"], "min_seconds": 1.0, "clear_seconds": 2.0, "cooldown_s": 10}


# --- intrusion: debounce, lifecycle, cooldown ---------------------------------------------------------


def test_intrusion_shorter_than_min_seconds_raises_nothing():
    scene = Scene([INTRUSION])
    scene.run(1.0, [person(OUTSIDE, 1)])
    scene.run(0.8, [person(IN_LOT, 1)])  # 0.7 s between first and last frame inside
    scene.run(5.0, [person(OUTSIDE, 1)])
    assert scene.events() == []
    assert scene.engine.open_events() == []


def test_intrusion_lifecycle_start_and_end_at_the_right_stream_times():
    scene = Scene([INTRUSION])
    scene.run(1.0, [person(OUTSIDE, 7)])  # t 0.0-0.9
    scene.run(4.0, [person(IN_LOT, 7)])  # t 1.0-4.9 inside
    scene.run(5.0, [person(OUTSIDE, 7)])  # leaves at 5.0
    events = scene.events()
    assert [e["type"] for e in events] == ["start", "end"]
    start, end = events
    assert start["rule"] == "lot_intrusion" and start["kind"] == "intrusion" and start["camera"] == "cam"
    assert start["zone"] == "lot" and start["track_ids"] == [7] and start["status"] == "active"
    assert start["verdict"] == "auto" and start["ambiguous"] is False and start["confidence"] == pytest.approx(0.8)
    assert start["start_s"] == pytest.approx(1.0)  # when the condition began, not when min_seconds passed
    assert start["end"] is None and end["id"] == start["id"]
    assert end["status"] == "ended" and end["end_reason"] == "cleared"
    assert end["end_s"] == pytest.approx(4.9) and end["duration_s"] == pytest.approx(3.9)
    assert start["start"].startswith("2023-11-14T22:13:20.01")  # wall clock of the frame where it began
    assert scene.active() == {"camera": "cam", "count": 0, "events": []}
    assert scene.metrics.started == [("cam", "lot_intrusion")] and scene.metrics.active[("cam", "lot_intrusion")] == 0


def test_intrusion_start_is_published_after_min_seconds_and_listed_active():
    scene = Scene([INTRUSION])
    assert scene.run(0.9, [person(IN_LOT, 1)]) == []  # t 0.0-0.8: not yet
    assert [e["type"] for e in scene.run(0.3, [person(IN_LOT, 1)])] == ["start"]  # at t 1.0
    active = scene.active()
    assert active["count"] == 1 and active["events"][0]["track_ids"] == [1] and active["events"][0]["status"] == "active"
    assert scene.metrics.active[("cam", "lot_intrusion")] == 1


def test_detection_gaps_shorter_than_clear_seconds_do_not_end_the_event():
    scene = Scene([INTRUSION])
    scene.run(2.0, [person(IN_LOT, 1)])
    for _ in range(5):  # the detector misses him for 1.5 s at a time
        scene.run(1.5, [])
        scene.run(0.5, [person(IN_LOT, 1)])
    assert [e["type"] for e in scene.events()] == ["start"]
    scene.run(2.1, [])
    assert [e["type"] for e in scene.events()] == ["start", "end"]


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


def test_cooldown_per_object():
    scene = Scene([INTRUSION])  # cooldown_s 10
    scene.run(2.0, [person(IN_LOT, 1)])
    scene.run(3.0, [person(OUTSIDE, 1)])  # ends (last seen 1.9)
    scene.run(2.0, [person(IN_LOT, 1)])  # back within the cooldown: no new event
    scene.run(3.0, [person(OUTSIDE, 1)])
    assert [e["type"] for e in scene.events()] == ["start", "end"]
    scene.run(2.0, [person(IN_LOT, 2)])  # someone else: a new event at once
    assert [(e["type"], e["track_ids"]) for e in scene.events()][-1] == ("start", [2])
    scene.run(3.0, [])
    scene.run(6.0, [person(OUTSIDE, 1)])  # track 1's cooldown (until 11.9) runs out
    scene.run(2.0, [person(IN_LOT, 1)])
    starts = [e["track_ids"] for e in scene.events() if e["type"] == "start"]
    assert starts == [[1], [2], [1]]


def test_new_tracks_in_an_active_zone_are_separate_per_object_events():
    scene = Scene([INTRUSION])
    scene.run(2.0, [person(IN_LOT, 1)])
    scene.run(2.0, [person(IN_LOT, 1), person((10, 30, 30, 90), 2)])
    assert [(e["type"], e["track_ids"]) for e in scene.events()] == [("start", [1]), ("start", [2])]
    assert scene.active()["count"] == 2


def test_updates_of_a_per_zone_event_whose_tracks_change_every_frame_are_rate_limited():
    scene = Scene([{**INTRUSION, "per": "zone"}])
    scene.run(1.5, [person(IN_LOT, 1)])
    updates_at = []
    for frame in range(3 * FPS):  # a new track id on every frame for 3 s: the event's track set changes each time
        for event in scene.frame([person(IN_LOT, 100 + frame)]):
            if event["type"] == "update":
                updates_at.append(scene.t)
    assert [e["type"] for e in scene.events()].count("start") == 1
    assert 2 <= len(updates_at) <= 4, updates_at  # about one per second of stream time, not one per frame
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(updates_at, updates_at[1:])), updates_at


def test_objects_outside_the_rule_classes_do_not_count():
    scene = Scene([{**INTRUSION, "classes": ["Fall"]}])  # raw model class names work too
    scene.run(3.0, [person(IN_LOT, 1, class_id=NORMAL)])
    assert scene.events() == []
    scene.run(3.0, [person(IN_LOT, 2, class_id=FALL)])
    assert [e["type"] for e in scene.events()] == ["start"]


# --- person down, ambiguity, reviews ---------------------------------------------------------------

DOWN = {"name": "down", "rule": "person_down", "min_seconds": 3, "clear_seconds": 2, "cooldown_s": 60, "ambiguous_conf": [0.3, 0.6], "unreviewed_after_s": 5}
LYING = (50, 150, 150, 190)  # wide box


def test_person_down_sure_fall_detection_starts_after_min_seconds():
    scene = Scene([DOWN])
    scene.run(2.5, [], detections=[person(LYING, -1, 0.8, FALL)])
    assert scene.events() == []
    scene.run(1.0, [], detections=[person(LYING, -1, 0.8, FALL)])
    (start,) = scene.events()
    assert start["type"] == "start" and start["verdict"] == "auto" and start["ambiguous"] is False
    assert start["detail"] == {"cues": ["fall_class"]} and start["start_s"] == 0.0


def test_person_down_ambiguous_waits_for_review_then_starts_unconfirmed():
    scene = Scene([DOWN])
    weak = [person(LYING, -1, 0.45, FALL)]
    scene.run(4.0, [], detections=weak)  # held min_seconds, but only grey-band evidence
    assert scene.events() == []
    (candidate,) = scene.engine.open_events()
    assert candidate.status == "candidate" and candidate.ambiguous and candidate.verdict == "pending"
    assert candidate.image is not None and list(candidate.boxes) == [LYING]
    scene.run(5.0, [], detections=weak)  # unreviewed_after_s 5 after it was due (t 3.0)
    (start,) = scene.events()
    assert start["verdict"] == "unconfirmed" and start["ambiguous"] is True and start["status"] == "active"
    assert start["start_s"] == 0.0


def test_person_down_below_the_band_is_ignored():
    scene = Scene([DOWN])
    scene.run(20.0, [], detections=[person(LYING, -1, 0.2, FALL)])
    assert scene.events() == [] and scene.engine.open_events() == []


def test_review_dismisses_a_candidate_for_good_while_its_condition_lasts():
    scene = Scene([DOWN])
    weak = [person(LYING, -1, 0.45, FALL)]
    scene.run(4.0, [], detections=weak)
    (candidate,) = scene.engine.open_events()
    assert scene.engine.review(candidate.id, real=False, note="a jacket on the grass") == []
    scene.run(30.0, [], detections=weak)  # long past unreviewed_after_s and min_seconds
    assert scene.events() == [] and scene.engine.open_events() == []
    scene.run(3.0, [])  # the jacket is picked up: the record clears, cooldown starts
    scene.run(10.0, [], detections=weak)  # back at the same spot within cooldown_s: still quiet
    assert scene.events() == []


def test_review_confirms_a_candidate_which_starts_confirmed():
    scene = Scene([DOWN])
    weak = [person(LYING, -1, 0.45, FALL)]
    scene.run(1.0, [], detections=weak)
    (candidate,) = scene.engine.open_events()
    assert scene.engine.review(candidate.id, real=True, note="a man lying on the floor") == []  # before min_seconds
    scene.run(2.5, [], detections=weak)
    (start,) = scene.events()
    assert start["verdict"] == "confirmed" and start["ambiguous"] is True
    assert start["reviews"][0]["real"] is True and start["reviews"][0]["source"] == "llm"
    assert start["reviews"][0]["note"] == "a man lying on the floor"


def test_review_of_active_events_publishes_update_then_end():
    scene = Scene([INTRUSION])
    scene.run(2.0, [person(IN_LOT, 1)])
    (event,) = scene.engine.open_events()
    confirmed = scene.engine.review(event.id, real=True, note="yes, inside the tape", source="operator")
    payloads = [json.loads(m.payload) for m in confirmed]
    assert [m.topic for m in confirmed] == ["monitor/cam/events", "monitor/cam/events/active"]
    assert payloads[0]["type"] == "update" and payloads[0]["verdict"] == "confirmed" and payloads[0]["status"] == "active"
    assert payloads[1]["events"][0]["verdict"] == "confirmed"

    dismissed = scene.engine.review(event.id, real=False, note="changed my mind")
    kinds = [(p.get("type"), p.get("verdict"), p.get("status")) for p in map(json.loads, (m.payload for m in dismissed))]
    assert kinds[:2] == [("update", "dismissed", "active"), ("end", "dismissed", "ended")]
    assert json.loads(dismissed[1].payload)["end_reason"] == "dismissed"
    assert json.loads(dismissed[-1].payload)["count"] == 0
    assert [r["source"] for r in json.loads(dismissed[1].payload)["reviews"]] == ["operator", "llm"]
    scene.messages += confirmed + dismissed
    scene.run(10.0, [person(IN_LOT, 1)])  # he is still there: the dismissed condition stays quiet
    assert [e["type"] for e in scene.events()] == ["start", "update", "update", "end"]
    assert scene.engine.review("cam-lot_intrusion-unknown", real=True, note="") == []


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


# --- occupancy and dwell ------------------------------------------------------------------------


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


# --- stale camera -----------------------------------------------------------------------------------

STALE = {"name": "stale", "rule": "stale_camera", "no_frame_s": 3, "min_seconds": 2, "clear_seconds": 1}


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


def test_no_frames_raise_stale_camera_on_tick_and_frames_end_it():
    scene = Scene([STALE])
    scene.run(1.0)
    last_mono = 5000 + 0.9 / 100
    assert scene.engine.tick(now_mono=last_mono + 2.0, now_wall=1_700_000_100) == []
    out = scene.engine.tick(now_mono=last_mono + 3.5, now_wall=1_700_000_101)
    start = json.loads(out[0].payload)
    assert start["type"] == "start" and start["detail"] == {"reason": "no_frame", "silent_s": 3.5}
    assert start["start_s"] == pytest.approx(0.9)  # since the last frame
    assert json.loads(out[1].payload)["count"] == 1
    scene.messages += out
    assert scene.engine.tick(now_mono=last_mono + 30, now_wall=1_700_000_130) == []  # still down: nothing new to say
    scene.run(2.0)  # frames again
    assert [e["type"] for e in scene.events()][-1] == "end"


def test_close_ends_active_events_and_empties_the_active_set():
    scene = Scene([INTRUSION])
    scene.run(2.0, [person(IN_LOT, 1)])
    out = scene.engine.close("shutdown")
    end = json.loads(out[0].payload)
    assert end["type"] == "end" and end["end_reason"] == "shutdown"
    assert json.loads(out[-1].payload)["count"] == 0
    assert scene.engine.initial_messages()[0].retain


# --- evidence -------------------------------------------------------------------------------------


def test_snapshot_is_written_at_start_with_its_path_in_the_event(tmp_path):
    store = EvidenceStore(EvidenceConfig(dir=tmp_path / "evidence", min_free_mb=0))
    scene = Scene([INTRUSION], evidence=store)
    scene.run(2.0, [person(IN_LOT, 1)])
    (start,) = scene.events()
    path = Path(start["snapshot"])
    assert path.parent == tmp_path / "evidence" and path.name == f"{start['id']}.jpg"
    image = cv2.imread(str(path))
    assert image.shape == (240, 320, 3)


def test_evidence_directory_stays_under_its_size_bound(tmp_path):
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, max_mb=1.0, min_free_mb=0, jpeg_quality=95))
    rng = np.random.default_rng(1)
    for i in range(120):  # ~60 KB each of incompressible noise: ~7 MB written
        assert store.save(f"event-{i:03d}", rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)) is not None
        on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.jpg"))
        assert on_disk <= 1024 * 1024
    names = sorted(p.name for p in tmp_path.glob("*.jpg"))
    assert names[-1] == "event-119.jpg" and "event-000.jpg" not in names and len(names) >= 10
    assert store.total_bytes() == sum(p.stat().st_size for p in tmp_path.glob("*.jpg"))


def test_evidence_older_than_max_age_is_deleted(tmp_path):
    old = tmp_path / "from-last-year.jpg"
    old.write_bytes(b"x" * 100)
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    keep = tmp_path / "notes.txt"  # not ours: never touched
    keep.write_text("hello")
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, max_age_days=30, min_free_mb=0))
    store.prune()
    assert not old.exists() and keep.exists()
    assert store.save("new", np.zeros((20, 20, 3), np.uint8)).exists()


def test_evidence_skips_writing_when_the_disk_is_nearly_full(tmp_path):
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, min_free_mb=1e9))
    assert store.save("big", np.zeros((20, 20, 3), np.uint8)) is None
    assert list(tmp_path.iterdir()) == []


# --- config -------------------------------------------------------------------------------------


def _config_with(rules: list[dict]) -> dict:
    return {"models": {"m": {"path": "m.pt"}}, "cameras": {"c": {"source": "x.mp4", "model": "m", "zones": ZONES, "safety": rules}}}


@pytest.mark.parametrize(
    "rules, message",
    [
        ([{"rule": "intrusion", "zones": ["dock"]}], "cameras.c.safety.0.zones: unknown zone 'dock' (defined: lot, yard)"),
        ([{"rule": "intrusion", "zones": ["lot"]}, {"rule": "intrusion", "zones": ["yard"]}], "cameras.c.safety.1.name: duplicate rule name 'intrusion'"),
        ([{"rule": "occupancy", "zones": ["lot"], "above": 1, "below": 3}], "give exactly one of above, below"),
        ([{"rule": "person_down", "ambiguous_conf": [0.7, 0.2]}], "ambiguous_conf: needs 0 <= lo < hi <= 1"),
        ([{"rule": "teleport"}], "cameras.c.safety.0: Input tag 'teleport'"),
        ([{"rule": "dwell", "zones": ["lot"]}], "max_seconds: required key is missing"),
    ],
)
def test_bad_rules_are_named_by_their_key_path(rules, message):
    with pytest.raises(ConfigError) as error:
        parse_config(_config_with(rules))
    assert message in str(error.value)


def test_bundled_config_has_the_street_rules():
    from monitor.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "config.yaml")
    rules = {rule.key: rule.rule for rule in config.cameras["street"].safety}
    assert rules == {"lot_intrusion": "intrusion", "person_down": "person_down", "crowding": "occupancy", "lawn_loitering": "dwell", "camera_stale": "stale_camera"}
    assert config.evidence.dir is not None and config.evidence.max_mb > 0


def test_a_candidate_that_never_started_leaves_no_cooldown():
    scene = Scene([INTRUSION])
    scene.run(0.5, [person(IN_LOT, 1)])  # a brief touch, under min_seconds
    scene.run(2.5, [person(OUTSIDE, 1)])
    scene.run(2.0, [person(IN_LOT, 1)])  # then really in, well within cooldown_s
    (start,) = scene.events()
    assert start["type"] == "start" and start["start_s"] == pytest.approx(3.0)


def test_rule_classes_are_checked_against_the_model():
    from monitor.config import check_model_classes

    config = parse_config(_config_with([{"rule": "intrusion", "zones": ["lot"], "classes": ["person", "Fall", "forklift"]}, {"rule": "person_down", "fall_classes": ["Lying"]}]))
    config = config.model_copy(update={"models": {"m": config.models["m"].model_copy(update={"aliases": {"Normal": "person", "Fall": "person"}})}})
    with pytest.raises(ConfigError) as error:
        check_model_classes(config, {"m": CLASS_NAMES})
    assert error.value.problems == [
        "cameras.c.safety.0.classes: unknown class 'forklift' (known: person, Normal, Fall)",
        "cameras.c.safety.1.fall_classes: unknown class 'Lying' (known: Normal, Fall)",
    ]
