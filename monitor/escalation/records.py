"""The learning loop's records: each answered escalation saved as the frame that left the host plus a JSON record
(the detector's boxes, the weak detections, the open events and the model's answer), bounded on disk.

On disk, per saved frame: ``<dir>/<camera>/<utc time>_<frame>_<reason>.jpg`` and a ``.json`` record next to
it. ``monitor dataset export`` (``monitor.tools.dataset``) turns them into a YOLO dataset.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from monitor.config import DatasetConfig
from monitor.escalation.request import EscalationOutcome, EscalationRequest
from monitor.frame import Boxes
from monitor.safety.events import OpenEvent

RECORD_VERSION = 2  # 2: the camera's zones and anchor, and the events' boxes (which the export needs)
READABLE_VERSIONS = (1, 2)


class DatasetWriter:
    """Saves escalated frames; beyond ``max_mb`` the oldest frames are deleted. Safe to call from many threads."""

    def __init__(self, config: DatasetConfig):
        self.root = Path(config.dir)
        self.max_bytes = int(config.max_mb * 1024 * 1024)
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        self._files = sorted(self._scan(), key=lambda item: item[0])  # (stem name, jpg path, bytes of the pair)
        self._bytes = sum(size for _, _, size in self._files)

    def _scan(self):
        for jpg in self.root.glob("*/*.jpg"):
            record = jpg.with_suffix(".json")
            size = jpg.stat().st_size + (record.stat().st_size if record.exists() else 0)
            yield jpg.stem, jpg, size

    def save(self, request: EscalationRequest, image: np.ndarray, outcome: EscalationOutcome) -> Path:
        """Write the frame (as it left the host: blurred if configured, without zone outlines) and its record."""
        stamp = datetime.fromtimestamp(request.wall_time, timezone.utc).strftime("%Y%m%dT%H%M%S_%f")
        stem = f"{stamp}_{request.frame_index:08d}_{request.reason}"
        folder = self.root / request.camera
        folder.mkdir(exist_ok=True)
        jpg = folder / f"{stem}.jpg"
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError("JPEG encoding failed")
        record = json.dumps(build_record(request, image, outcome), separators=(",", ":"))
        with self._lock:
            jpg.write_bytes(data.tobytes())
            jpg.with_suffix(".json").write_text(record)
            self._files.append((stem, jpg, len(data) + len(record)))
            self._bytes += len(data) + len(record)
            self._trim()
        return jpg

    def _trim(self) -> None:
        self._files.sort(key=lambda item: item[0])
        while self._bytes > self.max_bytes and len(self._files) > 1:
            _, jpg, size = self._files.pop(0)
            jpg.unlink(missing_ok=True)
            jpg.with_suffix(".json").unlink(missing_ok=True)
            self._bytes -= size

    @property
    def size_bytes(self) -> int:
        return self._bytes


def build_record(request: EscalationRequest, image: np.ndarray, outcome: EscalationOutcome) -> dict:
    answer = outcome.answer
    return {
        "version": RECORD_VERSION,
        "camera": request.camera,
        "ts": datetime.fromtimestamp(request.wall_time, timezone.utc).isoformat(),
        "frame": request.frame_index,
        "reason": request.reason,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "class_names": request.brief.class_names,
        "class_labels": _class_labels(request),
        "objects": _boxes(request.objects),
        "detections": _boxes(request.detections),
        "detector_counts": request.detector_counts,
        "zones": {name: zone["polygon"] for name, zone in request.brief.zones.items()},
        "anchor": request.brief.anchor,
        "events": [_event(event) for event in request.events],
        "answer": {"counts": answer.counts, "events": answer.events, "description": answer.description} if answer else None,
    }


def _class_labels(request: EscalationRequest) -> list[str]:
    brief = request.brief
    by_class = {c: label for label, classes in brief.label_classes.items() for c in classes}
    return [by_class.get(name, name) for name in brief.class_names]


def _boxes(boxes: Boxes) -> list[dict]:
    return [
        {"xyxy": [round(float(v), 2) for v in xyxy], "conf": round(float(conf), 4), "class_id": int(cls), "track_id": int(tid)}
        for xyxy, conf, cls, tid in zip(boxes.xyxy, boxes.conf, boxes.class_id, boxes.track_id)
    ]


def _event(event: OpenEvent) -> dict:
    return {
        "id": event.id, "rule": event.rule, "zone": event.zone, "track_ids": list(event.track_ids), "ambiguous": event.ambiguous,
        "boxes": [[round(float(v), 2) for v in box] for box in event.boxes],
    }
