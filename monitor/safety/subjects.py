"""Subjects: which object (or spot, zone, camera) each observation of a frame is about, so that one object raises
one event although the tracker loses it for a frame, has not confirmed it yet, or gives it a new id; and the
cooldowns of the subjects whose events ended."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.geometry import iou
from monitor.safety.events import SafetyEvent
from monitor.safety.rules import SPOT_IOU, XYXY, Key, Observation, Rule

WALK_REACH, WALK_SPEED = 0.25, 0.75  # body heights an object may have moved: at once, and per second since last seen
WALK_WITHIN_S = 0.7  # longer gaps: only an overlapping box is the same object (someone else may walk by meanwhile)


@dataclass
class Cooldown:
    until: float
    box: XYXY | None
    zone: str | None


def same_place(box: XYXY, last: XYXY, since_s: float | None) -> float:
    """How surely ``box`` is the object last seen at ``last`` ``since_s`` seconds ago (0: not it): overlapping
    boxes, or, within 0.7 s (two frames of a host that processes only three a second), boxes of a similar size whose
    centres are closer than a person walks in that time.
    That keeps an object followed when frames are far apart (a slow CPU drops frames) and the boxes of a walking
    person no longer overlap."""
    overlap = iou(box, last)
    if overlap >= SPOT_IOU:
        return 1.0 + overlap
    if since_s is None or since_s > WALK_WITHIN_S:
        return 0.0
    height, last_height = max(1.0, box[3] - box[1]), max(1.0, last[3] - last[1])
    if not 2 / 3 <= height / last_height <= 3 / 2:
        return 0.0
    mean_height = (height + last_height) / 2
    distance = np.hypot((box[0] + box[2] - last[0] - last[2]) / 2, (box[1] + box[3] - last[1] - last[3]) / 2) / mean_height
    reach = WALK_REACH + WALK_SPEED * since_s
    return 1.0 - distance / reach if distance < reach else 0.0


class RuleState:
    """One rule's events by subject key, its cooldowns, and which subject each observation belongs to."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.config = rule.config
        self.events: dict[Key, SafetyEvent] = {}
        self.cooldowns: dict[Key, Cooldown] = {}
        self.aliases: dict[Key, Key] = {}  # a track key that continues another subject's event (the tracker renamed it)
        self._spots = 0

    def resolve_keys(self, observations: list[Observation], t: float) -> list[Key]:
        """The subject of each observation of one frame.

        A known track (or zone, or camera) keeps its subject. An untracked box, or a track this rule has not seen,
        that is where an open event's object was last seen while that object is not on this frame continues the
        event: the tracker lost, had not yet confirmed, or renamed the object, and a new event would only flap.
        An untracked box may also fall into the cooldown of an ended one. Otherwise it is a new subject. A track
        that continued someone else's event gets its own subject back when both are seen on one frame.
        """
        keys: list[Key | None] = [ob.key if self._is_own(ob.key) else None for ob in observations]
        claimed = {key for key in keys if key is not None}
        for index, ob in enumerate(observations):
            alias = self.aliases.get(ob.key)
            if keys[index] is None and alias is not None:
                if alias in claimed or not (alias in self.events or alias in self.cooldowns):
                    del self.aliases[ob.key]  # two objects after all (or the subject is gone)
                else:
                    keys[index] = alias
                    claimed.add(alias)
        for index, ob in enumerate(observations):
            if keys[index] is None:
                key = self._overlapping(ob, claimed, t) or self._new_key(ob)
                if ob.key[0] == "track" and key != ob.key:
                    self.aliases[ob.key] = key
                keys[index] = key
                claimed.add(key)
        return keys

    def _is_own(self, key: Key) -> bool:
        """A subject that is its own: a zone, the camera, or a track with an event or a cooldown of its own."""
        return key[0] not in ("track", "spot") or (key[0] == "track" and (key in self.events or key in self.cooldowns))

    def _overlapping(self, ob: Observation, claimed: set[Key], t: float) -> Key | None:
        """The unclaimed open event (for an untracked box also a cooldown) whose last box is where ``ob`` is now."""
        candidates = [(key, event.zone, event.boxes[0], t - event.last_seen) for key, event in self.events.items() if event.boxes]
        if ob.key[0] == "spot":  # a tracked object coming back to where another's event ended may be someone else
            candidates += [(key, c.zone, c.box, None) for key, c in self.cooldowns.items() if c.box is not None]
        best, best_score = None, 0.0
        for key, zone, box, since in candidates:
            if key in claimed or key[0] not in ("track", "spot") or (self.rule.zones and zone != ob.zone):
                continue
            score = same_place(ob.boxes[0], box, since)
            if score > best_score:
                best, best_score = key, score
        return best

    def _new_key(self, ob: Observation) -> Key:
        if ob.key[0] != "spot":
            return ob.key
        self._spots += 1
        return ("spot", ob.zone, self._spots)

    def forget(self, t: float) -> None:
        """Cooldowns that ran out, and aliases of subjects that are gone."""
        for key in [k for k, c in self.cooldowns.items() if c.until <= t]:
            del self.cooldowns[key]
        for key in [k for k, target in self.aliases.items() if target not in self.events and target not in self.cooldowns]:
            del self.aliases[key]
