"""What MQTT carried, kept for the page: a tap on every message the publisher is given, bounded per camera.

Per camera: the last ``counts`` payload, the last ``events/active`` set, the most recent events (by id,
their latest ``start``/``update``/``end`` payload) and the most recent ``escalations``. Other topics (bare
values, discovery, status) are ignored without parsing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from monitor.publishing.message import Message

log = logging.getLogger(__name__)

KEEP_EVENTS = 50  # per camera, the newest first out
KEEP_ESCALATIONS = 50  # per camera
TOPIC_KINDS = {"counts": "counts", "events": "event", "events/active": "active", "escalations": "escalation"}


@dataclass
class CameraRecord:
    counts: dict | None = None
    active: dict | None = None
    events: OrderedDict[str, dict] = field(default_factory=OrderedDict)  # id -> latest payload, oldest first
    escalations: deque[dict] = field(default_factory=lambda: deque(maxlen=KEEP_ESCALATIONS))


@dataclass(frozen=True)
class CameraView:
    """A consistent copy of one camera's record (the payload dicts are shared and never changed)."""

    counts: dict | None
    active: dict | None
    events: list[dict]  # newest first
    escalations: list[dict]  # newest first


class Recorder:
    """Thread-safe; ``message`` runs on the publishing threads (camera loops), so it only parses and stores."""

    def __init__(self, prefix: str, cameras: list[str]):
        self._topics = {
            f"{prefix}/{camera}/{suffix}": (camera, kind) for camera in cameras for suffix, kind in TOPIC_KINDS.items()
        }
        self._records = {camera: CameraRecord() for camera in cameras}
        self._lock = threading.Lock()

    def message(self, message: Message) -> None:
        where = self._topics.get(message.topic)
        if where is None:
            return
        camera, kind = where
        try:
            payload = json.loads(message.payload)
        except ValueError:
            log.warning("web: %s is not JSON; not shown", message.topic)
            return
        if not isinstance(payload, dict):
            return
        with self._lock:
            self._store(self._records[camera], kind, payload)

    def view(self, camera: str) -> CameraView:
        with self._lock:
            record = self._records[camera]
            return CameraView(
                record.counts, record.active, list(reversed(record.events.values())), list(reversed(record.escalations))
            )

    @staticmethod
    def _store(record: CameraRecord, kind: str, payload: dict) -> None:
        if kind == "counts":
            record.counts = payload
        elif kind == "active":
            record.active = payload
        elif kind == "escalation":
            record.escalations.append(payload)
        elif isinstance(payload.get("id"), str):
            record.events[payload["id"]] = payload
            record.events.move_to_end(payload["id"])
            while len(record.events) > KEEP_EVENTS:
                record.events.popitem(last=False)
