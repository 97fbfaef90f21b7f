"""Safety events: rules over a camera's tracked detections, raised as events with a start, updates and an end.

Each configured rule turns a frame into *observations* (a condition holding for one subject: an
object, a spot on the floor, a zone or the camera). A per-rule lifecycle debounces them:

    candidate --(held min_seconds)--> active --(absent clear_seconds)--> ended --(cooldown_s)--> may start again

Ambiguous evidence (every supporting detection's confidence in the rule's ``ambiguous_conf`` band)
does not start an event on its own: the candidate waits for ``review()`` (the escalation stage asks a
multimodal model) and starts ``confirmed``; a dismissal drops it (and keeps it quiet while the
condition lasts); with no review within ``unreviewed_after_s`` it starts with verdict ``unconfirmed``.

Time is the frame's stream time (``CapturedFrame.media_time`` for files, the monotonic clock for live
cameras), so a file processed faster than real time raises the same events as real time would.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from monitor.annotate import annotate
from monitor.config import (
    CameraConfig,
    DwellRule,
    IntrusionRule,
    MqttConfig,
    OccupancyRule,
    PersonDownRule,
    SafetyRule,
    StaleCameraRule,
)
from monitor.evidence import EvidenceStore
from monitor.frame import Boxes, FrameResult
from monitor.publishing import Message, iso_utc
from monitor.tracking import anchor_points, points_in_polygon

log = logging.getLogger(__name__)

EVENTS_QOS = 1
SPOT_IOU = 0.3  # an untracked box this close to an event's last box is the same subject
UPDATE_MIN_INTERVAL_S = 1.0  # at most one "update" per event per second of stream time
TRACK_HISTORY_S = 60.0  # forget the shape history of a track unseen this long
STALE_THUMB = (64, 48)  # frozen/black checks on a tiny grey copy
VOLATILE_DETAIL = frozenset({"dwell_s", "silent_s", "brightness", "change"})

Key = tuple
XYXY = tuple[float, float, float, float]


class SafetyMetrics(Protocol):
    def safety_event_started(self, camera: str, rule: str) -> None: ...
    def safety_events_active(self, camera: str, rule: str, n: int) -> None: ...


# --- what a rule sees and says ------------------------------------------------------------------


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


@dataclass
class SafetyEvent:
    """One event from candidate to end. ``status``: candidate | active | ended; ``verdict``: auto |
    pending (ambiguous, awaiting review) | unconfirmed (started without review) | confirmed | dismissed."""

    id: str
    rule: str
    kind: str
    camera: str
    key: Key
    zone: str | None
    first_seen: float
    first_wall: float
    last_seen: float
    last_wall: float
    track_ids: list[int] = field(default_factory=list)
    confidence: float = 0.0
    ambiguous: bool = True
    status: str = "candidate"
    verdict: str = "auto"
    due_at: float | None = None  # when min_seconds had passed
    end_s: float | None = None
    end_wall: float | None = None
    end_reason: str | None = None
    snapshot: str | None = None
    detail: dict = field(default_factory=dict)
    reviews: list[dict] = field(default_factory=list)
    boxes: list[XYXY] = field(default_factory=list)  # the evidence boxes on the latest frame
    image: np.ndarray | None = None  # the latest frame where the condition held (not a copy; do not draw on it)
    updates: int = 0
    _last_update: float = -1e18
    _published_state: tuple = ()

    def observe(self, ob: Observation, t: float, wall: float, image: np.ndarray | None) -> None:
        self.last_seen, self.last_wall = t, wall
        self.track_ids = sorted(set(self.track_ids) | {i for i in ob.track_ids if i >= 0})
        self.confidence = max(self.confidence, ob.confidence)
        self.ambiguous = self.ambiguous and ob.ambiguous
        self.boxes = ob.boxes
        self.detail = ob.detail
        if image is not None:
            self.image = image

    def payload(self, kind: str, seq: int) -> dict:
        return {
            "type": kind,
            "seq": seq,
            "id": self.id,
            "rule": self.rule,
            "kind": self.kind,
            "camera": self.camera,
            "zone": self.zone,
            "track_ids": self.track_ids,
            "status": self.status,
            "verdict": self.verdict,
            "ambiguous": self.ambiguous,
            "confidence": round(float(self.confidence), 3),
            "start": iso_utc(self.first_wall),
            "start_s": round(self.first_seen, 3),
            "last_seen": iso_utc(self.last_wall),
            "end": iso_utc(self.end_wall) if self.end_wall is not None else None,
            "end_s": round(self.end_s, 3) if self.end_s is not None else None,
            "end_reason": self.end_reason,
            "duration_s": round((self.end_s if self.end_s is not None else self.last_seen) - self.first_seen, 3),
            "updates": self.updates,
            "snapshot": self.snapshot,
            "detail": self.detail,
            "reviews": self.reviews,
        }

    def state(self) -> tuple:
        """What an ``update`` is published for a change of (measurements that drift every frame are not)."""
        stable = {k: v for k, v in self.detail.items() if k not in VOLATILE_DETAIL}
        return (tuple(self.track_ids), self.ambiguous, self.verdict, json.dumps(stable, sort_keys=True))


# --- rules: frame -> observations -----------------------------------------------------------------


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
            intruders = [ob for row in self.rows_in(view, zone) if (ob := self._intruder(view, zone, row))]
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
        """The rule zone holding the box's anchor; None without zones; False when outside them all."""
        if not self.zones:
            return None
        point = anchor_points(np.asarray(xyxy, np.float64).reshape(1, 4), self.anchor)
        for name, polygon in self.zones.items():
            if points_in_polygon(point, polygon)[0]:
                return name
        return False

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


