"""Ambiguity: how unsure the detector is about a frame (0 clear .. 1 fully unsure), from four signals, and
the choice of the one frame of an ambiguous stretch that is worth a model's look."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from monitor.config import CameraEscalationConfig
from monitor.frame import Boxes, Counts, FrameResult
from monitor.geometry import box_iou
from monitor.safety.events import OpenEvent

REASONS = ("grey_band", "flicker", "class_disagreement", "weak_event", "audit")
MAX_EVIDENCE = 5
DISAGREEMENT_IOU = 0.6


@dataclass(frozen=True)
class Ambiguity:
    score: float  # 0 (clear) .. 1 (fully unsure)
    reason: str
    evidence: list[dict] = field(default_factory=list)


CLEAR = Ambiguity(0.0, "none")


class AmbiguityScorer:
    """One camera's per-frame ambiguity from four signals; the strongest one names the reason."""

    def __init__(self, config: CameraEscalationConfig, class_names: list[str], class_thresholds: np.ndarray):
        t = config.thresholds
        self.margin = t.grey_margin
        self.flicker_changes = t.flicker_changes
        self.class_names = class_names
        self.class_thresholds = class_thresholds
        grey = t.grey_classes if t.grey_classes is not None else class_names
        self.grey_class = np.array([name in grey for name in class_names], bool)
        self._raw_history: deque[tuple] = deque(maxlen=t.flicker_window)
        self._track_class: dict[int, int] = {}
        self.reviewed_events: set[str] = set()

    def score(self, result: FrameResult, open_events: list[OpenEvent]) -> Ambiguity:
        parts = [
            self._grey(result.detections),
            self._flicker(result.raw_counts),
            self._disagreement(result.detections, result.objects),
            self._weak_events(open_events),
        ]
        strongest = max(parts, key=lambda a: a.score)
        if strongest.score == 0:
            return CLEAR
        evidence = [e for part in sorted(parts, key=lambda a: -a.score) if part.score > 0 for e in part.evidence]
        return Ambiguity(strongest.score, strongest.reason, evidence[: 2 * MAX_EVIDENCE])

    def _grey(self, detections: Boxes) -> Ambiguity:
        if not len(detections):
            return CLEAR
        distance = np.abs(detections.conf - self.class_thresholds[detections.class_id])
        in_band = (distance < self.margin) & self.grey_class[detections.class_id]
        if not in_band.any():
            return CLEAR
        scores = np.where(in_band, 1.0 - 0.5 * distance / self.margin, 0.0)
        order = np.argsort(-scores)[: min(MAX_EVIDENCE, int(in_band.sum()))]
        evidence = [self._box_evidence(detections, int(i)) for i in order]
        return Ambiguity(float(scores[order[0]]), "grey_band", evidence)

    def _flicker(self, raw: Counts) -> Ambiguity:
        self._raw_history.append(tuple(sorted((z, tuple(sorted(c.items()))) for z, c in raw.items())))
        history = list(self._raw_history)
        changes = sum(a != b for a, b in zip(history, history[1:]))
        if not changes:
            return CLEAR
        return Ambiguity(min(1.0, changes / self.flicker_changes), "flicker", [{"raw_changes": changes}])

    def _disagreement(self, detections: Boxes, objects: Boxes) -> Ambiguity:
        evidence = self._overlapping_classes(detections) + self._class_flips(objects)
        if not evidence:
            return CLEAR
        return Ambiguity(1.0, "class_disagreement", evidence[:MAX_EVIDENCE])

    def _overlapping_classes(self, detections: Boxes) -> list[dict]:
        near = detections.conf >= self.class_thresholds[detections.class_id] - self.margin
        boxes = detections.select(near)
        if len(boxes) < 2:
            return []
        iou = box_iou(boxes.xyxy, boxes.xyxy)
        rows, cols = np.nonzero(np.triu(iou >= DISAGREEMENT_IOU, k=1))
        differ = boxes.class_id[rows] != boxes.class_id[cols]
        return [
            {"classes": [self._box_evidence(boxes, int(a)), self._box_evidence(boxes, int(b))]}
            for a, b in zip(rows[differ], cols[differ])
        ]

    def _class_flips(self, objects: Boxes) -> list[dict]:
        current = {int(t): int(c) for t, c in zip(objects.track_id.tolist(), objects.class_id.tolist()) if t >= 0}
        flips = [
            {"track_id": t, "was": self.class_names[self._track_class[t]], "now": self.class_names[c]}
            for t, c in current.items()
            if t in self._track_class and self._track_class[t] != c
        ]
        self._track_class = current
        return flips

    def _weak_events(self, open_events: list[OpenEvent]) -> Ambiguity:
        weak = [e for e in open_events if e.ambiguous and e.id not in self.reviewed_events]
        if not weak:
            return CLEAR
        return Ambiguity(1.0, "weak_event", [{"event": e.id, "rule": e.rule, "zone": e.zone} for e in weak])

    def _box_evidence(self, boxes: Boxes, row: int) -> dict:
        cls = int(boxes.class_id[row])
        return {
            "class": self.class_names[cls],
            "conf": round(float(boxes.conf[row]), 3),
            "threshold": round(float(self.class_thresholds[cls]), 3),
            "box": [round(float(v), 1) for v in boxes.xyxy[row]],
        }




def copy_counts(counts: Counts) -> Counts:
    return {zone: dict(per_label) for zone, per_label in counts.items()}


@dataclass(frozen=True)
class Candidate:
    """A frame chosen for escalation, with copies of what may change after it (image, counts)."""

    ambiguity: Ambiguity
    result: FrameResult
    events: tuple[OpenEvent, ...]
    image: np.ndarray  # a copy the request may keep
    detector_counts: Counts  # the detector's counts of that frame, before any override

    @staticmethod
    def of(ambiguity: Ambiguity, result: FrameResult, events: list[OpenEvent]) -> Candidate:
        return Candidate(ambiguity, result, tuple(events), result.frame.image.copy(), copy_counts(result.counts))


class StretchSelector:
    """Keeps the most ambiguous frame of a stretch of ambiguous frames; hands it on when the stretch ends
    or has lasted ``stretch_s`` (so a lasting ambiguity, like a jacket on a lawn, is still sent)."""

    def __init__(self, trigger: float, stretch_s: float):
        self.trigger = trigger
        self.stretch_s = stretch_s
        self._best: Candidate | None = None
        self._started = 0.0

    def update(self, now: float, ambiguity: Ambiguity, result: FrameResult, events: list[OpenEvent]) -> Candidate | None:
        """The best frame of the stretch once the stretch is over, else None."""
        if ambiguity.score < self.trigger:
            return self.flush()
        if self._best is None:
            self._started = now
        if self._best is None or ambiguity.score > self._best.ambiguity.score:
            self._best = Candidate.of(ambiguity, result, events)
        if now - self._started >= self.stretch_s:
            return self.flush()
        return None

    def flush(self) -> Candidate | None:
        best, self._best = self._best, None
        return best

    def reset(self) -> None:
        self._best = None
