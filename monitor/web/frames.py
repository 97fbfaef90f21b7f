"""A camera's latest processed frames for the page: JPEGs drawn on demand, and what the zone editor needs.

The camera loop's ``last_result`` is read, never changed. The last ``KEEP_VIEWS`` frames a client asked
about are kept (with their JPEGs once drawn), so that an image fetched after its JSON is of the same
frame; nothing else is stored, and nothing is drawn until a browser asks.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

import cv2

from monitor.annotate import annotate
from monitor.common import ALL_ZONES, iso_utc
from monitor.config import CameraConfig
from monitor.frame import FrameResult
from monitor.geometry import anchor_points

JPEG_QUALITY = 80
KEEP_VIEWS = 3


class FrameView:
    """One processed frame as the page shows it; JPEGs are encoded once, on first request."""

    def __init__(self, camera: str, config: CameraConfig, result: FrameResult, counted: list[str]):
        self.camera = camera
        self.config = config
        self.result = result
        self.counted = counted  # the labels the camera counts
        self.index = result.frame.index
        self._jpegs: dict[bool, bytes] = {}
        self._lock = threading.Lock()

    def jpeg(self, plain: bool = False) -> bytes:
        """The frame as JPEG: annotated (zones, boxes, counts, a title) or plain (for the zone editor)."""
        with self._lock:
            if plain not in self._jpegs:
                self._jpegs[plain] = encode_jpeg(self.result.frame.image if plain else self._annotated())
            return self._jpegs[plain]

    def _annotated(self):
        result = self.result
        zones = {name: zone.polygon for name, zone in self.config.zones.items()}
        title = f"{self.camera}  {iso_utc(result.frame.wall_time)}  frame {self.index}"
        return annotate(result.frame.image, zones, result.objects, result.labels, counts=result.counts, title=title)

    def editor_data(self) -> dict:
        """The frame's counted objects with their anchor points (the daemon's own rule), zones and lines."""
        result, config = self.result, self.config
        height, width = result.frame.image.shape[:2]
        anchors = anchor_points(result.objects.xyxy, config.anchor)
        objects = [
            {
                "box": [round(float(v), 1) for v in result.objects.xyxy[row]],
                "label": result.label_of(row),
                "conf": round(float(result.objects.conf[row]), 3),
                "track_id": int(result.objects.track_id[row]),
                "anchor": [round(float(v), 2) for v in anchors[row]],
                "counted": result.label_of(row) in self.counted,
            }
            for row in range(len(result.objects))
        ]
        return {
            "camera": self.camera,
            "frame": self.index,
            "ts": iso_utc(result.frame.wall_time),
            "width": width,
            "height": height,
            "anchor": config.anchor,
            "labels": self.counted,
            "image": f"camera/{self.camera}.jpg?frame={self.index}&plain=1",
            "zones": {name: [list(p) for p in zone.polygon] for name, zone in config.zones.items()},
            "lines": {name: [list(p) for p in line.points] for name, line in config.lines.items()},
            "objects": objects,
        }


def encode_jpeg(image) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


class FrameSource:
    """One camera's frames: the latest as a FrameView, and the few recent views a page may still ask for."""

    def __init__(self, name: str, config: CameraConfig, latest: Callable[[], FrameResult | None], zone_labels: dict):
        self.name = name
        self.config = config
        self.latest = latest
        self.counted = list(zone_labels[ALL_ZONES])
        self._views: deque[FrameView] = deque(maxlen=KEEP_VIEWS)
        self._lock = threading.Lock()

    def current(self) -> FrameView | None:
        result = self.latest()
        if result is None:
            return None
        with self._lock:
            if self._views and self._views[-1].result is result:
                return self._views[-1]
            view = FrameView(self.name, self.config, result, self.counted)
            self._views.append(view)
            return view

    def find(self, index: int) -> FrameView | None:
        """A recent frame by its index; None once it is no longer kept."""
        with self._lock:
            return next((view for view in self._views if view.index == index), None)
