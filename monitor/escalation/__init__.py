"""Escalation: send ambiguous (and periodically, ordinary) frames to a multimodal LLM and use its structured answer.

On each camera's frame path (cheap): ``camera`` scores the frame (``ambiguity``), keeps the best frame of an
ambiguous stretch, applies the hourly cap and hands a ``request`` to the shared ``service``; it also applies
the answers that came back (publish, override counts, review safety events).

Off the frame path (the service's worker threads): ``limits`` (budget, circuit breaker), ``prompt`` (text,
image, cost estimate), ``client`` (the OpenAI SDK call), ``schema`` (the answer's validation) and
``records`` (frames saved for the learning loop).
"""

from monitor.escalation.ambiguity import REASONS, Ambiguity, AmbiguityScorer, Candidate, StretchSelector
from monitor.escalation.camera import CameraEscalation, build_camera_escalation
from monitor.escalation.request import CameraBrief, EscalationOutcome, EscalationRequest, build_request
from monitor.escalation.schema import ModelAnswer
from monitor.escalation.service import EscalationService, build_service

__all__ = [
    "REASONS", "Ambiguity", "AmbiguityScorer", "CameraBrief", "CameraEscalation", "Candidate", "EscalationOutcome",
    "EscalationRequest", "EscalationService", "ModelAnswer", "StretchSelector", "build_camera_escalation",
    "build_request", "build_service",
]
