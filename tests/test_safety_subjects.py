"""Subjects: one object is one subject through the tracker's gaps and renamings, two objects are two."""

from __future__ import annotations

import pytest

from monitor.config import IntrusionRule
from monitor.safety.events import SafetyEvent
from monitor.safety.rules import IntrusionRuleEval, Observation
from monitor.safety.subjects import Cooldown, RuleState, same_place

PERSON = (100.0, 100.0, 140.0, 200.0)  # 40 x 100 px, a walking person's box


def moved(box, dx: float, dy: float = 0.0):
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def test_overlapping_boxes_are_the_same_place_at_any_gap():
    assert same_place(PERSON, moved(PERSON, 5), since_s=None) > 1.0
    assert same_place(PERSON, moved(PERSON, 5), since_s=1.8) > 1.0


def test_a_walk_away_from_the_last_box_is_the_same_place_only_within_0_7_s():
    stride = moved(PERSON, 35)  # 0.35 body heights in 0.3 s (frames dropped): boxes barely overlap
    assert same_place(stride, PERSON, since_s=0.3) == pytest.approx(1 - 0.35 / (0.25 + 0.75 * 0.3))
    assert same_place(stride, PERSON, since_s=0.6) > 0.0
    assert same_place(stride, PERSON, since_s=0.8) == 0.0  # someone else may have walked in meanwhile
    assert same_place(stride, PERSON, since_s=None) == 0.0  # a cooldown: only an overlapping box
    assert same_place(moved(PERSON, 80), PERSON, since_s=0.3) == 0.0  # farther than a person walks
    assert same_place((100, 100, 120, 150), moved(PERSON, 35), since_s=0.3) == 0.0  # half the size: another object


def state_with_event(key, box, last_seen=10.0) -> RuleState:
    rule = IntrusionRuleEval(IntrusionRule(rule="intrusion", zones=["lot"]), {"lot": None})
    state = RuleState(rule)
    event = SafetyEvent("e1", "intrusion", "intrusion", "cam", key, "lot", 9.0, 0.0, last_seen, 0.0, boxes=[box])
    state.events[key] = event
    return state


def seen(track: int, box, zone: str = "lot") -> Observation:
    key = ("track", zone, track) if track >= 0 else ("spot", zone)
    return Observation(key, zone, (track,), 0.9, False, [box])


def test_a_new_id_where_an_unseen_object_was_continues_its_subject_until_both_are_seen():
    state = state_with_event(("track", "lot", 1), PERSON)
    assert state.resolve_keys([seen(2, moved(PERSON, 3))], 10.1) == [("track", "lot", 1)]  # 1 is not on the frame
    assert state.aliases == {("track", "lot", 2): ("track", "lot", 1)}
    assert state.resolve_keys([seen(2, moved(PERSON, 6))], 10.2) == [("track", "lot", 1)]
    keys = state.resolve_keys([seen(1, PERSON), seen(2, moved(PERSON, 9))], 10.3)  # both: two people after all
    assert keys == [("track", "lot", 1), ("track", "lot", 2)] and state.aliases == {}


def test_an_untracked_box_continues_the_event_whose_object_is_not_seen_and_else_is_its_own_spot():
    state = state_with_event(("track", "lot", 1), PERSON)
    assert state.resolve_keys([seen(-1, moved(PERSON, 4))], 10.1) == [("track", "lot", 1)]
    keys = state.resolve_keys([seen(1, PERSON), seen(-1, moved(PERSON, 300))], 10.2)
    assert keys == [("track", "lot", 1), ("spot", "lot", 1)]


def test_an_untracked_box_where_an_event_ended_is_in_its_cooldown_but_a_new_track_is_not():
    state = state_with_event(("track", "lot", 1), PERSON)
    del state.events[("track", "lot", 1)]
    state.cooldowns[("track", "lot", 1)] = Cooldown(40.0, PERSON, "lot")
    assert state.resolve_keys([seen(-1, moved(PERSON, 2))], 20.0) == [("track", "lot", 1)]
    assert state.resolve_keys([seen(7, moved(PERSON, 2))], 20.1) == [("track", "lot", 7)]  # at a door: someone else
    state.forget(41.0)
    assert state.cooldowns == {} and state.aliases == {}
