"""Escalation: send ambiguous (and periodically, ordinary) frames to a multimodal LLM and use its structured answer.

Frame path (camera thread, cheap): ``CameraEscalation.step`` scores each frame's ambiguity, keeps the best frame
of an ambiguous stretch, applies the hourly cap and hands a request to the shared ``EscalationService``; it
also applies answers that came back (publish, override counts, review safety events) on the camera thread.

Off the frame path (``EscalationService`` worker threads): budget, circuit breaker, blur, JPEG, the OpenAI SDK
call (timeouts, retries honouring Retry-After), schema validation, dataset saving.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from datetime import datetime, timezone
from typing import Any, Callable, Protocol
from urllib.parse import urlparse

import cv2
import jsonschema
import numpy as np

from monitor.config import AppConfig, CameraConfig, CameraEscalationConfig, ConfigError, EscalationConfig
from monitor.counting import ALL_ZONES
from monitor.frame import Boxes, Counts, FrameResult
from monitor.publishing import Message, iso_utc

log = logging.getLogger(__name__)

REASONS = ("grey_band", "flicker", "class_disagreement", "weak_event", "audit")
MAX_EVIDENCE = 5
MAX_SANE_COUNT = 10000
DISAGREEMENT_IOU = 0.6
DESCRIPTION_CHARS = 500


# --- ambiguity --------------------------------------------------------------------------------------------


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

    def score(self, result: FrameResult, open_events: list[Any]) -> Ambiguity:
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

    def _weak_events(self, open_events: list[Any]) -> Ambiguity:
        weak = [e for e in open_events if getattr(e, "ambiguous", False) and str(e.id) not in self.reviewed_events]
        if not weak:
            return CLEAR
        return Ambiguity(1.0, "weak_event", [{"event": str(e.id), "rule": e.rule, "zone": e.zone} for e in weak])

    def _box_evidence(self, boxes: Boxes, row: int) -> dict:
        cls = int(boxes.class_id[row])
        return {
            "class": self.class_names[cls],
            "conf": round(float(boxes.conf[row]), 3),
            "threshold": round(float(self.class_thresholds[cls]), 3),
            "box": [round(float(v), 1) for v in boxes.xyxy[row]],
        }


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


# --- requests and the best frame of a stretch --------------------------------------------------------------


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
    events: list[dict]  # open safety events: id, rule, zone, track_ids, ambiguous
    reply: Callable[[EscalationOutcome], None]

    @property
    def camera(self) -> str:
        return self.brief.camera


def snapshot(
    brief: CameraBrief,
    result: FrameResult,
    ambiguity: Ambiguity,
    events: list[Any],
    reply,
    image: np.ndarray,
    detector_counts: Counts | None = None,
) -> EscalationRequest:
    """A request from a frame; ``image`` is a copy of the frame's image that the request may keep;
    ``detector_counts``: the detector's counts of that frame (default: ``result.counts``)."""
    return EscalationRequest(
        brief=brief,
        reason=ambiguity.reason,
        score=round(ambiguity.score, 3),
        evidence=ambiguity.evidence,
        image=image,
        frame_index=result.frame.index,
        wall_time=result.frame.wall_time,
        objects=result.objects,
        detections=result.detections,
        object_labels=[result.labels[c] for c in result.objects.class_id.tolist()],
        detector_counts=copy_counts(detector_counts if detector_counts is not None else result.counts),
        events=[event_summary(e) for e in events],
        reply=reply,
    )


def copy_counts(counts: Counts) -> Counts:
    return {zone: dict(per_label) for zone, per_label in counts.items()}


def event_summary(event: Any) -> dict:
    return {
        "id": str(event.id),
        "rule": str(event.rule),
        "zone": getattr(event, "zone", None),
        "track_ids": [int(t) for t in getattr(event, "track_ids", []) or []],
        "ambiguous": bool(getattr(event, "ambiguous", False)),
    }


