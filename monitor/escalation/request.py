"""What travels between a camera and the escalation service: the camera's brief, a request, its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from monitor.config import CameraEscalationConfig
from monitor.frame import Boxes, Counts
from monitor.escalation.ambiguity import Candidate
from monitor.escalation.schema import ModelAnswer
from monitor.safety.events import OpenEvent


@dataclass(frozen=True)
class CameraBrief:
    """What the prompt says about a camera; built once."""

    camera: str
    description: str
    zones: dict[str, dict]  # name -> {"polygon": [...], "description": str, "labels": [...]}
    labels: list[str]  # counted labels
    label_classes: dict[str, list[str]]  # label -> model classes reported as it
    class_names: list[str]
    config: CameraEscalationConfig
    anchor: str = "bottom_center"  # the point of a box that must be inside a zone

    @property
    def zone_labels(self) -> dict[str, list[str]]:
        return {name: zone["labels"] for name, zone in self.zones.items()}


@dataclass
class EscalationRequest:
    brief: CameraBrief
    reason: str
    score: float
    evidence: list[dict]
    image: np.ndarray  # BGR, a copy owned by the request
    frame_index: int
    wall_time: float
    objects: Boxes
    detections: Boxes
    object_labels: list[str]
    detector_counts: Counts
    events: tuple[OpenEvent, ...]  # the camera's open safety events when the frame was chosen
    reply: Callable[[EscalationOutcome], None]

    @property
    def camera(self) -> str:
        return self.brief.camera

    @property
    def event_ids(self) -> list[str]:
        return [event.id for event in self.events]

    def rule_of(self, event_id: str) -> str | None:
        return next((event.rule for event in self.events if event.id == event_id), None)


def build_request(brief: CameraBrief, candidate: Candidate, reply: Callable[[EscalationOutcome], None]) -> EscalationRequest:
    result = candidate.result
    return EscalationRequest(
        brief=brief,
        reason=candidate.ambiguity.reason,
        score=round(candidate.ambiguity.score, 3),
        evidence=candidate.ambiguity.evidence,
        image=candidate.image,
        frame_index=result.frame.index,
        wall_time=result.frame.wall_time,
        objects=result.objects,
        detections=result.detections,
        object_labels=[result.labels[c] for c in result.objects.class_id.tolist()],
        detector_counts=candidate.detector_counts,
        events=candidate.events,
        reply=reply,
    )


@dataclass
class EscalationOutcome:
    request: EscalationRequest
    outcome: str  # ok | malformed | invalid | timeout | rate_limited | http_error | connection_error | error
    answer: ModelAnswer | None = None
    latency_s: float = 0.0
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    error: str = ""
