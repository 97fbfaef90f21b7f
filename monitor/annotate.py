"""Drawing helpers: zones, boxes with labels and track ids, counts and a title banner on a copy of a frame.

Used for safety evidence snapshots, ``monitor snapshot`` and the operator's page; nothing here changes the
frame it is given.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np

from monitor.common import ALL_ZONES
from monitor.frame import Boxes, Counts

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK, RED = (255, 255, 255), (0, 0, 0), (0, 0, 255)
BOX_COLOUR = (0, 200, 0)
FAINT = (150, 150, 150)
PALETTE = [(255, 191, 0), (0, 215, 255), (180, 105, 255), (0, 165, 255), (255, 255, 0), (147, 20, 255), (50, 205, 154)]

Polygon = Sequence[Sequence[float]] | np.ndarray


def zone_colour(name: str) -> tuple[int, int, int]:
    """A stable colour per zone name (the same in every image and every run)."""
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def annotate(
    image: np.ndarray,
    zones: Mapping[str, Polygon],
    objects: Boxes,
    labels: Sequence[str],
    counts: Counts | None = None,
    title: str | None = None,
    *,
    highlight_zones: Iterable[str] = (),
    highlight_tracks: Iterable[int] = (),
    extra_boxes: Sequence[tuple[Sequence[float], str]] = (),
) -> np.ndarray:
    """A copy of ``image`` (BGR) with the zones, the objects and, if given, counts and a title banner.

    ``labels`` maps the model's class index to its label (``FrameResult.labels``). Highlighted zones
    are drawn thick and tinted; highlighted tracks and ``extra_boxes`` ((x1, y1, x2, y2), text) in red.
    """
    out = np.ascontiguousarray(image).copy()
    highlighted_zones = set(highlight_zones)
    for name, polygon in zones.items():
        draw_zone(out, name, polygon, counts.get(name) if counts else None, name in highlighted_zones)
    draw_boxes(out, objects, labels, set(highlight_tracks))
    for xyxy, text in extra_boxes:
        draw_box(out, xyxy, text, RED, thickness=3)
    if title is not None or (counts and ALL_ZONES in counts):
        banner = title or ""
        if counts and ALL_ZONES in counts:
            banner = f"{banner}  {format_counts(counts[ALL_ZONES])}".strip()
        draw_banner(out, banner)
    return out


def draw_zone(image: np.ndarray, name: str, polygon: Polygon, counts: Mapping[str, int] | None, highlight: bool) -> None:
    points = np.asarray(polygon, np.float64).round().astype(np.int32).reshape(-1, 1, 2)
    colour = RED if highlight else zone_colour(name)
    if highlight:
        tint = image.copy()
        cv2.fillPoly(tint, [points], colour)
        cv2.addWeighted(tint, 0.25, image, 0.75, 0, dst=image)
    cv2.polylines(image, [points], True, colour, 3 if highlight else 2, cv2.LINE_AA)
    text = name if not counts else f"{name}: {format_counts(counts)}"
    x, y = _label_anchor(points.reshape(-1, 2), image.shape)
    draw_text(image, text, (x, y), colour)


def _label_anchor(points: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int]:
    """Just inside the zone's top-left corner (the corner with the smallest x + y), kept within the image."""
    corner = points[np.argmin(points[:, 0] + points[:, 1])]
    x = int(np.clip(corner[0] + 4, 0, max(0, shape[1] - 80)))
    y = int(np.clip(corner[1] + 16, 14, shape[0] - 4))
    return x, y


def draw_boxes(image: np.ndarray, objects: Boxes, labels: Sequence[str], highlight_tracks: set[int]) -> None:
    for row in range(len(objects)):
        class_id = int(objects.class_id[row])
        label = labels[class_id] if 0 <= class_id < len(labels) else str(class_id)
        track_id = int(objects.track_id[row])
        text = f"{label} {objects.conf[row]:.2f}" + (f" #{track_id}" if track_id >= 0 else "")
        highlight = track_id >= 0 and track_id in highlight_tracks
        draw_box(image, objects.xyxy[row], text, RED if highlight else BOX_COLOUR, thickness=3 if highlight else 2)


def draw_faint_boxes(image: np.ndarray, boxes: Boxes, labels: Sequence[str]) -> None:
    """Boxes that are not counted (below their class threshold): thin, grey, with their confidence."""
    for row in range(len(boxes)):
        class_id = int(boxes.class_id[row])
        label = labels[class_id] if 0 <= class_id < len(labels) else str(class_id)
        draw_box(image, boxes.xyxy[row], f"{label} {boxes.conf[row]:.2f}", FAINT, thickness=1)


def draw_box(image: np.ndarray, xyxy: Sequence[float], text: str, colour: tuple[int, int, int], thickness: int = 2) -> None:
    x1, y1, x2, y2 = (int(round(float(v))) for v in xyxy)
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
    draw_text(image, text, (x1, max(12, y1 - 4)), colour)


def draw_text(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int], scale: float = 0.45) -> None:
    """Text on a dark backing so it reads on any background."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x - 1, y - height - 3), (x + width + 1, y + baseline - 1), BLACK, -1)
    cv2.putText(image, text, (x, y - 1), FONT, scale, colour, 1, cv2.LINE_AA)


def draw_banner(image: np.ndarray, text: str) -> None:
    """A dark strip across the top with the text in white (cut to fit the width)."""
    scale, height = 0.55, 24
    overlay = image.copy()
    cv2.rectangle(overlay, (0, 0), (image.shape[1], height), BLACK, -1)
    cv2.addWeighted(overlay, 0.65, image, 0.35, 0, dst=image)
    while text and cv2.getTextSize(text, FONT, scale, 1)[0][0] > image.shape[1] - 12:
        text = text[:-1]
    cv2.putText(image, text, (6, height - 7), FONT, scale, WHITE, 1, cv2.LINE_AA)


def format_counts(counts: Mapping[str, int]) -> str:
    """``person=3, car=1`` (``-`` when nothing is counted), for pictures and for the console."""
    return ", ".join(f"{label}={n}" for label, n in counts.items()) or "-"
