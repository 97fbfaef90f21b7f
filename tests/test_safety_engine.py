"""The safety engine on scripted detection sequences: debounce, the lifecycle at stream times, cooldown, updates,
reviews, ticks without frames, close, and the evidence snapshot of a start."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from safety_support import DOWN, FALL, FPS, IN_LOT, INTRUSION, LYING, OUTSIDE, STALE, Scene, person

from monitor.config import EvidenceConfig
from monitor.evidence import EvidenceStore


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
    assert {k: v for k, v in scene.active().items() if k not in ("epoch", "seq", "ts")} == {"camera": "cam", "count": 0, "events": []}
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


# --- one subject, one event: what the tracker does not confirm or renames is not a new intruder --------------

SAME_MAN_UNTRACKED = (42, 24, 61, 80)  # a second, slightly shifted box on the tracked man (the tracker left it out)


def starts(scene: Scene) -> list[list[int]]:
    return [e["track_ids"] for e in scene.events() if e["type"] == "start"]


def test_an_untracked_box_on_a_tracked_intruder_is_the_same_person():
    scene = Scene([INTRUSION])
    scene.run(3.0, [person(IN_LOT, 1), person(SAME_MAN_UNTRACKED, -1, conf=0.5)])
    scene.run(3.0, [])
    assert starts(scene) == [[1]]  # not a second event with track_ids []
    assert scene.metrics.started == [("cam", "lot_intrusion")]


def test_a_one_frame_gap_and_a_new_track_id_continue_the_event():
    """The tracker loses the man for a frame and gives him a new id: the same event goes on, listing both ids."""
    scene = Scene([INTRUSION])
    scene.run(2.0, [person(IN_LOT, 5)])
    scene.frame([])
    for step in range(30):  # he walks on, now as track 9
        scene.frame([person((40 + step * 0.5, 20, 60 + step * 0.5, 80), 9)])
    scene.run(2.5, [])
    assert [(e["type"], e["track_ids"]) for e in scene.events()] == [("start", [5]), ("update", [5, 9]), ("end", [5, 9])]


def test_an_object_seen_untracked_then_tracked_is_one_event():
    scene = Scene([INTRUSION])
    scene.run(1.5, [person(IN_LOT, -1)])  # not yet confirmed by the tracker: already an event after min_seconds
    scene.run(2.0, [person(IN_LOT, 3)])
    scene.run(2.5, [])
    assert len(starts(scene)) == 1 and scene.events()[-1]["track_ids"] == [3]


def test_two_people_are_two_events_even_when_one_first_stood_where_the_other_was():
    scene = Scene([INTRUSION])
    scene.run(2.0, [person(IN_LOT, 1)])
    scene.frame([person(IN_LOT, 2)])  # 1 is hidden behind 2, who stands where he was: 2 continues his event...
    scene.run(2.0, [person(IN_LOT, 2), person((10, 30, 30, 90), 1)])  # ...until both are seen: two people
    assert starts(scene) == [[1], [2]]


def test_a_renamed_track_far_from_where_the_object_was_is_someone_else():
    scene = Scene([INTRUSION])
    scene.run(2.0, [person(IN_LOT, 1)])
    scene.frame([])
    scene.run(2.0, [person((5, 40, 20, 95), 2)])  # another corner of the lot, a body height away
    assert starts(scene) == [[1], [2]]


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


def test_a_candidate_that_never_started_leaves_no_cooldown():
    scene = Scene([INTRUSION])
    scene.run(0.5, [person(IN_LOT, 1)])  # a brief touch, under min_seconds
    scene.run(2.5, [person(OUTSIDE, 1)])
    scene.run(2.0, [person(IN_LOT, 1)])  # then really in, well within cooldown_s
    (start,) = scene.events()
    assert start["type"] == "start" and start["start_s"] == pytest.approx(3.0)


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


def test_snapshot_is_written_at_start_with_its_path_in_the_event(tmp_path):
    store = EvidenceStore(EvidenceConfig(dir=tmp_path / "evidence", min_free_mb=0))
    scene = Scene([INTRUSION], evidence=store)
    scene.run(2.0, [person(IN_LOT, 1)])
    (start,) = scene.events()
    path = Path(start["snapshot"])
    assert path.parent == tmp_path / "evidence" and path.name == f"{start['id']}.jpg"
    image = cv2.imread(str(path))
    assert image.shape == (240, 320, 3)
