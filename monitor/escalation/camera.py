"""A camera's escalation stage, on its frame path: score each frame, pick the best frame of an ambiguous stretch
(or an audit frame), apply the hourly cap and hand it to the service; apply the answers that came back
(publish them, override counts, review safety events) on the camera's own thread."""

from __future__ import annotations

import json
import logging
import queue
import time
from typing import Callable, Protocol

from monitor.common import ALL_ZONES, iso_utc
from monitor.config import AppConfig, CameraConfig, ConfigError
from monitor.detection.detector import Detector
from monitor.escalation.ambiguity import CLEAR, REASONS, Ambiguity, AmbiguityScorer, Candidate, StretchSelector
from monitor.escalation.limits import HourlyCap
from monitor.escalation.request import CameraBrief, EscalationOutcome, EscalationRequest, build_request
from monitor.escalation.schema import ModelAnswer
from monitor.escalation.service import EscalationService
from monitor.frame import Counts, FrameResult
from monitor.publishing.message import Message
from monitor.safety.events import OpenEvent

log = logging.getLogger(__name__)


class CountOverride:
    """The model's counts replace the detector's until the detector's smoothed counts move away from what they
    were on the escalated frame (the scene changed), or ``max_s`` passes."""

    def __init__(self, max_s: float):
        self.max_s = max_s
        self.model_counts: Counts | None = None
        self.baseline: Counts = {}
        self.started = 0.0

    @property
    def active(self) -> bool:
        return self.model_counts is not None

    def start(self, model_counts: Counts, baseline: Counts, now: float) -> None:
        self.model_counts, self.baseline, self.started = model_counts, baseline, now

    def apply(self, counts: Counts, now: float) -> tuple[Counts, str]:
        if self.model_counts is None:
            return counts, "detector"
        if counts != self.baseline or now - self.started > self.max_s:
            self.model_counts = None
            return counts, "detector"
        merged = {zone: {**per_label, **self.model_counts.get(zone, {})} for zone, per_label in counts.items()}
        return merged, "llm"


def differs(model: Counts, detector: Counts) -> bool:
    return any(detector.get(zone, {}).get(label, 0) != n for zone, per_label in model.items() for label, n in per_label.items())


class SafetyReview(Protocol):
    """What escalation needs of a camera's safety engine (``monitor.safety.engine.SafetyEngine``)."""

    def open_events(self) -> list[OpenEvent]: ...
    def review(self, event_id: str, real: bool, note: str, source: str = "llm") -> list[Message]: ...


class CameraEscalationEvents(Protocol):
    def escalation(self, camera: str, reason: str, outcome: str, seconds: float | None = None, cost: float = 0.0) -> None: ...
    def count_disagreement(self, camera: str) -> None: ...
    def register_escalation(self, camera: str, reasons: tuple[str, ...] = ()) -> None: ...


