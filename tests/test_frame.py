"""The typed frame objects: Boxes keep their parallel arrays aligned and typed, the stream clock of a frame, labels."""

from __future__ import annotations

import numpy as np

from monitor.frame import Boxes, CapturedFrame, FrameResult

DTYPES = {"xyxy": np.float32, "conf": np.float32, "class_id": np.int32, "track_id": np.int64}


def three_boxes() -> Boxes:
    return Boxes(
        np.array([[0, 0, 10, 10], [5, 5, 20, 30], [100, 50, 140, 90]], np.float32),
        np.array([0.9, 0.4, 0.7], np.float32),
        np.array([0, 1, 0], np.int32),
        np.array([7, -1, 9], np.int64),
    )


def dtypes(boxes: Boxes) -> dict:
    return {name: getattr(boxes, name).dtype.type for name in DTYPES}


def test_empty_boxes_have_zero_rows_of_the_right_shapes_and_types():
    empty = Boxes.empty()
    assert len(empty) == 0
    assert empty.xyxy.shape == (0, 4) and empty.conf.shape == empty.class_id.shape == empty.track_id.shape == (0,)
    assert dtypes(empty) == DTYPES


def test_select_keeps_the_rows_aligned():
    picked = three_boxes().select(np.array([True, False, True]))
    assert len(picked) == 2
    assert picked.xyxy.tolist() == [[0, 0, 10, 10], [100, 50, 140, 90]]
    assert picked.conf.tolist() == np.array([0.9, 0.7], np.float32).tolist()
    assert picked.class_id.tolist() == [0, 0] and picked.track_id.tolist() == [7, 9]
    assert dtypes(picked) == DTYPES


def test_select_by_index_order_and_nothing():
    boxes = three_boxes()
    assert boxes.select(np.array([2, 0])).track_id.tolist() == [9, 7]
    assert len(boxes.select(np.zeros(3, bool))) == 0


def test_concat_appends_rows_and_keeps_types():
    boxes = three_boxes()
    joined = boxes.concat(boxes.select(np.array([1])))
    assert len(joined) == 4
    assert joined.xyxy[3].tolist() == [5, 5, 20, 30] and joined.track_id.tolist() == [7, -1, 9, -1]
    assert dtypes(joined) == DTYPES
    assert len(Boxes.empty().concat(Boxes.empty())) == 0 and dtypes(Boxes.empty().concat(boxes)) == DTYPES


def frame(media_time: float | None) -> CapturedFrame:
    return CapturedFrame("cam", 3, np.zeros((4, 4, 3), np.uint8), wall_time=1_700_000_000.0, mono_time=500.0, media_time=media_time)


def test_stream_time_is_the_media_time_of_a_file():
    assert frame(12.5).stream_time == 12.5
    assert frame(0.0).stream_time == 0.0  # the first frame of a file, not "no media time"


def test_stream_time_of_a_live_source_is_the_monotonic_clock():
    assert frame(None).stream_time == 500.0


def test_label_of_maps_the_class_id_through_the_labels():
    result = FrameResult(frame(None), ["person", "person_down"], objects=three_boxes())
    assert [result.label_of(row) for row in range(3)] == ["person", "person_down", "person"]
    other = Boxes(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.array([1], np.int32), np.array([-1], np.int64))
    assert result.label_of(0, other) == "person_down"
    assert result.camera == "cam"


def test_each_result_starts_with_its_own_empty_parts():
    first, second = FrameResult(frame(None), ["person"]), FrameResult(frame(None), ["person"])
    first.counts["lot"] = {"person": 1}
    first.object_zones.append(("lot",))
    assert second.counts == {} and second.object_zones == [] and len(second.objects) == 0
    assert first.inferred is True and first.counts_changed is False
