"""Snapshot for setting up zones: one current frame of a camera with its zones, boxes and counts drawn.

An installer runs ``monitor snapshot --camera NAME`` on the host, copies the JPEG off it, reads pixel
coordinates from any image viewer (``--grid`` draws a labelled coordinate grid), edits the polygons in
config.yaml and runs it again until the zones sit where they should.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from monitor.annotate import annotate, draw_faint_boxes, format_counts
from monitor.capture import describe_source, open_capture, valid_image
from monitor.common import ALL_ZONES
from monitor.config import AppConfig, CameraConfig, ConfigError, is_file_path
from monitor.counting import raw_counts, zone_labels
from monitor.detection.loading import build_detector
from monitor.frame import Boxes, Counts
from monitor.tracking import ZoneMap

STREAM_FLUSH_FRAMES = 5  # a live stream's first frames can be stale or half-decoded
GRID_COLOUR = (200, 200, 200)


class SnapshotError(Exception):
    pass


@dataclass
class Snapshot:
    image: np.ndarray  # the annotated frame
    raw: np.ndarray  # the frame as captured
    objects: Boxes
    labels: list[str]  # model class index -> label
    object_zones: list[tuple[str, ...]]
    counts: Counts
    # what the model saw below its class thresholds: drawn faint and listed apart, so that a missing count can be
    # told apart as a threshold (a faint box where the object is) or a zone problem (a counted box outside the zone)
    weak: Boxes = field(default_factory=Boxes.empty)
    weak_zones: list[tuple[str, ...]] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)  # model class index -> confidence threshold
    class_names: list[str] = field(default_factory=list)  # model class index -> the model's own class name


def grab_frame(camera: CameraConfig, skip: int = 0, timeout_s: float = 15.0) -> np.ndarray:
    """One decoded frame from the camera: after ``skip`` frames (and a few more for live streams)."""
    try:
        capture = open_capture(camera.open_target())
    except ConfigError as error:
        raise SnapshotError(str(error)) from None
    try:
        if not capture.isOpened():
            raise SnapshotError(f"cannot open {describe_source(camera.source)}")
        to_skip = skip if is_file_path(camera.source) else skip + STREAM_FLUSH_FRAMES
        deadline = time.monotonic() + timeout_s
        frame = None
        for _ in range(to_skip + 1):
            ok, image = capture.read()
            if not ok or valid_image(image, None):
                if frame is not None or time.monotonic() > deadline:
                    break
                continue
            frame = image
        if frame is None:
            raise SnapshotError(f"no usable frame from {describe_source(camera.source)}")
        return frame
    finally:
        capture.release()


def take_snapshot(app: AppConfig, camera_name: str, skip: int = 0, grid: int = 0) -> Snapshot:
    """Grab a frame, run the camera's model and zones on it (no tracking: a single frame) and draw the result."""
    camera = app.cameras[camera_name]
    raw = grab_frame(camera, skip)
    detector = build_detector(camera.model, app.models[camera.model], app.cache_dir)
    detections = detector.predict([raw])[0]
    passing = detector.thresholds.passing(detections)
    objects, weak = detections.select(passing), detections.select(~passing)
    zone_map = ZoneMap(camera)
    object_labels = [detector.labels[c] for c in objects.class_id.tolist()]
    object_zones = zone_map.assign(objects, object_labels)
    weak_zones = zone_map.assign(weak, [detector.labels[c] for c in weak.class_id.tolist()])
    counts = raw_counts(objects, object_zones, object_labels, zone_labels(camera, detector.label_set))
    base = draw_grid(raw.copy(), grid) if grid else raw.copy()
    draw_faint_boxes(base, weak, detector.class_names)  # thresholds are per model class: name it
    zones = {name: zone.polygon for name, zone in camera.zones.items()}
    image = annotate(base, zones, objects, detector.labels, counts=counts, title=f"{camera_name}  {time.strftime('%Y-%m-%d %H:%M:%S')}")
    thresholds = [float(t) for t in detector.thresholds.by_class]
    return Snapshot(image, raw, objects, detector.labels, object_zones, counts, weak, weak_zones, thresholds, detector.class_names)


def draw_grid(image: np.ndarray, step: int) -> np.ndarray:
    """Thin lines every ``step`` pixels, labelled with their coordinate, to read polygon points off the image."""
    height, width = image.shape[:2]
    for x in range(step, width, step):
        cv2.line(image, (x, 0), (x, height - 1), GRID_COLOUR, 1)
        cv2.putText(image, str(x), (x + 2, height - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, GRID_COLOUR, 1, cv2.LINE_AA)
    for y in range(step, height, step):
        cv2.line(image, (0, y), (width - 1, y), GRID_COLOUR, 1)
        cv2.putText(image, str(y), (2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, GRID_COLOUR, 1, cv2.LINE_AA)
    return image


def write_jpeg(path: Path, image: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SnapshotError(f"cannot encode {path} as JPEG")
    path.write_bytes(data.tobytes())


def describe(app: AppConfig, camera_name: str, snapshot: Snapshot) -> list[str]:
    """What the command prints: image size, each zone's and line's coordinates, and the counts."""
    camera = app.cameras[camera_name]
    height, width = snapshot.raw.shape[:2]
    lines = [f"camera {camera_name}: {width}x{height} from {describe_source(camera.source)}"]
    lines.append(f"{len(snapshot.objects)} objects: " + format_counts(snapshot.counts.get(ALL_ZONES, {})))
    for row in range(len(snapshot.objects)):
        x1, y1, x2, y2 = (round(float(v)) for v in snapshot.objects.xyxy[row])
        label = snapshot.labels[int(snapshot.objects.class_id[row])]
        zones = ", ".join(snapshot.object_zones[row]) or "-"
        lines.append(f"  {label} {snapshot.objects.conf[row]:.2f} box [{x1}, {y1}, {x2}, {y2}] zones: {zones}")
    if len(snapshot.weak):
        lines.append(f"{len(snapshot.weak)} below their class threshold (drawn faint, not counted):")
    for row in range(len(snapshot.weak)):
        x1, y1, x2, y2 = (round(float(v)) for v in snapshot.weak.xyxy[row])
        class_id = int(snapshot.weak.class_id[row])
        label, name = snapshot.labels[class_id], snapshot.class_names[class_id]
        seen_as = label if label == name else f"{label} as {name}"  # thresholds are per model class
        zones = ", ".join(snapshot.weak_zones[row]) or "-"
        lines.append(f"  ({seen_as} {snapshot.weak.conf[row]:.2f} < {snapshot.thresholds[class_id]:.2f}) "
                     f"box [{x1}, {y1}, {x2}, {y2}] in: {zones}")
    for name, zone in camera.zones.items():
        points = ", ".join(f"[{x:g}, {y:g}]" for x, y in zone.polygon)
        lines.append(f"zone {name}: polygon [{points}]  counts: {format_counts(snapshot.counts.get(name, {}))}")
    for name, line in camera.lines.items():
        (x0, y0), (x1, y1) = line.points
        lines.append(f"line {name}: points [[{x0:g}, {y0:g}], [{x1:g}, {y1:g}]]")
    return lines