class StretchSelector:
    """Keeps the most ambiguous frame of a stretch of ambiguous frames; hands it on when the stretch ends
    or has lasted ``stretch_s`` (so a lasting ambiguity, like a jacket on a lawn, is still sent)."""

    def __init__(self, trigger: float, stretch_s: float):
        self.trigger = trigger
        self.stretch_s = stretch_s
        self._best: tuple[Ambiguity, FrameResult, list[Any], np.ndarray] | None = None
        self._started = 0.0

    def update(self, now: float, ambiguity: Ambiguity, result: FrameResult, events: list[Any]):
        """Returns (ambiguity, result, events, image copy, counts copy) of the best frame when the stretch is over."""
        if ambiguity.score < self.trigger:
            return self.flush()
        if self._best is None:
            self._started = now
        if self._best is None or ambiguity.score > self._best[0].score:
            self._best = (ambiguity, result, list(events), result.frame.image.copy(), copy_counts(result.counts))
        if now - self._started >= self.stretch_s:
            return self.flush()
        return None

    def flush(self):
        best, self._best = self._best, None
        return best

    def reset(self) -> None:
        self._best = None


# --- limits -----------------------------------------------------------------------------------------------


class HourlyCap:
    """At most ``limit`` takes in any sliding hour."""

    def __init__(self, limit: int):
        self.limit = limit
        self._taken: deque[float] = deque()

    def try_take(self, now: float) -> bool:
        while self._taken and now - self._taken[0] >= 3600.0:
            self._taken.popleft()
        if len(self._taken) >= self.limit:
            return False
        self._taken.append(now)
        return True


