"""Image geometry: IoU on hand-computed boxes, anchor points, point-in-polygon, zone membership."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.geometry import anchor_points, box_iou, iou, points_in_polygon, zone_membership

SQUARE = [0, 0, 10, 10]


def test_box_iou_is_pairwise_on_hand_computed_boxes():
    a = [SQUARE, [0, 0, 20, 10]]
    b = [SQUARE, [5, 0, 15, 10], [50, 50, 60, 60]]
    expected = [
        [1.0, 50 / 150, 0.0],  # identical; half of each square overlaps; disjoint
        [0.5, 0.5, 0.0],  # the square is half of the wide box; the shifted square lies inside it
    ]
    result = box_iou(a, b)
    assert result.shape == (2, 3)
    assert result == pytest.approx(np.array(expected))


def test_boxes_touching_at_an_edge_do_not_overlap():
    assert iou(SQUARE, [10, 0, 20, 10]) == 0.0


def test_zero_area_boxes_give_zero_not_nan():
    line = [5, 5, 5, 15]
    point = [3, 3, 3, 3]
    result = box_iou([line, point], [line, point, SQUARE])
    assert not np.isnan(result).any()
    assert result.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_iou_of_single_boxes():
    assert iou(SQUARE, SQUARE) == 1.0
    assert iou(SQUARE, [5, 5, 15, 15]) == pytest.approx(25 / 175)
    assert isinstance(iou(SQUARE, [5, 5, 15, 15]), float)


def test_box_iou_with_no_boxes_on_one_side_is_empty():
    assert box_iou(np.zeros((0, 4)), [SQUARE]).shape == (0, 1)


def test_anchor_points_bottom_center_is_the_feet_center_is_the_middle():
    boxes = np.array([[10, 20, 30, 80], [0, 0, 4, 2]], np.float32)
    assert anchor_points(boxes, "bottom_center").tolist() == [[20, 80], [2, 2]]
    assert anchor_points(boxes, "center").tolist() == [[20, 50], [2, 1]]


CONCAVE = np.array([[0, 0], [30, 0], [30, 30], [20, 30], [20, 10], [10, 10], [10, 30], [0, 30]])  # a U, open at the bottom


def test_points_in_a_concave_polygon():
    points = [[5, 20], [25, 20], [15, 5], [15, 20], [15, 40], [-1, 5]]
    assert points_in_polygon(points, CONCAVE).tolist() == [True, True, True, False, False, False]


def test_zone_membership_per_zone_and_box():
    zones = {"u": CONCAVE, "right": np.array([[100, 0], [200, 0], [200, 100], [100, 100]])}
    boxes = np.array([[0, 0, 10, 20], [10, 10, 20, 20], [140, 10, 160, 50]], np.float32)  # feet at (5, 20), (15, 20), (150, 50)
    membership = zone_membership(boxes, "bottom_center", zones)
    assert membership["u"].tolist() == [True, False, False]
    assert membership["right"].tolist() == [False, False, True]
    by_center = zone_membership(boxes, "center", zones)  # centres (5, 10), (15, 15), (150, 30)
    assert by_center["u"].tolist() == [True, False, False]


def test_zone_membership_with_zero_boxes_is_an_empty_mask_per_zone():
    membership = zone_membership(np.zeros((0, 4), np.float32), "bottom_center", {"u": CONCAVE, "v": CONCAVE})
    assert set(membership) == {"u", "v"}
    assert all(mask.dtype == bool and mask.shape == (0,) for mask in membership.values())
