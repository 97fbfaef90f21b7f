"""The safety engine: a camera's rules and the lifecycle of their events.

Each rule (``monitor.safety.rules``) turns a frame into observations, each about a subject (``monitor.safety.subjects``:
one object is one subject although the tracker renames it); a per-rule lifecycle debounces them:

    candidate --(held min_seconds)--> active --(absent clear_seconds)--> ended --(cooldown_s)--> may start again

Ambiguous evidence (every supporting detection's confidence in the rule's ``ambiguous_conf`` band)
does not start an event on its own: the candidate waits for ``review()`` (the escalation stage asks a
multimodal model) and starts ``confirmed``; a dismissal drops it (and keeps it quiet while the
condition lasts); with no review within ``unreviewed_after_s`` it starts with verdict ``unconfirmed``.

Time is the frame's stream time (``CapturedFrame.stream_time``: video time for files, seconds since the reader
started for live cameras), so a file processed faster than real time raises the same events as real time would.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Protocol

import numpy as np

from monitor.annotate import annotate
from monitor.common import clean_text, iso_utc
from monitor.config import CameraConfig, MqttConfig
from monitor.evidence import EvidenceStore
from monitor.frame import Boxes, FrameResult
from monitor.geometry import zone_membership
from monitor.publishing.message import Message
from monitor.publishing.sequence import ACTIVE, EVENTS, Sequence, new_sequence, stream_name
from monitor.safety.events import OpenEvent, SafetyEvent
from monitor.safety.rules import FrameView, Key, Observation, StaleCameraRuleEval, build_rule
from monitor.safety.subjects import Cooldown, RuleState

log = logging.getLogger(__name__)

EVENTS_QOS = 1
UPDATE_MIN_INTERVAL_S = 1.0  # at most one "update" per event per second of stream time
REVIEWS_KEPT = 5  # per event, the latest: every review is in the payload and the retained active set
NOTE_CHARS = 300  # a review's note, as published


class SafetyMetrics(Protocol):
    def safety_event_started(self, camera: str, rule: str) -> None: ...
    def safety_events_active(self, camera: str, rule: str, n: int) -> None: ...


class NullSafetyMetrics:
    def safety_event_started(self, camera: str, rule: str) -> None: ...
    def safety_events_active(self, camera: str, rule: str, n: int) -> None: ...


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
        event_seq: Sequence | None = None,
        active_seq: Sequence | None = None,
    ):
        self.camera = camera
        self.class_names = class_names
        self.evidence = evidence
        self.metrics = metrics or NullSafetyMetrics()
        self.anchor = config.anchor
        self.zone_polygons = {name: np.asarray(z.polygon, np.float64) for name, z in config.zones.items()}
        self.states = [RuleState(build_rule(rule, self.zone_polygons, config.anchor)) for rule in config.safety]
        self.topic = f"{mqtt.prefix}/{camera}/events"
        self.active_topic = f"{self.topic}/active"
        self.event_seq = event_seq or new_sequence(stream_name(camera, EVENTS))
        self.active_seq = active_seq or new_sequence(stream_name(camera, ACTIVE))
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
        return zone_membership(objects.xyxy, self.anchor, self.zone_polygons)

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
        for ob, key in zip(observations, state.resolve_keys(observations, t)):
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
        if event.status == "active" or event.verdict == "dismissed":  # a candidate that never started leaves no cooldown
            box = event.boxes[0] if event.boxes else None
            state.cooldowns[event.key] = Cooldown(event.last_seen + state.config.cooldown_s, box, event.zone)
        state.forget(t)
        if event.status != "active":
            return []
        return self._end(state, event, "cleared", event.last_seen, event.last_wall)

    def _start(self, state: RuleState, event: SafetyEvent) -> list[Message]:
        event.status = "active"
        event.snapshot = self._snapshot(event)
        self.metrics.safety_event_started(self.camera, event.rule)
        self._report_active(state)
        log.warning(
            "camera %s: %s event %s started (zone %s, tracks %s, verdict %s)",
            self.camera, event.rule, event.id, event.zone, event.track_ids, event.verdict,
        )
        event.last_update_s, event.published_state = event.last_seen, event.state()
        return [self._message(event, "start")]

    def _maybe_update(self, event: SafetyEvent, t: float) -> list[Message]:
        if event.verdict in ("pending", "unconfirmed") and not event.ambiguous:
            event.verdict = "auto"  # sure evidence arrived after all
        if event.state() == event.published_state or t - event.last_update_s < UPDATE_MIN_INTERVAL_S:
            return []
        return [self._update(event, t)]

    def _update(self, event: SafetyEvent, t: float) -> Message:
        event.updates += 1
        event.last_update_s, event.published_state = t, event.state()
        return self._message(event, "update")

    def _end(self, state: RuleState, event: SafetyEvent, reason: str, end_s: float, end_wall: float) -> list[Message]:
        event.status, event.end_reason, event.end_s, event.end_wall = "ended", reason, end_s, end_wall
        event.image = None
        self._report_active(state)
        log.info("camera %s: %s event %s ended (%s) after %.1fs", self.camera, event.rule, event.id, reason, end_s - event.first_seen)
        return [self._message(event, "end")]

    # --- the escalation interface -------------------------------------------------------------

    def open_events(self) -> list[OpenEvent]:
        """Candidates and active events (not dismissed ones), oldest first; ``ambiguous`` says which need a look."""
        with self._lock:
            events = [
                e for s in self.states for e in s.events.values() if e.status in ("candidate", "active") and e.verdict != "dismissed"
            ]
            return [e.open_view() for e in sorted(events, key=lambda e: e.first_seen)]

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
            review = {"real": bool(real), "note": clean_text(str(note), NOTE_CHARS), "source": source, "at": iso_utc(wall)}
            event.reviews[:] = (event.reviews + [review])[-REVIEWS_KEPT:]
            event.verdict = "confirmed" if real else "dismissed"
            if event.status == "active":
                out = [self._update(event, self._t)]
                if not real:
                    out += self._end(state, event, "dismissed", self._t, self._last_frame[1] if self._last_frame else wall)
                    event.status, event.verdict = "ended", "dismissed"
                    state.events[event.key] = event.dismissed_shadow()
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
        epoch, seq = self.event_seq.next()
        return Message(self.topic, json.dumps(event.payload(kind, epoch, seq), separators=(",", ":")), EVENTS_QOS, False)

    def _active_if_changed(self, out: list[Message]) -> list[Message]:
        return [self._active_message()] if any(m.topic == self.topic for m in out) else []

    def _active_message(self) -> Message:
        """The retained active set, numbered on its own stream: a re-sent retained copy repeats its (epoch, seq)."""
        active = [e.payload("active", 0, 0) for s in self.states for e in s.events.values() if e.status == "active"]
        for item in active:
            del item["type"], item["epoch"], item["seq"]
        epoch, seq = self.active_seq.next()
        body = {"camera": self.camera, "epoch": epoch, "seq": seq, "ts": iso_utc(time.time()), "count": len(active), "events": active}
        return Message(self.active_topic, json.dumps(body, separators=(",", ":")), EVENTS_QOS, True)

    def _report_active(self, state: RuleState) -> None:
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
