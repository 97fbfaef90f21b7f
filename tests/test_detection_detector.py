"""The detector: the fast path matches Ultralytics' own predict, per-class thresholds, agnostic NMS, model
loading errors, CPU threads."""

from __future__ import annotations

import numpy as np
import pytest
from detection_support import model_config, same_boxes

from monitor.detection import Detector, ModelLoadError, load_model
from monitor.frame import Boxes


JACKET = (70, 480, 170, 540)  # the yellow jacket on the lawn, which the model calls Fall at 0.45-0.53


def ultralytics_boxes(detector: Detector, image: np.ndarray) -> Boxes:
    """What ``model.predict`` itself finds, with the detector's thresholds, on a fresh copy of the model."""
    from ultralytics import YOLO

    result = YOLO(str(detector.model.ckpt_path), task="detect").predict(
        image, imgsz=detector.config.imgsz, conf=detector.thresholds.floor, iou=detector.config.iou,
        agnostic_nms=detector.config.agnostic_nms, device="cpu",
        verbose=False,
    )[0]
    data = result.boxes.data.numpy()
    return Boxes(data[:, :4], data[:, 4], data[:, 5].astype(np.int32), np.full(len(data), -1, np.int64))


def test_detector_finds_exactly_what_ultralytics_predict_finds(detector, sized_images):
    for image in sized_images:
        expected = ultralytics_boxes(detector, image)
        assert len(expected) > 0
        assert same_boxes(detector.predict([image])[0], expected, atol=1e-3)


def test_per_class_thresholds_drop_the_middling_fall_but_keep_people(person_model, frames):
    detector = Detector("person", model_config(person_model, imgsz=640))
    assert detector.thresholds.by_class.tolist() == pytest.approx([0.35, 0.6])
    boxes = detector.predict([frames[0]])[0]
    x = (boxes.xyxy[:, 0] + boxes.xyxy[:, 2]) / 2
    y = (boxes.xyxy[:, 1] + boxes.xyxy[:, 3]) / 2
    on_jacket = (x > JACKET[0]) & (x < JACKET[2]) & (y > JACKET[1]) & (y < JACKET[3])
    fall = detector.class_names.index("Fall")
    jacket = on_jacket & (boxes.class_id == fall)
    assert jacket.any(), "the model sees the jacket as Fall"
    assert ((boxes.conf[jacket] > 0.35) & (boxes.conf[jacket] < 0.6)).all()
    passing = detector.thresholds.passing(boxes)
    assert not passing[jacket].any()
    people = (boxes.class_id == detector.class_names.index("Normal")) & (boxes.conf >= 0.35)
    assert people.sum() >= 3 and passing[people].all()


def overlapping_pairs_of_different_classes(boxes: Boxes) -> int:
    from ultralytics.utils.metrics import box_iou
    import torch

    xyxy = torch.from_numpy(boxes.xyxy)
    iou = box_iou(xyxy, xyxy).numpy()
    different = boxes.class_id[:, None] != boxes.class_id[None, :]
    return int(np.triu((iou > 0.5) & different, 1).sum())


def test_agnostic_nms_keeps_one_box_where_two_classes_overlap(person_model, frames):
    per_class = Detector("person", model_config(person_model, imgsz=640, agnostic_nms=False)).predict([frames[0]])[0]
    agnostic = Detector("person", model_config(person_model, imgsz=640, agnostic_nms=True)).predict([frames[0]])[0]
    assert overlapping_pairs_of_different_classes(per_class) >= 1  # one object seen as Normal and as Fall
    assert overlapping_pairs_of_different_classes(agnostic) == 0
    assert len(agnostic) == len(per_class) - overlapping_pairs_of_different_classes(per_class)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"models\.person\.path: file not found: .*nowhere\.pt"):
        load_model("person", model_config(tmp_path / "nowhere.pt"))
    assert list(tmp_path.iterdir()) == []  # nothing downloaded in its place


def test_empty_and_corrupt_model_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(ModelLoadError, match=r"models\.person\.path: file is empty"):
        load_model("person", model_config(empty))
    corrupt = tmp_path / "yolov8n.pt"  # a name Ultralytics would happily download, were it allowed to
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError, match=r"models\.person\.path: cannot load .*yolov8n\.pt"):
        load_model("person", model_config(corrupt))
    assert corrupt.stat().st_size == 4096


def test_threads_sets_torch_intra_op_threads_for_cpu_inference(person_model, frames):
    import torch
    from ultralytics.utils import NUM_THREADS

    before = torch.get_num_threads()
    wanted = NUM_THREADS + 1  # not what Ultralytics' device setup resets torch to
    try:
        detector = Detector("person", model_config(person_model, threads=wanted))
        detector.predict([frames[0]])
        assert torch.get_num_threads() == wanted
        detector.use_cpu()  # the backend is built again (after a GPU failure): the setting survives
        detector.predict([frames[0]])
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
