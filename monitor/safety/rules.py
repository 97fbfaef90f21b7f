"""Safety rules: each configured rule turns a frame into *observations*, a condition holding on this frame for
one subject (an object, a spot on the floor, a zone or the camera). ``monitor.safety.engine`` turns
observations into events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from monitor.config import (
    DwellRule,
    IntrusionRule,
    OccupancyRule,
    PersonDownRule,
    SafetyRule,
    StaleCameraRule,
)
from monitor.frame import Boxes, FrameResult
from monitor.geometry import anchor_points, iou, points_in_polygon

SPOT_IOU = 0.3  # an untracked box this close to an event's last box is the same subject
TRACK_HISTORY_S = 60.0  # forget the shape history of a track unseen this long
STALE_THUMB = (64, 48)  # frozen/black checks on a tiny grey copy

Key = tuple
XYXY = tuple[float, float, float, float]


@dataclass
class FrameView:
    """One frame as the rules need it: objects with labels, raw classes, anchors and zones."""

    t: float  # stream time, seconds
    wall: float
    result: FrameResult
    class_names: list[str]  # model class index -> raw class name
    zone_of: dict[str, np.ndarray]  # zone -> bool per object (anchor inside)

    @property
    def objects(self) -> Boxes:
        return self.result.objects

    def object_label(self, row: int) -> str:
        return self.result.labels[int(self.objects.class_id[row])]

    def object_class(self, row: int) -> str:
        return self.class_names[int(self.objects.class_id[row])]


@dataclass
class Observation:
    """A rule's condition holding on one frame, for one subject."""

    key: Key
    zone: str | None
    track_ids: tuple[int, ...]
    confidence: float
    ambiguous: bool
    boxes: list[XYXY] = field(default_factory=list)
    detail: dict = field(default_factory=dict)
    since: float | None = None  # when the condition really began, if earlier than now (dwell, no frames)
    hold_s: float | None = None  # overrides the rule's min_seconds



class Rule:
    """Base: class filter, confidence band and zone membership shared by the rules."""

    def __init__(self, config: SafetyRule, zones: dict[str, np.ndarray]):
        self.config = config
        self.name = config.key
        self.kind = config.rule
        self.zones = {z: zones[z] for z in config.zones} if config.zones else None
        self.classes = set(config.classes) if config.classes else None
        self.band = config.ambiguous_conf

    def observe(self, view: FrameView) -> list[Observation]:
        raise NotImplementedError

    def matches(self, view: FrameView, row: int) -> bool:
        return self.classes is None or view.object_label(row) in self.classes or view.object_class(row) in self.classes

    def grade(self, conf: float) -> bool | None:
        """None: too weak to count; True: ambiguous; False: sure."""
        if self.band is None:
            return False
        lo, hi = self.band
        return None if conf < lo else conf < hi

    def rows_in(self, view: FrameView, zone: str | None) -> list[int]:
        inside = view.zone_of[zone] if zone is not None else np.ones(len(view.objects), bool)
        return [row for row in range(len(view.objects)) if inside[row] and self.matches(view, row)]

    def zone_names(self) -> list[str | None]:
        return list(self.zones) if self.zones else [None]


class IntrusionRuleEval(Rule):
    config: IntrusionRule

    def observe(self, view: FrameView) -> list[Observation]:
        out = []
        for zone in self.zone_names():
            intruders = _one_per_object([ob for row in self.rows_in(view, zone) if (ob := self._intruder(view, zone, row))])
            if self.config.per == "zone" and intruders:
                out.append(_whole_zone(zone, intruders))
            else:
                out += intruders
        return out

    def _intruder(self, view: FrameView, zone: str | None, row: int) -> Observation | None:
        conf = float(view.objects.conf[row])
        unsure = self.grade(conf)
        if unsure is None:
            return None
        track = int(view.objects.track_id[row])
        key = ("track", zone, track) if track >= 0 else ("spot", zone)
        box = tuple(map(float, view.objects.xyxy[row]))
        return Observation(key, zone, (track,), conf, unsure, [box], {"label": view.object_label(row)})


def _one_per_object(observations: list[Observation]) -> list[Observation]:
    """Without the untracked boxes that overlap a tracked one: a detection the tracker did not take, on a person it
    tracks, is that person again (a second, partial box), not a second intruder."""
    tracked = [ob.boxes[0] for ob in observations if ob.track_ids[0] >= 0]
    return [
        ob for ob in observations
        if ob.track_ids[0] >= 0 or not any(iou(ob.boxes[0], box) >= SPOT_IOU for box in tracked)
    ]


def _whole_zone(zone: str | None, intruders: list[Observation]) -> Observation:
    """One subject for the zone: a change of track id (or an untracked box) continues the same event."""
    tracks = tuple(sorted({t for ob in intruders for t in ob.track_ids if t >= 0}))
    return Observation(
        ("zone", zone),
        zone,
        tracks,
        max(ob.confidence for ob in intruders),
        all(ob.ambiguous for ob in intruders),
        [box for ob in intruders for box in ob.boxes],
        {"label": intruders[0].detail["label"], "objects": len(intruders)},
    )