class Budget:
    """Estimated money per UTC day across all cameras; a call reserves its estimate, then settles the actual.

    With a ``ledger`` file (under the state directory) the day's spending survives restarts, so a service
    restarted by its watchdog cannot spend the daily budget twice.
    """

    def __init__(self, daily: float, wall_clock: Callable[[], float] = time.time, ledger: Path | None = None):
        self.daily = daily
        self.wall_clock = wall_clock
        self.ledger = ledger
        self._lock = threading.Lock()
        self._day = self._today()
        self._spent = self._load_spent()

    def _load_spent(self) -> float:
        try:
            saved = json.loads(self.ledger.read_text()) if self.ledger else {}
            return float(saved["spent"]) if saved.get("day") == self._day else 0.0
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0.0  # no ledger yet, or an unreadable one: start the day at zero

    def _save(self) -> None:
        if not self.ledger:
            return
        try:
            self.ledger.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.ledger.with_suffix(".tmp")
            temporary.write_text(json.dumps({"day": self._day, "spent": self._spent}))
            temporary.replace(self.ledger)
        except OSError as exc:
            log.warning("escalation budget ledger %s: %s", self.ledger, exc.strerror)

    def _today(self) -> str:
        return datetime.fromtimestamp(self.wall_clock(), timezone.utc).date().isoformat()

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self._spent = today, 0.0

    def try_reserve(self, amount: float) -> bool:
        with self._lock:
            self._roll()
            if self._spent + amount > self.daily + 1e-12:
                return False
            self._spent += amount
            self._save()
            return True

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self._spent = max(0.0, self._spent - reserved + actual)
            self._save()

    @property
    def remaining(self) -> float:
        with self._lock:
            self._roll()
            return max(0.0, self.daily - self._spent)


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``cooldown_s`` lets one trial call through."""

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def allow(self) -> bool:
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial_running or self.clock() - self._opened_at < self.cooldown_s:
                return False
            self._trial_running = True
            return True

    def release(self) -> None:
        """The allowed call was not made: the trial slot, if it was one, is free again."""
        with self._lock:
            self._trial_running = False

    def record(self, success: bool) -> None:
        with self._lock:
            self._trial_running = False
            if success:
                self._consecutive, self._opened_at = 0, None
                return
            self._consecutive += 1
            if self._opened_at is not None or self._consecutive >= self.failures:
                if self._opened_at is None:
                    log.warning("escalation: %d failures in a row; pausing calls for %.0f s", self._consecutive, self.cooldown_s)
                self._opened_at = self.clock()


# --- prompt, image, schema --------------------------------------------------------------------------------


def answer_schema(brief: CameraBrief, events: list[dict]) -> dict:
    """The JSON schema of the answer for one request (strict-mode compatible: everything required, no extras)."""

    def counts_of(labels: list[str]) -> dict:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": list(labels),
            "properties": {label: {"type": "integer", "minimum": 0} for label in labels},
        }

    event_id: dict = {"type": "string", "enum": [e["id"] for e in events]} if events else {"type": "string"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["totals", "zones", "events", "description"],
        "properties": {
            "totals": counts_of(brief.labels),
            "zones": {
                "type": "object",
                "additionalProperties": False,
                "required": list(brief.zones),
                "properties": {name: counts_of(zone["labels"]) for name, zone in brief.zones.items()},
            },
            "events": {
                "type": "array",
                "maxItems": len(events),
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "real", "note"],
                    "properties": {"id": event_id, "real": {"type": "boolean"}, "note": {"type": "string"}},
                },
            },
            "description": {"type": "string"},
        },
    }


def build_prompt(request: EscalationRequest, width: int, height: int) -> str:
    brief = request.brief
    src_h, src_w = request.image.shape[:2]
    lines = [
        f"Camera: {brief.description or brief.camera}.",
        f"The image is {width}x{height} pixels.",
        "Count every clearly visible object of these classes:",
    ]
    for label in brief.labels:
        classes = brief.label_classes.get(label, [label])
        also = f" (the detector's classes {', '.join(classes)})" if classes != [label] else ""
        lines.append(f"- {label}{also}")
    if brief.zones:
        drawn = " They are outlined and named on the image." if brief.config.draw_zones else ""
        lines.append(f"Zones (an object is in a zone when the bottom centre of its box is inside it).{drawn}")
        for name, zone in brief.zones.items():
            xs = [p[0] for p in zone["polygon"]]
            ys = [p[1] for p in zone["polygon"]]
            where = (
                f"x {100 * min(xs) / src_w:.0f}-{100 * max(xs) / src_w:.0f}%, "
                f"y {100 * min(ys) / src_h:.0f}-{100 * max(ys) / src_h:.0f}% of the image"
            )
            about = f": {zone['description']}" if zone["description"] else ""
            lines.append(f"- zone {name}{about}; spans {where}; counts {', '.join(zone['labels'])}")
    unsure = [e for e in request.evidence if "box" in e]
    if unsure:
        lines.append("The automatic detector is unsure about these boxes (x1, y1, x2, y2 in source pixels):")
        lines += [f"- {e['class']} at {e['box']} (confidence {e['conf']})" for e in unsure]
    if request.events:
        lines.append("Candidate safety events; for each, say whether it is real and why in a few words:")
        for e in request.events:
            zone = f" in zone {e['zone']}" if e["zone"] else ""
            lines.append(f"- event id {e['id']}: {e['rule']}{zone}")
    lines.append("Answer only with JSON matching the schema: totals (whole image), zones, events, and a one-sentence description.")
    return "\n".join(lines)


def blur_boxes(image: np.ndarray, boxes: Boxes, labels: list[str], blurred_labels: list[str]) -> np.ndarray:
    """Pixelate the boxes whose label is one of ``blurred_labels`` (a copy; the input is left as is)."""
    out = image.copy()
    h, w = out.shape[:2]
    for row, label in enumerate(labels):
        if label not in blurred_labels:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in boxes.xyxy[row])
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        roi = out[y1:y2, x1:x2]
        block = max(6, max(x2 - x1, y2 - y1) // 6)
        small = cv2.resize(roi, (max(1, (x2 - x1) // block), max(1, (y2 - y1) // block)), interpolation=cv2.INTER_AREA)
        out[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    return out


def fit_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is ``long_side`` (never upscale); returns the image and the scale."""
    h, w = image.shape[:2]
    scale = min(1.0, long_side / max(h, w))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def draw_zones(image: np.ndarray, zones: dict[str, dict], scale: float) -> np.ndarray:
    out = image.copy()
    for name, zone in zones.items():
        points = (np.array(zone["polygon"], np.float32) * scale).round().astype(np.int32)
        cv2.polylines(out, [points], True, (0, 255, 255), 1, cv2.LINE_AA)
        x, y = points.min(axis=0)
        cv2.putText(out, name, (int(x) + 3, int(y) + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1, cv2.LINE_AA)
    return out


@dataclass
class PreparedImage:
    jpeg: bytes
    width: int
    height: int
    private: np.ndarray  # the full-size frame after blurring, for the dataset


def prepare_image(request: EscalationRequest, config: EscalationConfig) -> PreparedImage:
    cam = request.brief.config
    private = request.image
    if cam.blur_people:
        private = blur_boxes(private, request.objects, request.object_labels, cam.person_labels)
    sent, scale = fit_long_side(private, config.image_long_side)
    if cam.draw_zones and request.brief.zones:
        sent = draw_zones(sent, request.brief.zones, scale)
    ok, jpeg = cv2.imencode(".jpg", sent, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return PreparedImage(jpeg.tobytes(), sent.shape[1], sent.shape[0], private)


def image_tokens(width: int, height: int) -> int:
    """OpenAI's high-detail estimate: fit in 2048x2048, shortest side at most 768, 170 tokens per 512 tile + 85."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def money(config: EscalationConfig, input_tokens: int, output_tokens: int) -> float:
    return (
        input_tokens * config.price_input_per_1m / 1e6 + output_tokens * config.price_output_per_1m / 1e6 + config.price_per_image
    )


# --- answers ----------------------------------------------------------------------------------------------


class AnswerRejected(Exception):
    def __init__(self, kind: str, detail: str):
        self.kind = kind  # "malformed" (not JSON) or "invalid" (JSON outside the schema)
        super().__init__(detail)


@dataclass(frozen=True)
class ModelAnswer:
    counts: Counts  # zone -> label -> n, with ALL_ZONES for the totals
    events: list[dict]  # {"id", "real", "note"}
    description: str


def parse_answer(content: str | None, schema: dict, request: EscalationRequest) -> ModelAnswer:
    """Parse and validate the model's message; anything outside the schema is rejected, never trusted."""
    if not content or not content.strip():
        raise AnswerRejected("malformed", "empty answer")
    text = content.strip()
    if text.startswith("```"):  # some local servers wrap JSON in a code fence despite the schema
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerRejected("malformed", f"not JSON: {exc}") from None
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise AnswerRejected("invalid", f"{where}: {exc.message}") from None
    counts: Counts = {ALL_ZONES: data["totals"], **data["zones"]}
    if any(n > MAX_SANE_COUNT for per_label in counts.values() for n in per_label.values()):
        raise AnswerRejected("invalid", f"a count above {MAX_SANE_COUNT}")
    known = {e["id"] for e in request.events}
    events = [e for e in data["events"] if e["id"] in known]
    if len({e["id"] for e in events}) != len(events):
        raise AnswerRejected("invalid", "an event answered twice")
    return ModelAnswer(counts, events, data["description"][:DESCRIPTION_CHARS])


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


# --- the model client -------------------------------------------------------------------------------------


def endpoint_on_site(config: EscalationConfig) -> bool:
    if config.on_site is not None:
        return config.on_site
    host = urlparse(config.base_url).hostname if config.base_url else None
    if not host:
        return False
    if host == "localhost" or host.endswith((".local", ".lan", ".internal", ".home.arpa")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


@dataclass(frozen=True)
class RawAnswer:
    """The model's reply, whichever API carried it. ``content`` None: no text came back."""

    content: str | None
    refusal: str | None
    input_tokens: int | None
    output_tokens: int | None


class ModelClient:
    """The official OpenAI SDK against any OpenAI-compatible endpoint: Chat Completions, or the Responses API."""

    def __init__(self, config: EscalationConfig):
        import openai

        self.config = config
        api_key = config.api_key.reveal() if config.api_key else os.environ.get("OPENAI_API_KEY", "not-needed")
        self.client = openai.OpenAI(
            base_url=config.base_url, api_key=api_key, timeout=config.timeout_s, max_retries=config.max_retries
        )

    def ask(self, text: str, jpeg: bytes, schema: dict) -> RawAnswer:
        data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        temperature = {"temperature": self.config.temperature} if self.config.temperature is not None else {}
        if self.config.api == "responses":
            return self._ask_responses(text, data_url, schema, temperature)
        response = self.client.chat.completions.create(
            model=self.config.model,
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text},
                        {"type": "image_url", "image_url": {"url": data_url}},
                    ],
                },
            ],
            response_format={"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema}},
            max_tokens=self.config.max_output_tokens,
            **temperature,
        )
        usage = response.usage
        try:
            message = response.choices[0].message
        except (AttributeError, IndexError, TypeError):
            message = None
        return RawAnswer(
            getattr(message, "content", None),
            getattr(message, "refusal", None),
            getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None),
        )

    def _ask_responses(self, text: str, data_url: str, schema: dict, temperature: dict) -> RawAnswer:
        response = self.client.responses.create(
            model=self.config.model,
            instructions=SYSTEM_PROMPT,
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}, {"type": "input_image", "image_url": data_url}],
                }
            ],
            text={"format": {"type": "json_schema", "name": SCHEMA_NAME, "strict": True, "schema": schema}},
            max_output_tokens=self.config.max_output_tokens,
            **temperature,
        )
        refusal = next(
            (
                part.refusal
                for item in response.output or []
                for part in getattr(item, "content", None) or []
                if getattr(part, "type", None) == "refusal"
            ),
            None,
        )
        usage = response.usage
        return RawAnswer(
            response.output_text or None,
            refusal,
            getattr(usage, "input_tokens", None),
            getattr(usage, "output_tokens", None),
        )

    def close(self) -> None:
        self.client.close()


