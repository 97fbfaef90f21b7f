"""Safety events: one event's record from candidate to end, its MQTT payload, and the read-only view of an
open event that other stages (escalation) get."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from monitor.common import iso_utc
from monitor.safety.rules import XYXY, Key, Observation

VOLATILE_DETAIL = frozenset({"dwell_s", "silent_s", "brightness", "change"})  # drift every frame: no update for them


@dataclass(frozen=True, slots=True)
class OpenEvent:
    """An open event (candidate or active) as another stage may see it: a copy, safe to keep on any thread."""

    id: str
    rule: str
    kind: str
    zone: str | None
    track_ids: tuple[int, ...]
    ambiguous: bool
    status: str
    verdict: str
    boxes: tuple[XYXY, ...]  # the evidence boxes on the latest frame where the condition held
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # that frame (BGR; do not draw on it)


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
    last_update_s: float = -1e18
    published_state: tuple = ()

    def observe(self, ob: Observation, t: float, wall: float, image: np.ndarray | None) -> None:
        self.last_seen, self.last_wall = t, wall
        self.track_ids = sorted(set(self.track_ids) | {i for i in ob.track_ids if i >= 0})
        self.confidence = max(self.confidence, ob.confidence)
        self.ambiguous = self.ambiguous and ob.ambiguous
        self.boxes = ob.boxes
        self.detail = ob.detail
        if image is not None:
            self.image = image

    def payload(self, kind: str, epoch: int, seq: int) -> dict:
        return {
            "type": kind,
            "epoch": epoch,
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
            "boxes": [[round(float(v), 1) for v in box] for box in self.boxes],
            "detail": self.detail,
            "reviews": self.reviews,
        }

    def state(self) -> tuple:
        """What an ``update`` is published for a change of (measurements that drift every frame are not)."""
        stable = {k: v for k, v in self.detail.items() if k not in VOLATILE_DETAIL}
        return (tuple(self.track_ids), self.ambiguous, self.verdict, json.dumps(stable, sort_keys=True))

    def open_view(self) -> OpenEvent:
        return OpenEvent(
            self.id, self.rule, self.kind, self.zone, tuple(self.track_ids), self.ambiguous, self.status, self.verdict,
            tuple(self.boxes), self.image,
        )

    def dismissed_shadow(self) -> SafetyEvent:
        """What stays after a dismissed active event ended: a silent record that keeps the condition quiet."""
        shadow = SafetyEvent(
            self.id, self.rule, self.kind, self.camera, self.key, self.zone,
            self.first_seen, self.first_wall, self.last_seen, self.last_wall,
        )
        shadow.verdict, shadow.status, shadow.boxes = "dismissed", "candidate", self.boxes
        return shadow
