"""The page's read-only JSON answers: cameras, counts, events, escalations and the zone editor's frame.

Everything comes from what the pipeline already produces: the recorded MQTT payloads (``Recorder``), each
camera loop's latest result and reader state, the processed-frames counter and the escalation budget. Names
in the answers (cameras, zones, classes, rules) come from the configuration only, as in the metrics.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from monitor.capture import CameraReader, describe_source
from monitor.config import CameraConfig, WebConfig
from monitor.escalation.limits import Budget
from monitor.frame import FrameResult
from monitor.web.frames import FrameSource
from monitor.web.recorder import KEEP_ESCALATIONS, Recorder

RATE_WINDOW_S = 10.0


class CameraLoopView(Protocol):
    """What the page reads of a camera loop (``monitor.pipeline.CameraLoop``)."""

    reader: CameraReader
    zone_labels: dict[str, list[str]]
    last_result: FrameResult | None


class RateMeter:
    """Per second over the last ``window_s``, from a growing counter sampled whenever a client asks."""

    def __init__(self, read: Callable[[], float], window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.read = read
        self.window_s = window_s
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=64)
        self._lock = threading.Lock()

    def rate(self) -> float | None:
        """None until two samples at least a second apart fall within the window."""
        now, value = self.clock(), self.read()
        with self._lock:
            while self._samples and now - self._samples[0][0] > self.window_s:
                self._samples.popleft()
            if not self._samples or now - self._samples[-1][0] >= 0.5:
                self._samples.append((now, value))
            first_time, first_value = self._samples[0]
        return (value - first_value) / (now - first_time) if now - first_time >= 1.0 else None


def shown_source(source: str | int) -> str:
    """Where the camera is, never how to log in: ``describe_source`` masks the user and password, and the
    query string (which some cameras use for credentials) is left out."""
    return describe_source(source).split("?", 1)[0].split("#", 1)[0]


@dataclass
class CameraPanel:
    name: str
    config: CameraConfig
    loop: CameraLoopView
    frames: FrameSource
    fps: RateMeter


class WebApi:
    def __init__(self, config: WebConfig, panels: dict[str, CameraPanel], recorder: Recorder, budget: Budget | None):
        self.config = config
        self.panels = panels
        self.recorder = recorder
        self.budget = budget

    def cameras(self) -> dict:
        return {"refresh_s": self.config.refresh_s, "cameras": [self._camera(panel) for panel in self.panels.values()]}

    def counts(self) -> dict:
        """Each camera's last counts payload, exactly as MQTT carried it (null before the first)."""
        return {name: self.recorder.view(name).counts for name in self.panels}

    def events(self) -> dict:
        return {"cameras": {name: self._events(name) for name in self.panels}}

    def escalations(self) -> dict:
        merged = [payload for name in self.panels for payload in self.recorder.view(name).escalations]
        merged.sort(key=lambda payload: str(payload.get("ts", "")), reverse=True)
        return {"budget": self._budget(), "escalations": merged[:KEEP_ESCALATIONS]}

    def editor(self, camera: str) -> dict | None:
        """The latest frame of a camera with its objects' anchor points (None: no frame yet)."""
        view = self.panels[camera].frames.current()
        return view.editor_data() if view else None

    def _camera(self, panel: CameraPanel) -> dict:
        reader = panel.loop.reader
        view = panel.frames.current()
        record = self.recorder.view(panel.name)
        counts = record.counts
        fps = panel.fps.rate()
        return {
            "name": panel.name,
            "description": panel.config.description,
            "source": shown_source(panel.config.source),
            "state": reader.state.value,
            "stale": reader.is_stale() or bool(counts and counts.get("stale")),
            "fps": round(fps, 2) if fps is not None else None,
            "target_fps": panel.config.fps,
            "resolution": list(reader.resolution) if reader.resolution else None,
            "frame": view.index if view else None,
            "image": f"camera/{panel.name}.jpg?frame={view.index}" if view else None,
            "count_source": counts.get("source", "detector") if counts else None,
            "counts": counts,
            "active_events": record.active.get("count", 0) if record.active else 0,
        }

    def _events(self, camera: str) -> dict:
        record = self.recorder.view(camera)
        reviews = model_reviews(record.escalations)
        active = (record.active or {}).get("events", [])
        active_ids = {event.get("id") for event in active}
        return {
            "active": [shown_event(event, reviews) for event in active],
            "recent": [shown_event(event, reviews) for event in record.events if event.get("id") not in active_ids],
        }

    def _budget(self) -> dict | None:
        if self.budget is None:
            return None
        remaining = self.budget.remaining
        return {
            "daily": self.budget.daily,
            "spent_today": round(max(0.0, self.budget.daily - remaining), 6),
            "remaining": round(remaining, 6),
        }


def model_reviews(escalations: list[dict]) -> dict[str, list[dict]]:
    """Per event id, what the escalations said about it: the model's verdict and note, the call's latency and cost."""
    out: dict[str, list[dict]] = {}
    for escalation in escalations:
        for verdict in escalation.get("events") or []:
            out.setdefault(str(verdict.get("id")), []).append(
                {
                    "ts": escalation.get("ts"),
                    "real": verdict.get("real"),
                    "note": verdict.get("note"),
                    "outcome": escalation.get("outcome"),
                    "decision": escalation.get("decision"),
                    "latency_s": escalation.get("latency_s"),
                    "cost_estimated": escalation.get("cost_estimated"),
                    "model_name": escalation.get("model_name"),
                }
            )
    return out


def shown_event(payload: dict, reviews: dict[str, list[dict]]) -> dict:
    """An event payload as carried, with its evidence as a link (never a server path) and the model's reviews."""
    event_id = str(payload.get("id"))
    snapshot = payload.get("snapshot")
    link = f"evidence/{event_id}.jpg" if snapshot and Path(snapshot).stem == event_id else None
    return {**payload, "snapshot": link, "model_reviews": reviews.get(event_id, [])}