SCHEMA_NAME = "camera_check"
SYSTEM_PROMPT = (
    "You check the automatic object counts and safety alerts of a fixed camera. Look at the image carefully, "
    "count only what you can see, and answer with JSON that matches the given schema exactly."
)


def classify_error(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APIStatusError):
        return "http_error"
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error"
    return "error"


# --- the shared service: queue, workers, limits -----------------------------------------------------------


class EscalationEvents(Protocol):
    def escalation(self, camera: str, reason: str, outcome: str, seconds: float | None = None, cost: float = 0.0) -> None: ...
    def escalation_state(self, budget_remaining: float, circuit_open: bool) -> None: ...


class EscalationService:
    """Bounded queue (full: the oldest request is dropped and counted) and worker threads that call the model."""

    def __init__(
        self,
        config: EscalationConfig,
        events: EscalationEvents,
        dataset=None,
        client: ModelClient | None = None,
        budget_ledger: Path | None = None,
    ):
        self.config = config
        self.events = events
        self.dataset = dataset
        self.client = client or ModelClient(config)
        self.budget = Budget(config.daily_budget, ledger=budget_ledger)
        self.breaker = CircuitBreaker(config.circuit_breaker.failures, config.circuit_breaker.cooldown_s)
        self.on_site = endpoint_on_site(config)
        self._queue: queue.Queue[EscalationRequest] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"escalation-{i}", daemon=True) for i in range(config.workers)
        ]

    def start(self) -> None:
        self._report_state()
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.client.close()

    def submit(self, request: EscalationRequest) -> None:
        """Never blocks: a full queue loses its oldest request (counted as ``dropped``)."""
        while True:
            try:
                self._queue.put_nowait(request)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                self.events.escalation(dropped.camera, dropped.reason, "dropped")

    def estimate(self, request: EscalationRequest, text_chars: int) -> tuple[int, int, float]:
        h, w = request.image.shape[:2]
        scale = min(1.0, self.config.image_long_side / max(h, w))
        input_tokens = image_tokens(round(w * scale), round(h * scale)) + text_chars // 3 + 100
        output_tokens = self.config.max_output_tokens
        return input_tokens, output_tokens, money(self.config, input_tokens, output_tokens)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                request = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(request)
            except Exception:  # a bug here must not end the worker
                log.exception("escalation of camera %s failed", request.camera)

    def _handle(self, request: EscalationRequest) -> None:
        if not self.breaker.allow():
            self._skip(request, "circuit_open")
            return
        schema = answer_schema(request.brief, request.events)
        prepared = prepare_image(request, self.config)
        text = build_prompt(request, prepared.width, prepared.height)
        est_in, est_out, estimate = self.estimate(request, len(text) + len(json.dumps(schema)))
        if not self.budget.try_reserve(estimate):
            self.breaker.release()
            self._skip(request, "over_budget")
            return
        outcome = self._call(request, text, prepared, schema, estimate, est_in, est_out)
        self.breaker.record(outcome.outcome == "ok")
        self.budget.settle(estimate, outcome.cost)
        self.events.escalation(request.camera, request.reason, outcome.outcome, outcome.latency_s, outcome.cost)
        self._report_state()
        if outcome.outcome == "ok" and self.dataset is not None:
            self._save(request, prepared, outcome)
        request.reply(outcome)

    def _call(self, request, text, prepared, schema, estimate, est_in, est_out) -> EscalationOutcome:
        started = time.monotonic()
        try:
            response = self.client.ask(text, prepared.jpeg, schema)
        except Exception as exc:
            kind = classify_error(exc)
            # a timed-out call may still be billed; refused and unreachable ones are not
            cost = estimate if kind == "timeout" else 0.0
            log.warning("escalation for camera %s failed (%s): %s", request.camera, kind, exc)
            return EscalationOutcome(request, kind, latency_s=time.monotonic() - started, cost=cost, error=str(exc)[:300])
        latency = time.monotonic() - started
        tokens_in = response.input_tokens or est_in
        tokens_out = response.output_tokens or est_out
        outcome = EscalationOutcome(
            request, "ok", latency_s=latency, cost=money(self.config, tokens_in, tokens_out), input_tokens=tokens_in,
            output_tokens=tokens_out,
        )
        try:
            if response.refusal:
                raise AnswerRejected("malformed", f"refused: {response.refusal}")
            outcome.answer = parse_answer(response.content, schema, request)
        except AnswerRejected as exc:
            outcome.outcome, outcome.error = exc.kind, str(exc)[:300]
            log.warning("escalation answer for camera %s rejected (%s): %s", request.camera, exc.kind, exc)
        return outcome

    def _skip(self, request: EscalationRequest, outcome: str) -> None:
        self.events.escalation(request.camera, request.reason, outcome)
        self._report_state()

    def _report_state(self) -> None:
        self.events.escalation_state(self.budget.remaining, self.breaker.is_open)

    def _save(self, request: EscalationRequest, prepared: PreparedImage, outcome: EscalationOutcome) -> None:
        try:
            self.dataset.save(request, prepared.private, outcome)
        except OSError as exc:
            log.warning("cannot save escalated frame of camera %s: %s", request.camera, exc)


