"""Tracking and zones: track ids from Ultralytics' ByteTrack/BoT-SORT, zone membership, line crossings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monitor.config import CameraConfig, LineConfig, ZoneConfig
from monitor.detection.detector import TRACKER_LOW_CONF, ClassThresholds
from monitor.frame import Boxes
from monitor.geometry import anchor_points, points_in_polygon

LOST_TRACK_FRAMES = 30  # keep a lost track this many frames (ByteTrack's track_buffer)


def make_tracker(kind: str, high_conf: float):
    """A fresh Ultralytics tracker for one camera (never shared: its state is the camera's history)."""
    from ultralytics.trackers.bot_sort import BOTSORT
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import IterableSimpleNamespace

    args = dict(
        tracker_type=kind,
        track_high_thresh=high_conf,
        track_low_thresh=TRACKER_LOW_CONF,
        new_track_thresh=high_conf,
        track_buffer=LOST_TRACK_FRAMES,
        match_thresh=0.8,
        fuse_score=True,
    )
    if kind == "botsort":
        args.update(gmc_method="none", proximity_thresh=0.5, appearance_thresh=0.8, with_reid=False, model="auto")
        return BOTSORT(IterableSimpleNamespace(**args))
    return BYTETracker(IterableSimpleNamespace(**args))


class ObjectTracker:
    """Turns a frame's detections into tracked objects, honouring per-class thresholds.

    A detection below its class threshold can keep an existing track alive (ByteTrack's second
    stage) but never starts one, so a flickering weak box does not add to the count.

    A detection above its threshold that no confirmed track took (a new object: ByteTrack confirms
    a track on its second frame) is counted too, untracked (id -1). Otherwise, when frames are far
    apart (a slow CPU, many cameras), people move too far between processed frames for IoU matching,
    no track is ever confirmed and the counts would fall to zero.
    """

    HIGH = 0.5  # internal score separating the tracker's first and second stage

    def __init__(self, kind: str, thresholds: ClassThresholds):
        self.kind = kind
        self.thresholds = thresholds
        self._tracker = make_tracker(kind, self.HIGH) if kind != "none" else None

    def update(self, detections: Boxes, image: np.ndarray) -> Boxes:
        passing = self.thresholds.passing(detections)
        if self._tracker is None:
            return detections.select(passing)
        from ultralytics.engine.results import Boxes as UltralyticsBoxes

        score = np.where(passing, np.maximum(detections.conf, self.HIGH), np.minimum(detections.conf, self.HIGH - 1e-3))
        data = np.column_stack([detections.xyxy, score, detections.class_id]).astype(np.float32)
        tracks = self._tracker.update(UltralyticsBoxes(data, image.shape[:2]), image)
        if len(tracks) == 0:
            return detections.select(passing)
        source = tracks[:, 7].astype(int)  # the detection each track matched
        tracked = Boxes(
            tracks[:, :4].astype(np.float32),
            detections.conf[source],
            detections.class_id[source],
            tracks[:, 4].astype(np.int64),
        )
        unconfirmed = passing.copy()
        unconfirmed[source] = False
        return tracked.concat(detections.select(unconfirmed)) if unconfirmed.any() else tracked


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: np.ndarray  # (M, 2) float
    labels: frozenset[str] | None  # None: every label the camera counts

    @staticmethod
    def from_config(name: str, config: ZoneConfig) -> Zone:
        labels = frozenset(config.classes) if config.classes else None
        return Zone(name, np.asarray(config.polygon, np.float64), labels)

    def counts_label(self, label: str) -> bool:
        return self.labels is None or label in self.labels


class ZoneMap:
    """The camera's zones; which zones each object is in."""

    def __init__(self, camera: CameraConfig):
        self.anchor = camera.anchor
        self.zones = [Zone.from_config(name, zone) for name, zone in camera.zones.items()]

    def assign(self, objects: Boxes, labels: list[str]) -> list[tuple[str, ...]]:
        if not self.zones or len(objects) == 0:
            return [() for _ in range(len(objects))]
        points = anchor_points(objects.xyxy, self.anchor)
        inside = np.stack([points_in_polygon(points, zone.polygon) for zone in self.zones], axis=1)
        return [
            tuple(zone.name for z, zone in enumerate(self.zones) if inside[i, z] and zone.counts_label(labels[i]))
            for i in range(len(objects))
        ]


@dataclass
class _LineState:
    name: str
    start: np.ndarray
    end: np.ndarray
    labels: frozenset[str] | None
    totals: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    last_side: dict[int, float] = field(default_factory=dict)  # track id -> signed side
    last_seen: dict[int, int] = field(default_factory=dict)  # track id -> frame number


class LineCounter:
    """In/out totals of tracked objects whose anchor crosses a line segment.

    "in" is a crossing from the left of start->end to its right (image coordinates, y down).
    """

    def __init__(self, lines: dict[str, LineConfig], anchor: str):
        self.anchor = anchor
        self._frame = 0
        self._lines = [
            _LineState(
                name,
                np.asarray(line.points[0], np.float64),
                np.asarray(line.points[1], np.float64),
                frozenset(line.classes) if line.classes else None,
            )
            for name, line in lines.items()
        ]

    def update(self, objects: Boxes, labels: list[str]) -> dict[str, dict[str, int]]:
        self._frame += 1
        if self._lines and len(objects):
            points = anchor_points(objects.xyxy, self.anchor)
            for line in self._lines:
                self._update_line(line, objects.track_id, points, labels)
        for line in self._lines:
            self._forget_lost(line)
        return {line.name: dict(line.totals) for line in self._lines}

    def _update_line(self, line: _LineState, track_ids: np.ndarray, points: np.ndarray, labels: list[str]) -> None:
        direction = line.end - line.start
        sides = direction[0] * (points[:, 1] - line.start[1]) - direction[1] * (points[:, 0] - line.start[0])
        along = ((points - line.start) @ direction) / (direction @ direction)
        for track_id, side, position, label in zip(track_ids.tolist(), sides, along, labels):
            if track_id < 0 or (line.labels is not None and label not in line.labels) or side == 0:
                continue
            previous = line.last_side.get(track_id)
            if previous is not None and (previous > 0) != (side > 0) and 0 <= position <= 1:
                line.totals["in" if previous < 0 else "out"] += 1
            line.last_side[track_id] = side
            line.last_seen[track_id] = self._frame

    def _forget_lost(self, line: _LineState) -> None:
        stale = [t for t, seen in line.last_seen.items() if self._frame - seen > LOST_TRACK_FRAMES]
        for track_id in stale:
            del line.last_side[track_id], line.last_seen[track_id]
