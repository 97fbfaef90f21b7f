"""Drawing helpers: what is drawn lands where it should, and the input frame is never changed."""

from __future__ import annotations

import numpy as np
from conftest import boxes_of

from monitor.annotate import RED, annotate, zone_colour
from monitor.frame import Boxes

ZONE = [[20, 40], [120, 40], [120, 140], [20, 140]]


def boxes(*rows) -> Boxes:
    return boxes_of(rows)


def grey(h=200, w=300) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def test_returns_a_copy_and_leaves_the_frame_alone():
    image = grey()
    before = image.copy()
    out = annotate(image, {"lot": ZONE}, boxes(((150, 50, 200, 150), 0.9, 0, 3)), ["person"], title="cam 12:00")
    assert out is not image and out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)
    assert changed(out, image).any()


def test_zone_outline_in_its_colour_and_box_edges_drawn():
    out = annotate(grey(), {"lot": ZONE}, boxes(((150, 50, 200, 150), 0.9, 0, 3)), ["person"])
    assert tuple(out[100, 120]) == zone_colour("lot")  # the zone's right edge
    assert tuple(out[100, 200]) == (0, 200, 0)  # the box's right edge
    assert tuple(out[100, 70]) == (128, 128, 128)  # inside the zone: not filled
    assert zone_colour("lot") == zone_colour("lot")


def test_highlighted_zone_is_tinted_and_tracks_and_extra_boxes_are_red():
    out = annotate(
        grey(),
        {"lot": ZONE},
        boxes(((150, 50, 200, 150), 0.9, 0, 3), ((220, 50, 260, 150), 0.8, 0, 4)),
        ["person"],
        highlight_zones=["lot"],
        highlight_tracks=[4],
        extra_boxes=[((10, 160, 60, 190), "Fall 0.52")],
    )
    assert tuple(out[100, 70]) != (128, 128, 128)  # tinted inside
    assert tuple(out[100, 260]) == RED and tuple(out[100, 200]) == (0, 200, 0)
    assert tuple(out[175, 60]) == RED


def test_counts_and_title_banner():
    plain = annotate(grey(), {"lot": ZONE}, Boxes.empty(), ["person"])
    with_text = annotate(grey(), {"lot": ZONE}, Boxes.empty(), ["person"], counts={"lot": {"person": 2}, "_all": {"person": 5}}, title="street 2026-01-01")
    banner = changed(with_text[:24], grey()[:24])
    assert banner.mean() > 0.3  # the banner darkens the strip
    assert changed(with_text, plain)[40:70, 20:180].sum() > 50  # "lot: person=2" replaces "lot" at the top-left corner


def test_unknown_class_ids_and_untracked_boxes_still_draw():
    out = annotate(grey(), {}, boxes(((10, 10, 50, 50), 0.5, 7, -1)), ["person"], title="x" * 500)
    assert tuple(out[30, 50]) == (0, 200, 0)
