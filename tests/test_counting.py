"""Counting: raw per-zone counts and the smoothing that keeps published counts from flickering."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.config import SmoothingConfig
from monitor.common import ALL_ZONES
from monitor.counting import CountSmoother, Smoother, raw_counts
from monitor.frame import Boxes


def run(smoother: Smoother, values: list[int]) -> list[int]:
    return [smoother.update(v) for v in values]


def boxes(n: int) -> Boxes:
    xyxy = np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1))
    return Boxes(xyxy, np.full(n, 0.9, np.float32), np.zeros(n, np.int32), np.arange(n, dtype=np.int64))


class TestMedian:
    def test_a_detection_dropped_for_one_or_two_frames_does_not_change_the_count(self):
        smoother = Smoother(SmoothingConfig(method="median", window=5))
        assert run(smoother, [3, 3, 3, 2, 3, 3, 3, 2, 2, 3, 3]) == [3] * 11

    def test_a_lasting_change_comes_through_after_half_the_window(self):
        smoother = Smoother(SmoothingConfig(method="median", window=5))
        assert run(smoother, [1, 1, 1, 1, 1, 4, 4, 4, 4, 4]) == [1, 1, 1, 1, 1, 1, 1, 4, 4, 4]

    def test_a_one_frame_false_positive_is_ignored(self):
        smoother = Smoother(SmoothingConfig(method="median", window=3))
        assert run(smoother, [0, 0, 1, 0, 0]) == [0, 0, 0, 0, 0]

    def test_the_first_value_is_taken_as_is_and_even_histories_use_the_upper_median(self):
        smoother = Smoother(SmoothingConfig(method="median", window=4))
        assert run(smoother, [2, 5, 5, 1]) == [2, 5, 5, 5]  # [2,5] -> 5; [2,5,5] -> 5; [2,5,5,1] -> sorted [1,2,5,5] -> 5

    def test_window_one_is_no_smoothing(self):
        assert run(Smoother(SmoothingConfig(method="median", window=1)), [1, 4, 0, 2]) == [1, 4, 0, 2]


class TestHysteresis:
    def test_a_new_value_must_persist_for_the_window(self):
        smoother = Smoother(SmoothingConfig(method="hysteresis", window=3))
        assert run(smoother, [2, 3, 3, 3, 3]) == [2, 2, 2, 3, 3]

    def test_a_short_blip_is_held_back(self):
        smoother = Smoother(SmoothingConfig(method="hysteresis", window=3))
        assert run(smoother, [2, 1, 1, 2, 1, 2]) == [2, 2, 2, 2, 2, 2]

    def test_changing_candidates_restart_the_count(self):
        smoother = Smoother(SmoothingConfig(method="hysteresis", window=2))
        assert run(smoother, [0, 1, 2, 2, 3, 1, 1]) == [0, 0, 0, 2, 2, 2, 1]


def test_none_passes_every_value_through():
    assert run(Smoother(SmoothingConfig(method="none", window=9)), [0, 5, 0, 5]) == [0, 5, 0, 5]


def test_reset_sets_the_value_without_waiting_for_the_window():
    smoother = Smoother(SmoothingConfig(method="median", window=5))
    run(smoother, [4, 4, 4, 4, 4])
    smoother.reset(1)
    assert smoother.value == 1
    assert run(smoother, [1, 4]) == [1, 1]  # history [1, 1, 4]


class TestRawCounts:
    zone_labels = {"dock": ["person", "cart"], "door": ["person"], ALL_ZONES: ["person", "cart"]}

    def test_counts_per_zone_and_label_with_zeros_listed(self):
        counts = raw_counts(
            boxes(4),
            [("dock",), ("dock", "door"), (), ("dock",)],
            ["person", "person", "person", "cart"],
            self.zone_labels,
        )
        assert counts == {"dock": {"person": 2, "cart": 1}, "door": {"person": 1}, ALL_ZONES: {"person": 3, "cart": 1}}

    def test_labels_not_counted_in_a_zone_or_at_all_are_left_out(self):
        counts = raw_counts(boxes(2), [("door",), ("door",)], ["cart", "forklift"], self.zone_labels)
        assert counts == {"dock": {"person": 0, "cart": 0}, "door": {"person": 0}, ALL_ZONES: {"person": 0, "cart": 1}}

    def test_no_objects_gives_every_zone_at_zero(self):
        counts = raw_counts(Boxes.empty(), [], [], self.zone_labels)
        assert counts == {"dock": {"person": 0, "cart": 0}, "door": {"person": 0}, ALL_ZONES: {"person": 0, "cart": 0}}


class TestCountSmoother:
    def test_each_zone_and_label_is_smoothed_on_its_own_and_changes_are_flagged(self):
        smoother = CountSmoother(SmoothingConfig(method="median", window=3))
        frames = [
            {"a": {"person": 1}, "b": {"person": 0}},
            {"a": {"person": 0}, "b": {"person": 2}},
            {"a": {"person": 1}, "b": {"person": 2}},
            {"a": {"person": 1}, "b": {"person": 2}},
        ]
        outputs = [smoother.update(frame) for frame in frames]
        assert [counts for counts, _ in outputs] == [
            {"a": {"person": 1}, "b": {"person": 0}},
            {"a": {"person": 1}, "b": {"person": 2}},  # a: [1,0] -> 1; b: [0,2] -> 2
            {"a": {"person": 1}, "b": {"person": 2}},
            {"a": {"person": 1}, "b": {"person": 2}},
        ]
        assert [changed for _, changed in outputs] == [True, True, False, False]

    def test_override_takes_effect_at_once_and_keeps_other_values(self):
        smoother = CountSmoother(SmoothingConfig(method="median", window=5))
        for _ in range(5):
            smoother.update({"a": {"person": 3, "cart": 1}})
        smoother.override({"a": {"person": 0}})
        assert smoother.current == {"a": {"person": 0, "cart": 1}}
        counts, changed = smoother.update({"a": {"person": 0, "cart": 1}})
        assert counts == {"a": {"person": 0, "cart": 1}} and not changed


@pytest.mark.parametrize("method", ["median", "hysteresis"])
def test_smoothing_reduces_changes_of_a_flickering_count(method):
    """A true count of 3 with a detection lost in 15% of frames at random: the smoothed count hardly moves."""
    rng = np.random.default_rng(7)
    raw = [3 - int(rng.random() < 0.15) for _ in range(500)]
    smoothed = run(Smoother(SmoothingConfig(method=method, window=5)), raw)
    raw_changes = sum(a != b for a, b in zip(raw, raw[1:]))
    smoothed_changes = sum(a != b for a, b in zip(smoothed, smoothed[1:]))
    assert raw_changes > 100
    assert smoothed_changes <= raw_changes / 10
    assert np.mean(np.array(smoothed) == 3) > 0.97