class OccupancyRuleEval(Rule):
    config: OccupancyRule

    def observe(self, view: FrameView) -> list[Observation]:
        out = []
        for zone in self.zone_names():
            rows = [(row, self.grade(float(view.objects.conf[row]))) for row in self.rows_in(view, zone)]
            counted = [row for row, unsure in rows if unsure is not None]
            sure = [row for row, unsure in rows if unsure is False]
            if self.config.above is not None:
                holds, ambiguous = len(counted) > self.config.above, len(sure) <= self.config.above
            else:
                holds, ambiguous = len(sure) < self.config.below, len(counted) >= self.config.below
            if not holds:
                continue
            tracks = tuple(int(view.objects.track_id[row]) for row in counted)
            conf = float(np.mean(view.objects.conf[counted])) if counted else 1.0
            boxes = [tuple(map(float, view.objects.xyxy[row])) for row in counted]
            bound = {"above": self.config.above} if self.config.above is not None else {"below": self.config.below}
            out.append(Observation(("zone", zone), zone, tracks, conf, ambiguous, boxes, {"count": len(counted), **bound}))
        return out


class DwellRuleEval(Rule):
    config: DwellRule

    def __init__(self, config: DwellRule, zones: dict[str, np.ndarray]):
        super().__init__(config, zones)
        self._entered: dict[tuple[str | None, int], list[float]] = {}  # (zone, track) -> [entered, last seen]

    def observe(self, view: FrameView) -> list[Observation]:
        out = []
        for zone in self.zone_names():
            for row in self.rows_in(view, zone):
                track = int(view.objects.track_id[row])
                if track < 0 or self.grade(float(view.objects.conf[row])) is None:
                    continue
                seen = self._entered.setdefault((zone, track), [view.t, view.t])
                seen[1] = view.t
                stayed = view.t - seen[0]
                if stayed >= self.config.max_seconds:
                    box = tuple(map(float, view.objects.xyxy[row]))
                    detail = {"dwell_s": round(stayed, 1), "max_seconds": self.config.max_seconds}
                    unsure = bool(self.grade(float(view.objects.conf[row])))
                    since = seen[0] + self.config.max_seconds
                    conf = float(view.objects.conf[row])
                    out.append(Observation(("track", zone, track), zone, (track,), conf, unsure, [box], detail, since))
        gone = [k for k, (_, last) in self._entered.items() if view.t - last > self.config.clear_seconds]
        for k in gone:
            del self._entered[k]
        return out


class PersonDownRuleEval(Rule):
    """A detection of a fall class, or a tracked box that turned from tall to wide and stays wide."""

    config: PersonDownRule

    def __init__(self, config: PersonDownRule, zones: dict[str, np.ndarray], anchor: str):
        super().__init__(config, zones)
        self.anchor = anchor
        self.camera_zones = zones  # without zones of its own, an event still says where it is
        self.fall_classes = set(config.fall_classes)
        self._tall_at: dict[int, float] = {}  # track -> last time its box was tall
        self._down_since: dict[int, float] = {}  # track -> when it turned wide
        self._seen_at: dict[int, float] = {}

    def observe(self, view: FrameView) -> list[Observation]:
        found = self._fall_detections(view) + self._turned_wide(view)
        return [self._merge(group) for group in _group_overlapping(found)]

    def _fall_detections(self, view: FrameView) -> list[Observation]:
        det = view.result.detections
        out = []
        for row in range(len(det)):
            if view.class_names[int(det.class_id[row])] not in self.fall_classes:
                continue
            conf = float(det.conf[row])
            unsure = self.grade(conf)
            zone = self._zone_of_box(det.xyxy[row])
            if unsure is None or zone is False:
                continue
            box = tuple(map(float, det.xyxy[row]))
            track = _track_of(box, view.objects)
            out.append(Observation(("spot",), zone, (track,), conf, unsure, [box], {"cue": "fall_class"}))
        return out

    def _turned_wide(self, view: FrameView) -> list[Observation]:
        if self.config.wide_ratio is None:
            return []
        objects, out = view.objects, []
        for row in range(len(objects)):
            track = int(objects.track_id[row])
            if track < 0 or not self.matches(view, row) or view.object_class(row) in self.fall_classes:
                continue
            if not self._is_down(track, tuple(map(float, objects.xyxy[row])), view.t):
                continue
            zone = self._zone_of_box(objects.xyxy[row])
            if zone is False:
                continue
            box = tuple(map(float, objects.xyxy[row]))
            # shape alone is a weak cue (bending down, occlusion, two people merged): always ambiguous
            out.append(Observation(("spot",), zone, (track,), float(objects.conf[row]), True, [box], {"cue": "turned_wide"}))
        self._forget(view.t)
        return out

    def _is_down(self, track: int, box: XYXY, t: float) -> bool:
        """Wide now, and it turned wide within ``tall_within_s`` of last being tall (and has not stood up since)."""
        width, height = max(1.0, box[2] - box[0]), max(1.0, box[3] - box[1])
        self._seen_at[track] = t
        if height / width >= self.config.tall_ratio:
            self._tall_at[track] = t
            self._down_since.pop(track, None)
            return False
        if width / height < self.config.wide_ratio:
            self._down_since.pop(track, None)
            return False
        if track not in self._down_since:
            tall_at = self._tall_at.get(track)
            if tall_at is None or t - tall_at > self.config.tall_within_s:
                return False
            self._down_since[track] = t
        return True

    def _zone_of_box(self, xyxy: np.ndarray) -> str | None | bool:
        """The rule zone holding the box's anchor, False when outside them all; a rule without zones watches the
        whole image and names the first camera zone holding the anchor (None: in none)."""
        point = anchor_points(np.asarray(xyxy, np.float64).reshape(1, 4), self.anchor)
        for name, polygon in (self.zones or self.camera_zones).items():
            if points_in_polygon(point, polygon)[0]:
                return name
        return False if self.zones else None

    def _merge(self, group: list[Observation]) -> Observation:
        best = max(group, key=lambda ob: ob.confidence)
        tracks = tuple(sorted({t for ob in group for t in ob.track_ids if t >= 0}))
        cues = sorted({ob.detail["cue"] for ob in group})
        ambiguous = all(ob.ambiguous for ob in group)
        return Observation(("spot",), best.zone, tracks, best.confidence, ambiguous, best.boxes, {"cues": cues})

    def _forget(self, t: float) -> None:
        for track in [k for k, seen in self._seen_at.items() if t - seen > TRACK_HISTORY_S]:
            self._seen_at.pop(track, None)
            self._tall_at.pop(track, None)
            self._down_since.pop(track, None)