# --- reconciling counts -----------------------------------------------------------------------------------


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


# --- per camera, on the frame path ------------------------------------------------------------------------


class SafetyReview(Protocol):
    def open_events(self) -> list[Any]: ...
    def review(self, event_id: str, real: bool, note: str, source: str = "llm") -> list[Message]: ...


class CameraEscalation:
    """One camera's side: decide what to send (cheap, on the camera thread) and apply what came back."""

    def __init__(
        self,
        brief: CameraBrief,
        service: EscalationService,
        scorer: AmbiguityScorer,
        topic: str,
        qos: int,
        events: Any,
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

    def offer(self, result: FrameResult, open_events: list[Any], now: float) -> None:
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
            best = (Ambiguity(ambiguity.score, "audit"), result, open_events, result.frame.image.copy(), result.counts)
            self._send(best, now, cooldown=False)

    def _send(self, best, now: float, cooldown: bool) -> None:
        ambiguity, result, events, image, detector_counts = best
        self._last_escalation = now
        if cooldown:
            self._cooldown_until = now + self.config.thresholds.cooldown_s
        if ambiguity.reason == "weak_event":
            self.scorer.reviewed_events.update(e["event"] for e in ambiguity.evidence if "event" in e)
        if not self.cap.try_take(self.clock()):
            self.events.escalation(self.brief.camera, ambiguity.reason, "hourly_cap")
            return
        self.service.submit(snapshot(self.brief, result, ambiguity, events, self._inbox.put, image, detector_counts))

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
                {**verdict, "rule": next((e["rule"] for e in request.events if e["id"] == verdict["id"]), None)}
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


# --- building -------------------------------------------------------------------------------------------


def build_service(app: AppConfig, metrics) -> EscalationService | None:
    """The shared service when escalation is configured and some camera uses it, else None."""
    config = app.escalation
    if config is None or not config.enabled or not any(c.escalation.enabled for c in app.cameras.values()):
        return None
    from monitor.dataset import DatasetWriter

    dataset = DatasetWriter(config.dataset) if config.dataset.dir else None
    try:
        client = ModelClient(config)
    except ConfigError as error:
        raise ConfigError([f"escalation.api_key: {problem}" for problem in error.problems]) from None
    return EscalationService(config, metrics, dataset, client, budget_ledger=app.state_dir / "escalation-budget.json")


def build_camera_escalation(
    name: str,
    camera: CameraConfig,
    app: AppConfig,
    service: EscalationService | None,
    detector,
    zone_labels: dict[str, list[str]],
    metrics,
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
    )
    scorer = AmbiguityScorer(cam, brief.class_names, detector.thresholds.by_class)
    metrics.register_escalation(name, REASONS)
    return CameraEscalation(brief, service, scorer, f"{app.mqtt.prefix}/{name}/escalations", app.mqtt.qos, metrics)
