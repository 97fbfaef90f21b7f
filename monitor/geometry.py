"""Image geometry shared by tracking, safety and escalation: box overlap, anchor points, point-in-polygon.

Boxes are ``(N, 4)`` arrays of ``x1, y1, x2, y2`` image pixels (origin top-left, y down).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Anchor = str  # "bottom_center" (feet on the floor) or "center"


def box_iou(a: np.ndarray | Sequence[Sequence[float]], b: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Pairwise intersection over union of (N, 4) and (M, 4) boxes: an (N, M) array (0 where both are empty)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """The overlap of two single boxes (``box_iou`` of one against one)."""
    return float(box_iou([a], [b])[0, 0])


def anchor_points(xyxy: np.ndarray, anchor: Anchor) -> np.ndarray:
    """(N, 2) points that decide zone membership: bottom-centre (feet, on the floor) or centre."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    y = xyxy[:, 3] if anchor == "bottom_center" else (xyxy[:, 1] + xyxy[:, 3]) / 2
    return np.column_stack([x, y])


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points; points on an edge may fall either way."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    polygon = np.asarray(polygon, np.float64)
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    straddles = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return np.count_nonzero(straddles & (x < x_cross), axis=1) % 2 == 1


def zone_membership(xyxy: np.ndarray, anchor: Anchor, polygons: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per zone, a bool per box: is the box's anchor inside the zone's polygon."""
    if len(xyxy) == 0:
        return {name: np.zeros(0, bool) for name in polygons}
    points = anchor_points(xyxy, anchor)
    return {name: points_in_polygon(points, polygon) for name, polygon in polygons.items()}


def polygon_overlaps_image(polygon: Sequence[Sequence[float]], width: float, height: float) -> bool:
    """Does the polygon cover any area of the ``width`` x ``height`` image?"""
    return area_in_image(polygon, width, height) > 0


def area_in_image(polygon: Sequence[Sequence[float]], width: float, height: float) -> float:
    """The polygon's area inside the ``width`` x ``height`` image, in pixels (Sutherland-Hodgman clip)."""
    points = [tuple(map(float, p)) for p in polygon]
    edges = [(0, 0.0, 1), (0, float(width), -1), (1, 0.0, 1), (1, float(height), -1)]  # axis, limit, inside side
    for axis, limit, side in edges:
        clipped: list[tuple[float, float]] = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            current_in = (current[axis] - limit) * side >= 0
            previous_in = (previous[axis] - limit) * side >= 0
            if current_in != previous_in:
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                clipped.append(tuple(previous[k] + t * (current[k] - previous[k]) for k in (0, 1)))
            if current_in:
                clipped.append(current)
        points = clipped
        if not points:
            return 0.0
    twice_area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))
    return abs(twice_area) / 2


def segment_meets_image(start: Sequence[float], end: Sequence[float], width: float, height: float) -> bool:
    """Does the segment pass through the ``width`` x ``height`` image at all? (Liang-Barsky clip)"""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in ((-dx, x0), (dx, width - x0), (-dy, y0), (dy, height - y0)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True