class StaleCameraRuleEval(Rule):
    """No frame for ``no_frame_s`` (checked by ``tick``), or frames that are black or frozen."""

    config: StaleCameraRule

    def __init__(self, config: StaleCameraRule, zones: dict[str, np.ndarray]):
        super().__init__(config, zones)
        self._previous: np.ndarray | None = None

    def observe(self, view: FrameView) -> list[Observation]:
        thumb = cv2.resize(cv2.cvtColor(view.result.frame.image, cv2.COLOR_BGR2GRAY), STALE_THUMB, interpolation=cv2.INTER_AREA)
        thumb = thumb.astype(np.float32)
        previous, self._previous = self._previous, thumb
        brightness = float(thumb.mean())
        if self.config.black_level is not None and brightness < self.config.black_level:
            return [self._observation("black", {"brightness": round(brightness, 1)})]
        if self.config.frozen_diff is not None and previous is not None:
            change = float(np.abs(thumb - previous).mean())
            if change < self.config.frozen_diff:
                return [self._observation("frozen", {"change": round(change, 3)})]
        return []

    def no_frame(self, since: float, silent_s: float) -> list[Observation]:
        if silent_s < self.config.no_frame_s:
            return []
        return [self._observation("no_frame", {"silent_s": round(silent_s, 1)}, since=since, hold_s=0.0)]

    def _observation(self, reason: str, detail: dict, since: float | None = None, hold_s: float | None = None) -> Observation:
        return Observation(("camera",), None, (), 1.0, False, [], {"reason": reason, **detail}, since, hold_s)


def _track_of(box: XYXY, objects: Boxes) -> int:
    """The track id of the tracked object that best overlaps ``box`` (-1: none)."""
    best, best_iou = -1, SPOT_IOU
    for row in range(len(objects)):
        overlap = iou(box, tuple(map(float, objects.xyxy[row])))
        if overlap >= best_iou:
            best, best_iou = int(objects.track_id[row]), overlap
    return best


def _group_overlapping(observations: list[Observation]) -> list[list[Observation]]:
    groups: list[list[Observation]] = []
    for ob in observations:
        for group in groups:
            if any(iou(ob.boxes[0], other.boxes[0]) >= SPOT_IOU for other in group):
                group.append(ob)
                break
        else:
            groups.append([ob])
    return groups


def build_rule(config: SafetyRule, zones: dict[str, np.ndarray], anchor: str) -> Rule:
    if isinstance(config, IntrusionRule):
        return IntrusionRuleEval(config, zones)
    if isinstance(config, PersonDownRule):
        return PersonDownRuleEval(config, zones, anchor)
    if isinstance(config, OccupancyRule):
        return OccupancyRuleEval(config, zones)
    if isinstance(config, DwellRule):
        return DwellRuleEval(config, zones)
    return StaleCameraRuleEval(config, zones)
