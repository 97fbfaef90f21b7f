"""The ice-bag scene generator: exact labels, right zones, reproducible output, loadable datasets."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.tools import icegen

os.environ.setdefault("YOLO_OFFLINE", "1")

GREY = (90.0, 90.0, 90.0)


def plain_canvas(width: int = 200, height: int = 160) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.float32)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def tight_box(mask: np.ndarray):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def scene(seed: int, width: int = 640, height: int = 480):
    rng = np.random.default_rng(seed)
    return icegen.render_background(rng, width, height), icegen.random_scene(rng, width, height)


def as_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("angle", [-25.0, -7.5, 0.0, 12.0, 33.0, 88.0])
@pytest.mark.parametrize("size", [(70, 41), (31, 18), (96, 60)])
def test_bag_box_is_the_tight_box_of_the_drawn_pixels(angle, size):
    canvas = plain_canvas()
    pose = icegen.BagPose(100.3, 110.0, size[0], size[1], angle, style=1234, depth=(0,))
    box, area = icegen.draw_bag(canvas, pose)
    image = as_uint8(canvas)
    x1, y1, x2, y2 = box
    diff = changed(as_uint8(plain_canvas()), image)
    assert area == int(diff.sum()), "every pixel of the bag shape differs from the background"
    # the edge rows/columns just inside the box each hold a bag pixel ...
    assert diff[y1, x1:x2].any() and diff[y2 - 1, x1:x2].any()
    assert diff[y1:y2, x1].any() and diff[y1:y2, x2 - 1].any()
    # ... and nothing outside the box changed: the rows/columns just outside are background
    assert not diff[y1 - 1].any() and not diff[y2].any()
    assert not diff[:, x1 - 1].any() and not diff[:, x2].any()
    assert tight_box(diff) == box


def test_bag_partly_outside_the_frame_is_boxed_inside_it():
    canvas = plain_canvas(120, 100)
    box, _ = icegen.draw_bag(canvas, icegen.BagPose(5.0, 60.0, 70, 41, 10.0, 7, (0,)))
    assert box[0] == 0
    assert tight_box(changed(as_uint8(plain_canvas(120, 100)), as_uint8(canvas))) == box


@pytest.mark.parametrize("seed", [3, 11, 2024])
def test_frame_labels_are_where_the_bags_are_drawn(seed):
    """Removing one bag from a scene changes pixels only inside its own box; a fully visible
    bag changes pixels on every edge of its box; every label is the box of one drawn bag."""
    background, items = scene(seed)
    full, labels = icegen.draw_scene(background, items)
    full = as_uint8(full)
    label_boxes = {bag.box: bag for bag in labels}
    assert len(label_boxes) == len(labels) and labels
    matched = 0
    for item in [item for item in items if isinstance(item, icegen.BagPose)]:
        own_box, _ = icegen.draw_bag(background.copy(), item)
        without, _ = icegen.draw_scene(background, [o for o in items if o is not item])
        seen = tight_box(changed(as_uint8(without), full))
        if seen is not None:
            x1, y1, x2, y2 = own_box
            assert x1 <= seen[0] and y1 <= seen[1] and seen[2] <= x2 and seen[3] <= y2
        label = label_boxes.get(own_box)
        if label is not None:
            matched += 1
            if label.visible == 1.0:
                assert seen == own_box
    assert matched == len(labels), "every label is the box of one drawn bag"


@pytest.mark.parametrize("person_x", [40, 70, 100, 130, 160])
def test_bags_hidden_more_than_70_percent_are_not_labelled(person_x):
    background = plain_canvas(260, 240)
    bag = icegen.BagPose(100.0, 120.0, 90, 55, 0.0, 5, (0,))
    person = icegen.PersonPose(float(person_x), 235.0, 220, 0.0, 3, False, (1,))
    bag_only, _ = icegen.draw_scene(background, [bag])
    person_only, _ = icegen.draw_scene(background, [person])
    bag_mask = changed(as_uint8(background), as_uint8(bag_only))
    person_mask = changed(as_uint8(background), as_uint8(person_only))
    visible = 1 - (bag_mask & person_mask).sum() / bag_mask.sum()
    _, labels = icegen.draw_scene(background, [bag, person])
    if visible < icegen.MIN_VISIBLE:
        assert labels == []
    else:
        assert len(labels) == 1 and labels[0].box == tight_box(bag_mask)
        assert labels[0].visible == pytest.approx(visible, abs=1e-4)


def test_occlusion_sweep_covers_both_outcomes():
    background = plain_canvas(260, 240)
    bag = icegen.BagPose(100.0, 120.0, 90, 55, 0.0, 5, (0,))
    outcomes = {len(icegen.draw_scene(background, [bag, icegen.PersonPose(float(x), 235.0, 220, 0.0, 3, False, (1,))])[1])
                for x in (40, 100, 160)}
    assert outcomes == {0, 1}


def test_frame_without_bags_differs_only_inside_labelled_boxes():
    with_bags, labels = icegen.render_frame(np.random.default_rng(5), effects=False)
    without, labels_again = icegen.render_frame(np.random.default_rng(5), effects=False, draw_bags=False)
    assert labels == labels_again
    inside = np.zeros(with_bags.shape[:2], bool)
    for bag in labels:
        x1, y1, x2, y2 = bag.box
        inside[y1:y2, x1:x2] = True
    outside_changes = changed(with_bags, without) & ~inside
    # only unlabelled (mostly hidden) bags may change pixels outside labelled boxes
    assert outside_changes.sum() < 0.3 * changed(with_bags, without).sum()


def test_zone_polygons_and_membership():
    zones = icegen.scene_zones(640, 480)
    assert list(zones) == ["storage", "cart", "floor"]
    for polygon in zones.values():
        assert len(polygon) >= 3
        assert all(0 <= x <= 640 and 0 <= y <= 480 for x, y in polygon)
    assert icegen.zone_of((100, 300), zones) == "storage"      # lower shelf
    assert icegen.zone_of((500, 400), zones) == "cart"         # middle of the bay
    assert icegen.zone_of((320, 420), zones) == "floor"        # open floor
    assert icegen.zone_of((200, 450), zones) == "floor"        # in front of the merchandiser
    assert icegen.zone_of((320, 100), zones) is None           # the back wall
    assert icegen.zone_of(zones["cart"][0], zones) == "cart"   # shared edge: the first zone wins
    big = icegen.scene_zones(1280, 960)["cart"]
    assert all(abs(bx - 2 * x) <= 1 and abs(by - 2 * y) <= 1 for (bx, by), (x, y) in zip(big, zones["cart"]))


def test_label_zones_follow_the_bottom_centre_rule():
    zones = icegen.scene_zones(640, 480)
    contours = {k: np.asarray(v, np.int32) for k, v in zones.items()}
    seen = set()
    for seed in range(12):
        _, bags = icegen.render_frame(np.random.default_rng(seed))
        for bag in bags:
            x1, _, x2, y2 = bag.box
            inside = [k for k, c in contours.items() if cv2.pointPolygonTest(c, ((x1 + x2) / 2, float(y2)), False) >= 0]
            assert bag.zone == (inside[0] if inside else None)
            seen.add(bag.zone)
    assert {"storage", "cart", "floor"} <= seen


def test_shelf_and_cart_slots_lie_in_their_zones():
    rng = np.random.default_rng(0)
    background = icegen.render_background(rng, 640, 480)
    shelf = icegen.shelf_slots(640, 480, rng)
    _, bags = icegen.draw_scene(background, shelf)
    assert bags and all(b.zone == "storage" for b in bags)
    cart = icegen.CartPose(400.0, 410.0, icegen.depth_scale(410, 480), 1, (410.0, 0))
    _, bags = icegen.draw_scene(background, [cart] + icegen.cart_slots(cart, 640, 480, rng))
    assert bags and all(b.zone == "cart" for b in bags)
    assert icegen.count_by_zone(bags)["cart"] == len(bags)


def test_same_seed_same_bytes_and_different_seed_different_frame():
    a, bags_a = icegen.render_frame(np.random.default_rng(42))
    b, bags_b = icegen.render_frame(np.random.default_rng(42))
    c, _ = icegen.render_frame(np.random.default_rng(43))
    assert a.dtype == np.uint8 and a.shape == (480, 640, 3)
    assert a.tobytes() == b.tobytes() and bags_a == bags_b
    assert a.tobytes() != c.tobytes()
    clip_a = [(f.tobytes(), bags) for f, bags in icegen.render_clip(9, 6)]
    clip_b = [(f.tobytes(), bags) for f, bags in icegen.render_clip(9, 6)]
    assert clip_a == clip_b


def test_render_size_is_configurable():
    image, bags = icegen.render_frame(np.random.default_rng(1), 320, 240)
    assert image.shape == (240, 320, 3)
    assert all(0 <= b.box[0] < b.box[2] <= 320 and 0 <= b.box[1] < b.box[3] <= 240 for b in bags)


def test_clip_story_moves_bags_between_zones():
    counts = [icegen.count_by_zone(bags) for _, bags in icegen.render_clip(4, 60, effects=False)]
    assert counts[0]["cart"] == 0 and counts[0]["floor"] == 0 and counts[0]["storage"] > 0
    assert counts[-1]["cart"] >= 1, "bags were loaded onto the cart"
    assert max(c["floor"] for c in counts[-10:]) >= 1, "a bag was dropped on the floor"
    assert counts[-1]["storage"] < counts[0]["storage"], "bags left the shelves"


def test_write_clip_counts_match_labels_and_video(tmp_path):
    video = tmp_path / "ice.avi"
    truth_path = icegen.write_clip(video, seed=8, n_frames=12, fps=5)
    truth = json.loads(truth_path.read_text())
    assert truth_path == video.with_suffix(".json") and video.stat().st_size > 0
    assert len(truth["frames"]) == 12 and truth["zones"]["cart"] == [list(p) for p in icegen.scene_zones()["cart"]]
    expected = [icegen.count_by_zone(bags) for _, bags in icegen.render_clip(8, 12, fps=5)]
    for frame, want in zip(truth["frames"], expected):
        assert frame["counts"] == want
        zones = [b["zone"] for b in frame["bags"]]
        assert frame["counts"] == {z: zones.count(z) for z in icegen.ZONE_NAMES}
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        assert image.shape == (480, 640, 3)
        frames += 1
    capture.release()
    assert frames == 12


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "data.yaml"}


def test_write_dataset_layout_labels_and_reproducibility(tmp_path):
    yaml_path = icegen.write_dataset(tmp_path / "a", n_train=5, n_val=3, seed=7, imgsz=160)
    icegen.write_dataset(tmp_path / "b", n_train=5, n_val=3, seed=7, imgsz=160)
    root = tmp_path / "a"
    assert file_digests(root) == file_digests(tmp_path / "b")
    for split, count in (("train", 5), ("val", 3)):
        images = sorted((root / "images" / split).glob("*.jpg"))
        labels = sorted((root / "labels" / split).glob("*.txt"))
        assert len(images) == count and [p.stem for p in images] == [p.stem for p in labels]
        assert cv2.imread(str(images[0])).shape == (120, 160, 3)
    stem = sorted((root / "labels" / "train").glob("*.txt"))[0]
    _, bags = icegen.render_frame(np.random.default_rng([7, 0, 0]))
    assert stem.read_text().split("\n")[:-1] == icegen.yolo_label_lines(bags, 640, 480)
    for line in stem.read_text().split():
        assert 0.0 <= float(line) <= 1.0
    assert "names:\n  0: ice_bag" in yaml_path.read_text()


def test_dataset_loads_with_ultralytics(tmp_path, monkeypatch):
    data_utils = pytest.importorskip("ultralytics.data.utils")
    # check_det_dataset asks for Arial.ttf over the network even offline; plots need no font here
    monkeypatch.setattr(data_utils, "check_font", lambda *a, **k: None)
    yaml_path = icegen.write_dataset(tmp_path / "ds", n_train=3, n_val=2, seed=1, imgsz=160)
    data = data_utils.check_det_dataset(str(yaml_path))
    assert data["names"] == {0: "ice_bag"} and data["nc"] == 1
    assert Path(data["train"]).is_dir() and Path(data["val"]).is_dir()