def iou(a: XYXY, b: XYXY) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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


# --- lifecycle: observations -> events ------------------------------------------------------------


@dataclass
class _Cooldown:
    until: float
    box: XYXY | None


class RuleState:
    """One rule's events by subject key, its cooldowns and its subject matching for untracked boxes."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.config = rule.config
        self.events: dict[Key, SafetyEvent] = {}
        self.cooldowns: dict[Key, _Cooldown] = {}
        self._spots = 0

    def resolve_key(self, ob: Observation) -> Key:
        """Untracked subjects ("spot" keys) are matched to earlier ones by box overlap."""
        if ob.key[0] != "spot":
            return ob.key
        box = ob.boxes[0]
        for key, event in self.events.items():
            if key[0] == "spot" and event.zone == ob.zone and event.boxes and iou(box, event.boxes[0]) >= SPOT_IOU:
                return key
        for key, cooldown in self.cooldowns.items():
            if key[0] == "spot" and cooldown.box is not None and iou(box, cooldown.box) >= SPOT_IOU:
                return key
        self._spots += 1
        return ("spot", ob.zone, self._spots)


class SafetyEngine:
    """A camera's rules and events. ``update`` per processed frame, ``tick`` while no frame comes.

    Thread-safe: the escalation stage calls ``open_events`` and ``review`` from its own thread.
    Every method that changes events returns the MQTT messages to publish (in order).
    """

    def __init__(
        self,
        camera: str,
        config: CameraConfig,
        mqtt: MqttConfig,
        class_names: list[str],
        evidence: EvidenceStore | None = None,
        metrics: SafetyMetrics | None = None,
    ):
        self.camera = camera
        self.class_names = class_names
        self.evidence = evidence
        self.metrics = metrics
        self.anchor = config.anchor
        self.zone_polygons = {name: np.asarray(z.polygon, np.float64) for name, z in config.zones.items()}
        self.states = [RuleState(build_rule(rule, self.zone_polygons, config.anchor)) for rule in config.safety]
        self.topic = f"{mqtt.prefix}/{camera}/events"
        self.active_topic = f"{self.topic}/active"
        self.seq = 0
        self._lock = threading.Lock()
        self._t = -1e18  # stream time of the latest evaluation (never goes back)
        self._offset = 0.0  # added to frame times once ticks have run ahead of them
        self._last_frame: tuple[float, float, float] | None = None  # (stream t, wall, mono) of the newest frame
        self._last_result: FrameResult | None = None
        self._created_mono = time.monotonic()

    # --- feeding ----------------------------------------------------------------------------

    def update(self, result: FrameResult) -> list[Message]:
        frame = result.frame
        with self._lock:
            t = self._advance(frame.stream_time)
            self._last_frame = (t, frame.wall_time, frame.mono_time)
            self._last_result = result
            view = FrameView(t, frame.wall_time, result, self.class_names, self._zone_membership(result.objects))
            out: list[Message] = []
            for state in self.states:
                observations = state.rule.observe(view)
                out += self._apply(state, observations, t, frame.wall_time, frame.image)
            result.events.extend(json.loads(m.payload) for m in out if m.topic == self.topic)
            return out + self._active_if_changed(out)

    def tick(self, now_mono: float | None = None, now_wall: float | None = None) -> list[Message]:
        """While no frame arrives: the stale-camera rules' no-frame check (on the wall clock)."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        now_wall = time.time() if now_wall is None else now_wall
        with self._lock:
            last_t, _, last_mono = self._last_frame or (0.0, now_wall, self._created_mono)
            silent_s = now_mono - last_mono
            t = self._advance(last_t + silent_s - self._offset)
            out: list[Message] = []
            for state in self.states:
                if isinstance(state.rule, StaleCameraRuleEval):
                    out += self._apply(state, state.rule.no_frame(last_t, silent_s), t, now_wall, None, frame_evaluation=False)
            return out + self._active_if_changed(out)

    def _advance(self, raw: float) -> float:
        """Stream time never goes back: after ticks moved it past a file's next frame, the frames shift along."""
        t = raw + self._offset
        if t < self._t:
            self._offset += self._t - t
            t = self._t
        self._t = t
        return t

    def _zone_membership(self, objects: Boxes) -> dict[str, np.ndarray]:
        if len(objects) == 0:
            return {name: np.zeros(0, bool) for name in self.zone_polygons}
        points = anchor_points(objects.xyxy, self.anchor)
        return {name: points_in_polygon(points, polygon) for name, polygon in self.zone_polygons.items()}

    # --- the lifecycle ------------------------------------------------------------------------

    def _apply(
        self,
        state: RuleState,
        observations: list[Observation],
        t: float,
        wall: float,
        image: np.ndarray | None,
        frame_evaluation: bool = True,
    ) -> list[Message]:
        config = state.config
        seen: set[Key] = set()
        out: list[Message] = []
        holds: dict[Key, float] = {}
        for ob in observations:
            key = state.resolve_key(ob)
            cooldown = state.cooldowns.get(key)
            if cooldown and cooldown.until > t and key not in state.events:
                continue
            event = state.events.get(key)
            if event is None:
                since = ob.since if ob.since is not None else t
                since_wall = wall - (t - since)
                event = SafetyEvent(
                    self._new_id(config.key), config.key, config.rule, self.camera, key, ob.zone, since, since_wall, t, wall
                )
                state.events[key] = event
            event.observe(ob, t, wall, image)
            seen.add(key)
            holds[key] = ob.hold_s if ob.hold_s is not None else config.min_seconds
        for key, event in list(state.events.items()):
            if key in seen:
                out += self._present(state, event, t, holds[key])
            elif frame_evaluation:  # a tick only knows that no frame came; absence needs a frame
                out += self._absent(state, event, t)
        return out

    def _present(self, state: RuleState, event: SafetyEvent, t: float, hold_s: float) -> list[Message]:
        if event.status == "active":
            return self._maybe_update(event, t)
        if event.verdict == "dismissed" or event.last_seen - event.first_seen < hold_s:
            return []
        if event.due_at is None:
            event.due_at = t
        if event.verdict == "confirmed" or not event.ambiguous:
            return self._start(state, event)
        event.verdict = "pending"  # ambiguous: wait for a review, at most unreviewed_after_s
        wait = state.config.unreviewed_after_s
        if wait is not None and t - event.due_at >= wait:
            event.verdict = "unconfirmed"
            return self._start(state, event)
        return []

    def _absent(self, state: RuleState, event: SafetyEvent, t: float) -> list[Message]:
        if t - event.last_seen < state.config.clear_seconds or t <= event.last_seen:
            return []
        del state.events[event.key]
        self._forget_cooldowns(state, t)
        if event.status != "active" and event.verdict != "dismissed":
            return []  # a candidate that never started just goes, leaving no cooldown
        state.cooldowns[event.key] = _Cooldown(event.last_seen + state.config.cooldown_s, event.boxes[0] if event.boxes else None)
        if event.status != "active":
            return []
        return self._end(state, event, "cleared", event.last_seen, event.last_wall)

    def _start(self, state: RuleState, event: SafetyEvent) -> list[Message]:
        event.status = "active"
        event.snapshot = self._snapshot(event)
        if self.metrics:
            self.metrics.safety_event_started(self.camera, event.rule)
        self._report_active(state)
        log.warning(
            "camera %s: %s event %s started (zone %s, tracks %s, verdict %s)",
            self.camera, event.rule, event.id, event.zone, event.track_ids, event.verdict,
        )
        event._last_update, event._published_state = event.last_seen, event.state()
        return [self._message(event, "start")]

    def _maybe_update(self, event: SafetyEvent, t: float) -> list[Message]:
        if event.verdict in ("pending", "unconfirmed") and not event.ambiguous:
            event.verdict = "auto"  # sure evidence arrived after all
        if event.state() == event._published_state or t - event._last_update < UPDATE_MIN_INTERVAL_S:
            return []
        return [self._update(event, t)]

    def _update(self, event: SafetyEvent, t: float) -> Message:
        event.updates += 1
        event._last_update, event._published_state = t, event.state()
        return self._message(event, "update")

    def _end(self, state: RuleState, event: SafetyEvent, reason: str, end_s: float, end_wall: float) -> list[Message]:
        event.status, event.end_reason, event.end_s, event.end_wall = "ended", reason, end_s, end_wall
        event.image = None
        self._report_active(state)
        log.info("camera %s: %s event %s ended (%s) after %.1fs", self.camera, event.rule, event.id, reason, end_s - event.first_seen)
        return [self._message(event, "end")]

    def _forget_cooldowns(self, state: RuleState, t: float) -> None:
        for key in [k for k, c in state.cooldowns.items() if c.until <= t]:
            del state.cooldowns[key]

    # --- the escalation interface -------------------------------------------------------------

    def open_events(self) -> list[SafetyEvent]:
        """Candidates and active events (not dismissed ones), oldest first; ``ambiguous`` says which need a look."""
        with self._lock:
            events = [
                e for s in self.states for e in s.events.values() if e.status in ("candidate", "active") and e.verdict != "dismissed"
            ]
        return sorted(events, key=lambda e: e.first_seen)

    def review(self, event_id: str, real: bool, note: str, source: str = "llm") -> list[Message]:
        """Record a confirmation or dismissal of an open event; returns the messages to publish.

        Active + confirmed: an ``update`` with verdict ``confirmed``. Active + dismissed: an ``update``
        with verdict ``dismissed``, then its ``end``. A candidate: confirmed starts as soon as it has
        held ``min_seconds``; dismissed never starts and stays quiet while its condition lasts.
        """
        with self._lock:
            found = self._find(event_id)
            if found is None:
                log.info("camera %s: review of unknown or finished event %s ignored", self.camera, event_id)
                return []
            state, event = found
            wall = time.time()
            event.reviews.append({"real": bool(real), "note": note, "source": source, "at": iso_utc(wall)})
            event.verdict = "confirmed" if real else "dismissed"
            if event.status == "active":
                out = [self._update(event, self._t)]
                if not real:
                    out += self._end(state, event, "dismissed", self._t, self._last_frame[1] if self._last_frame else wall)
                    event.status, event.verdict = "ended", "dismissed"
                    state.events[event.key] = _dismissed_shadow(event)
                return out + self._active_if_changed(out)
            if real and event.due_at is not None:
                out = self._start(state, event)
                return out + self._active_if_changed(out)
            return []

    def _find(self, event_id: str) -> tuple[RuleState, SafetyEvent] | None:
        for state in self.states:
            for event in state.events.values():
                if event.id == event_id and event.status != "ended":
                    return state, event
        return None

    def close(self, reason: str = "shutdown") -> list[Message]:
        """End every active event (the stream ended, or the monitor stops) so the retained set is truthful."""
        with self._lock:
            out: list[Message] = []
            for state in self.states:
                for event in list(state.events.values()):
                    if event.status == "active":
                        out += self._end(state, event, reason, event.last_seen, event.last_wall)
                state.events.clear()
            return out + self._active_if_changed(out)

    def initial_messages(self) -> list[Message]:
        """The empty active set, retained: replaces whatever a previous run left there."""
        with self._lock:
            return [self._active_message()]

    # --- messages, evidence, metrics -------------------------------------------------------------

    def _message(self, event: SafetyEvent, kind: str) -> Message:
        self.seq += 1
        return Message(self.topic, json.dumps(event.payload(kind, self.seq), separators=(",", ":")), EVENTS_QOS, False)

    def _active_if_changed(self, out: list[Message]) -> list[Message]:
        return [self._active_message()] if any(m.topic == self.topic for m in out) else []

    def _active_message(self) -> Message:
        active = [e.payload("active", self.seq) for s in self.states for e in s.events.values() if e.status == "active"]
        for item in active:
            del item["type"], item["seq"]
        body = {"camera": self.camera, "count": len(active), "events": active}
        return Message(self.active_topic, json.dumps(body, separators=(",", ":")), EVENTS_QOS, True)

    def _report_active(self, state: RuleState) -> None:
        if self.metrics:
            n = sum(1 for e in state.events.values() if e.status == "active")
            self.metrics.safety_events_active(self.camera, state.config.key, n)

    def _new_id(self, rule: str) -> str:
        return f"{self.camera}-{rule}-{uuid.uuid4().hex[:10]}"

    def _snapshot(self, event: SafetyEvent) -> str | None:
        if self.evidence is None:
            return None
        result = self._last_result
        image = event.image if event.image is not None else (result.frame.image if result else None)
        if image is None:
            return None
        try:
            drawn = annotate(
                image,
                {name: polygon for name, polygon in self.zone_polygons.items()},
                result.objects if result is not None else Boxes.empty(),
                result.labels if result is not None else [],
                title=f"{event.rule} ({event.kind})  {self.camera}  {iso_utc(event.last_wall)}  {event.verdict}",
                highlight_zones=[event.zone] if event.zone else [],
                highlight_tracks=event.track_ids,
                extra_boxes=[(box, f"{event.rule} {event.confidence:.2f}") for box in event.boxes],
            )
        except Exception:  # evidence must never stop the event
            log.exception("camera %s: cannot draw the snapshot of %s", self.camera, event.id)
            return None
        path = self.evidence.save(event.id, drawn)
        return str(path) if path else None


def _dismissed_shadow(event: SafetyEvent) -> SafetyEvent:
    """What stays after a dismissed active event ended: a silent record that keeps the condition quiet."""
    shadow = SafetyEvent(
        event.id, event.rule, event.kind, event.camera, event.key, event.zone,
        event.first_seen, event.first_wall, event.last_seen, event.last_wall,
    )
    shadow.verdict, shadow.status, shadow.boxes = "dismissed", "candidate", event.boxes
    return shadow
