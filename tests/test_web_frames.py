"""A camera's frames for the page: one view per processed frame, the last few kept, JPEGs drawn once on demand,
and the zone editor's data with the daemon's own anchor points."""

from __future__ import annotations

import cv2
import numpy as np

from monitor.annotate import zone_colour
from monitor.config import parse_config
from monitor.counting import zone_labels
from monitor.geometry import anchor_points
from monitor.web.frames import KEEP_VIEWS, FrameSource
from web_support import synthetic_result, web_config


def source(tmp_path, latest, **camera) -> FrameSource:
    data = web_config(tmp_path)
    data["cameras"]["street"].update(camera)
    config = parse_config(data).cameras["street"]
    return FrameSource("street", config, latest, zone_labels(config, ["person", "bicycle"]))


def test_one_view_per_frame_and_only_the_last_few_are_kept(tmp_path):
    results = [synthetic_result(index) for index in range(10, 10 + KEEP_VIEWS + 1)]
    latest = [None]
    frames = source(tmp_path, lambda: latest[0])
    assert frames.current() is None
    views = []
    for result in results:
        latest[0] = result
        views.append(frames.current())
        assert frames.current() is views[-1]  # asked again: the same view, nothing new kept
    assert frames.find(10) is None and [frames.find(v.index) for v in views[1:]] == views[1:]


def test_jpegs_are_annotated_or_plain_and_drawn_once(tmp_path):
    view = source(tmp_path, synthetic_result).current()
    annotated, plain = view.jpeg(), view.jpeg(plain=True)
    assert view.jpeg() is annotated and view.jpeg(plain=True) is plain
    drawn = cv2.imdecode(np.frombuffer(annotated, np.uint8), cv2.IMREAD_COLOR)
    bare = cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(bare.astype(int) - 90).max() <= 2  # the grey frame as it was
    patch = drawn[391:394, 548:551].astype(int)  # on the lawn's outline, drawn in its colour
    assert np.abs(patch - np.array(zone_colour("lawn"))).max(axis=2).min() < 60
    assert view.result.frame.image.max() == 90  # the camera's frame is never drawn on


def test_the_editor_gets_the_daemons_anchor_points_and_what_is_counted(tmp_path):
    result = synthetic_result()
    result.labels = ["person", "bicycle"]
    editor = source(tmp_path, lambda: result, classes=["person"]).current().editor_data()
    assert [o["anchor"] for o in editor["objects"]] == anchor_points(result.objects.xyxy, "bottom_center").tolist()
    assert [o["anchor"] for o in editor["objects"]] == [[120.0, 400.0], [515.0, 230.0]]
    assert [(o["label"], o["counted"], o["track_id"]) for o in editor["objects"]] == [("person", True, 3), ("bicycle", False, 4)]
    assert (editor["frame"], editor["width"], editor["height"], editor["labels"]) == (7, 768, 576, ["person"])
    assert editor["image"] == "camera/street.jpg?frame=7&plain=1" and editor["anchor"] == "bottom_center"
    assert editor["zones"]["lot"][0] == [0, 150] and editor["lines"]["crossing"] == [[380, 200], [420, 420]]
    centre = source(tmp_path, lambda: result, anchor="center").current().editor_data()
    assert [o["anchor"] for o in centre["objects"]] == [[120.0, 350.0], [515.0, 190.0]]
