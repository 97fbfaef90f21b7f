"""Counting: per-zone, per-label counts of a frame's objects, smoothed so they do not flicker."""

from __future__ import annotations

from collections import deque

from monitor.common import ALL_ZONES
from monitor.config import CameraConfig, SmoothingConfig
from monitor.frame import Boxes, Counts


def zone_labels(camera: CameraConfig, labels: list[str]) -> dict[str, list[str]]:
    """Per zone (and ``ALL_ZONES``), the labels counted there: the camera's ``classes`` (default: every label
    the model reports), narrowed by the zone's own ``classes``."""
    counted = camera.classes or labels
    out = {zone: [label for label in counted if not z.classes or label in z.classes] for zone, z in camera.zones.items()}
    out[ALL_ZONES] = list(counted)
    return out


def raw_counts(
    objects: Boxes,
    object_zones: list[tuple[str, ...]],
    object_labels: list[str],
    zone_labels: dict[str, list[str]],
) -> Counts:
    """Counts per zone and label; every zone lists all its labels, zero included, so zeros get published too."""
    counts: Counts = {zone: dict.fromkeys(labels, 0) for zone, labels in zone_labels.items()}
    totals = counts.setdefault(ALL_ZONES, {})
    for zones, label in zip(object_zones, object_labels):
        if label in totals:
            totals[label] += 1
        for zone in zones:
            if label in counts[zone]:
                counts[zone][label] += 1
    return counts


class Smoother:
    """One value's smoothing: a running median, or a hysteresis that holds until a new value persists."""

    def __init__(self, config: SmoothingConfig):
        self.method = config.method
        self.window = config.window
        self._history: deque[int] = deque(maxlen=config.window)
        self.value: int | None = None
        self._candidate: int | None = None
        self._candidate_frames = 0

    def update(self, raw: int) -> int:
        if self.method == "none" or self.value is None:
            self.value = raw
            self._history.append(raw)
            return raw
        if self.method == "median":
            self._history.append(raw)
            self.value = sorted(self._history)[len(self._history) // 2]  # the upper median: always a real count
            return self.value
        return self._hysteresis(raw)

    def reset(self, value: int) -> None:
        self.value, self._candidate, self._candidate_frames = value, None, 0
        self._history.clear()
        self._history.append(value)

    def _hysteresis(self, raw: int) -> int:
        if raw == self.value:
            self._candidate, self._candidate_frames = None, 0
            return self.value
        if raw != self._candidate:
            self._candidate, self._candidate_frames = raw, 0
        self._candidate_frames += 1
        if self._candidate_frames >= self.window:
            self.value, self._candidate, self._candidate_frames = raw, None, 0
        return self.value


class CountSmoother:
    """Smooths every (zone, label) count of one camera; says whether the published counts changed."""

    def __init__(self, config: SmoothingConfig):
        self.config = config
        self._smoothers: dict[tuple[str, str], Smoother] = {}
        self.current: Counts = {}

    def update(self, raw: Counts) -> tuple[Counts, bool]:
        smoothed: Counts = {}
        for zone, per_label in raw.items():
            smoothed[zone] = {label: self._smoother(zone, label).update(n) for label, n in per_label.items()}
        changed = smoothed != self.current
        self.current = smoothed
        return smoothed, changed

    def _smoother(self, zone: str, label: str) -> Smoother:
        key = (zone, label)
        if key not in self._smoothers:
            self._smoothers[key] = Smoother(self.config)
        return self._smoothers[key]

    def override(self, counts: Counts) -> None:
        """Set the current values (e.g. from a confirmed external count) without waiting for the window."""
        for zone, per_label in counts.items():
            for label, n in per_label.items():
                self._smoother(zone, label).reset(n)
        self.current = {zone: {**self.current.get(zone, {}), **per_label} for zone, per_label in counts.items()}