class CameraEscalation:
    """One camera's side: decide what to send (cheap, on the camera thread) and apply what came back."""

    def __init__(
        self,
        brief: CameraBrief,
        service: EscalationService,
        scorer: AmbiguityScorer,
        topic: str,
        qos: int,
        events: CameraEscalationEvents,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.brief = brief
        self.config = brief.config
        self.service = service
        self.scorer = scorer
        self.topic = topic
        self.qos = qos
        self.events = events
        self.clock = clock
        t = self.config.thresholds
        self.selector = StretchSelector(t.trigger, t.stretch_s)
        self.cap = HourlyCap(self.config.max_per_hour)
        self.override = CountOverride(self.config.override_max_s)
        self.source = "detector"
        self._inbox: queue.SimpleQueue[EscalationOutcome] = queue.SimpleQueue()
        self._cooldown_until = 0.0
        self._last_escalation: float | None = None
        self._published: Counts | None = None

    def step(self, result: FrameResult, safety: SafetyReview | None = None) -> list[Message]:
        """Apply arrived answers, reconcile counts (may change ``result.counts``), offer this frame.

        Stretches, cool-downs, audits and overrides run on the frame's stream time (a file replayed fast
        escalates as it would live); the hourly cap counts real calls on the real clock.
        """
        now = result.frame.stream_time
        messages: list[Message] = []
        while True:
            try:
                outcome = self._inbox.get_nowait()
            except queue.Empty:
                break
            messages += self._apply(outcome, result, safety, now)
        self.offer(result, safety.open_events() if safety else [], now)  # sees the detector's own counts
        self._reconcile(result, now)
        return messages

    def drain(self, safety: SafetyReview | None = None) -> list[Message]:
        """At shutdown: publish the answers that arrived after the last frame (counts are no longer changed)."""
        messages: list[Message] = []
        while True:
            try:
                outcome = self._inbox.get_nowait()
            except queue.Empty:
                return messages
            messages += self._apply(outcome, None, safety, self.clock())

    @property
    def payload_extra(self) -> dict:
        return {"source": self.source}

    # --- choosing frames ---

    def offer(self, result: FrameResult, open_events: list[OpenEvent], now: float) -> None:
        if self._last_escalation is None:
            self._last_escalation = now
        ambiguity = self.scorer.score(result, open_events)
        if now < self._cooldown_until and ambiguity.reason != "weak_event":
            self.selector.reset()
            ambiguity = CLEAR
        best = self.selector.update(now, ambiguity, result, open_events)
        if best is not None:
            self._send(best, now, cooldown=True)
            return
        audit_every = self.config.audit_every_s
        if audit_every and now - self._last_escalation >= audit_every and ambiguity.score < self.selector.trigger:
            self._send(Candidate.of(Ambiguity(ambiguity.score, "audit"), result, open_events), now, cooldown=False)

    def _send(self, candidate: Candidate, now: float, cooldown: bool) -> None:
        ambiguity = candidate.ambiguity
        self._last_escalation = now
        if cooldown:
            self._cooldown_until = now + self.config.thresholds.cooldown_s
        if ambiguity.reason == "weak_event":
            self.scorer.reviewed_events.update(e["event"] for e in ambiguity.evidence if "event" in e)
        if not self.cap.try_take(self.clock()):
            self.events.escalation(self.brief.camera, ambiguity.reason, "hourly_cap")
            return
        self.service.submit(build_request(self.brief, candidate, self._inbox.put))

    # --- using answers ---

    def _apply(self, outcome: EscalationOutcome, result: FrameResult | None, safety: SafetyReview | None, now: float) -> list[Message]:
        request, answer = outcome.request, outcome.answer
        decision = "rejected" if outcome.outcome in ("malformed", "invalid") else "failed"
        messages: list[Message] = []
        if answer is not None:
            decision = self._reconcile_answer(answer, request, result, now)
            messages += self._review_events(answer, safety)
        messages.insert(0, self._escalation_message(outcome, decision))
        return messages

    def _reconcile_answer(self, answer: ModelAnswer, request: EscalationRequest, result: FrameResult | None, now: float) -> str:
        disagrees = differs(answer.counts, request.detector_counts)
        if disagrees:
            self.events.count_disagreement(self.brief.camera)
        if self.config.policy == "report_only" or result is None:
            return "reported" if disagrees else "agreed"
        if not disagrees:
            return "agreed"
        if result.counts != request.detector_counts:
            return "stale"  # the scene changed while the model was thinking
        self.override.start(answer.counts, request.detector_counts, now)
        return "override"

    def _review_events(self, answer: ModelAnswer, safety: SafetyReview | None) -> list[Message]:
        messages: list[Message] = []
        for verdict in answer.events:
            self.scorer.reviewed_events.add(verdict["id"])
            if safety is None:
                continue
            try:
                messages += safety.review(verdict["id"], bool(verdict["real"]), verdict["note"], source="llm")
            except (KeyError, ValueError) as exc:  # the event ended meanwhile
                log.info("camera %s: cannot review event %s: %s", self.brief.camera, verdict["id"], exc)
        return messages

    def _reconcile(self, result: FrameResult, now: float) -> None:
        counts, self.source = self.override.apply(result.counts, now)
        result.counts = counts
        result.counts_changed = counts != self._published
        self._published = counts

    def _escalation_message(self, outcome: EscalationOutcome, decision: str) -> Message:
        request, answer = outcome.request, outcome.answer
        payload = {
            "camera": request.camera,
            "ts": iso_utc(request.wall_time),
            "frame": request.frame_index,
            "reason": request.reason,
            "score": request.score,
            "evidence": request.evidence,
            "outcome": outcome.outcome,
            "decision": decision,
            "policy": self.config.policy,
            "detector": split_counts(request.detector_counts),
            "model": split_counts(answer.counts) if answer else None,
            "events": [
                {**verdict, "rule": request.rule_of(verdict["id"])}
                for verdict in (answer.events if answer else [])
            ],
            "description": answer.description if answer else None,
            "latency_s": round(outcome.latency_s, 3),
            "cost_estimated": round(outcome.cost, 6),
            "tokens": {"input": outcome.input_tokens, "output": outcome.output_tokens},
            "model_name": self.service.config.model,
        }
        if outcome.error:
            payload["error"] = outcome.error
        return Message(self.topic, json.dumps(payload, separators=(",", ":")), self.qos, False)


def split_counts(counts: Counts) -> dict:
    return {"totals": counts.get(ALL_ZONES, {}), "zones": {z: c for z, c in counts.items() if z != ALL_ZONES}}


def build_camera_escalation(
    name: str,
    camera: CameraConfig,
    app: AppConfig,
    service: EscalationService | None,
    detector: Detector,
    zone_labels: dict[str, list[str]],
    metrics: CameraEscalationEvents,
) -> CameraEscalation | None:
    """A camera's escalation, or None when it is off (globally, for this camera, or off-site not allowed)."""
    cam = camera.escalation
    if service is None or not cam.enabled:
        return None
    if not cam.off_site and not service.on_site:
        log.info("camera %s: escalation off (off_site: false and %s is not on this site)", name, app.escalation.base_url)
        return None
    labels = list(zone_labels[ALL_ZONES])
    where = f"cameras.{name}.escalation"
    problems = [
        f"{where}.thresholds.grey_classes: unknown class {c!r} (model has: {', '.join(detector.class_names)})"
        for c in cam.thresholds.grey_classes or []
        if c not in detector.class_names
    ]
    known_labels = {detector.config.aliases.get(c, c) for c in detector.class_names}
    if cam.blur_people:
        problems += [
            f"{where}.person_labels: unknown label {label!r} (known: {', '.join(sorted(known_labels))})"
            for label in cam.person_labels
            if label not in known_labels
        ]
    if problems:
        raise ConfigError(problems)
    brief = CameraBrief(
        camera=name,
        description=camera.description,
        zones={
            zone: {"polygon": [list(p) for p in z.polygon], "description": z.description, "labels": zone_labels[zone]}
            for zone, z in camera.zones.items()
        },
        labels=labels,
        label_classes={
            label: [c for c in detector.class_names if detector.config.aliases.get(c, c) == label] for label in labels
        },
        class_names=list(detector.class_names),
        config=cam,
        anchor=camera.anchor,
    )
    scorer = AmbiguityScorer(cam, brief.class_names, detector.thresholds.by_class)
    metrics.register_escalation(name, REASONS)
    return CameraEscalation(brief, service, scorer, f"{app.mqtt.prefix}/{name}/escalations", app.mqtt.qos, metrics)
