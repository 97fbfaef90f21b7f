"""Detection: batching across cameras, per-class thresholds, agnostic NMS, model loading, ONNX export."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from monitor.config import ModelConfig
from monitor.detection import Detector, InferenceWorker, ModelLoadError, load_model
from monitor.detection.engines import cached_path, prepare
from monitor.frame import Boxes
from monitor.metrics import Metrics

IMGSZ = 320  # small: these tests check behaviour, not accuracy
JACKET = (70, 480, 170, 540)  # the yellow jacket on the lawn, which the model calls Fall at 0.45-0.53


@pytest.fixture(scope="module")
def frames(clip) -> dict[int, np.ndarray]:
    """Frames 0, 100, 200, 300 of the street clip: four 'cameras' with different scenes."""
    capture = cv2.VideoCapture(str(clip))
    out = {}
    for index in range(301):
        ok, image = capture.read()
        assert ok
        if index % 100 == 0:
            out[index] = image
    capture.release()
    return out


def model_config(path, **overrides) -> ModelConfig:
    settings = dict(path=path, device="cpu", imgsz=IMGSZ, conf=0.35, class_conf={"Fall": 0.6}, warmup=False)
    return ModelConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def detector(person_model) -> Detector:
    return Detector("person", model_config(person_model))


def same_boxes(a: Boxes, b: Boxes, atol: float) -> bool:
    return (
        len(a) == len(b)
        and np.array_equal(a.class_id, b.class_id)
        and np.allclose(a.xyxy, b.xyxy, atol=atol)
        and np.allclose(a.conf, b.conf, atol=atol / 100)
    )


# --- batching ----------------------------------------------------------------------------------


def serve_together(detector: Detector, images, clients: int | None = None, **config_updates):
    """Submit every image at once to a worker whose model config has ``config_updates``; (outputs, metrics)."""
    variant = Detector.__new__(Detector)
    variant.__dict__.update({**detector.__dict__, "config": detector.config.model_copy(update=config_updates)})
    metrics = Metrics()
    worker = InferenceWorker(variant, metrics)
    if clients is not None:
        worker.clients = clients
    worker.start()
    try:
        futures = [worker.submit(image) for image in images]
        outputs = [future.result(timeout=120) for future in futures]
    finally:
        worker.stop()
    return outputs, metrics


def batch_figures(metrics: Metrics) -> tuple[float, float]:
    """(inference calls, frames served)."""
    get = metrics.registry.get_sample_value
    labels = {"model": "person"}
    return get("monitor_inference_batch_size_count", labels), get("monitor_inference_batch_size_sum", labels)


def test_worker_batches_frames_from_several_cameras(detector, frames):
    outputs, metrics = serve_together(detector, frames.values(), max_batch=4, batch_wait_ms=500)  # four cameras at once
    assert batch_figures(metrics) == (1, 4)
    singles = [detector.predict([image])[0] for image in frames.values()]
    for batched_boxes, single in zip(outputs, singles):
        assert len(single) > 0
        assert same_boxes(batched_boxes, single, atol=0.5)


def test_worker_never_exceeds_max_batch(detector, frames):
    _, metrics = serve_together(detector, frames.values(), max_batch=2, batch_wait_ms=500)
    assert batch_figures(metrics) == (2, 4)
    assert metrics.registry.get_sample_value("monitor_inference_batch_size_bucket", {"model": "person", "le": "2.0"}) == 2


def test_worker_takes_at_most_one_frame_per_camera(detector, frames):
    # two cameras: a batch of two is complete, no need to wait for more
    _, metrics = serve_together(detector, frames.values(), clients=2, max_batch=8, batch_wait_ms=500)
    assert batch_figures(metrics) == (2, 4)


# --- the fast path matches Ultralytics' own predict ---------------------------------------------


@pytest.fixture(scope="module")
def sized_images(frames) -> list[np.ndarray]:
    """Real pictures in three shapes: the street (768x576), a bus (810x1080), a football coach (1280x720)."""
    from ultralytics.utils import ASSETS

    return [frames[0], cv2.imread(str(ASSETS / "bus.jpg")), cv2.imread(str(ASSETS / "zidane.jpg"))]


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


def test_mixed_resolutions_batch_by_shape_and_match_single_frames(detector, sized_images):
    assert {detector.prepare(image).box.input_shape for image in sized_images} == {(256, 320), (320, 256), (192, 320)}
    outputs, metrics = serve_together(detector, sized_images, max_batch=3, batch_wait_ms=500)
    assert batch_figures(metrics) == (1, 3)  # one worker batch, run as one model call per input shape
    for image, batched in zip(sized_images, outputs):
        assert same_boxes(batched, detector.predict([image])[0], atol=1e-3)
    assert set(detector.batch_buffer.allocated) >= {(256, 320, False), (320, 256, False), (192, 320, False)}


# --- thresholds and NMS ------------------------------------------------------------------------


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


# --- loading -----------------------------------------------------------------------------------


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


def test_tensorrt_without_a_gpu_is_a_clear_error(tmp_path, person_model):
    model = tmp_path / "person.pt"
    shutil.copy(person_model, model)
    with pytest.raises(ModelLoadError, match=r"models\.person\.engine: tensorrt needs a CUDA device"):
        load_model("person", model_config(model, engine="tensorrt"), device="cpu")


# --- ONNX export -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_detector(tmp_path_factory, person_model) -> Detector:
    model = tmp_path_factory.mktemp("model") / "person.pt"
    shutil.copy(person_model, model)
    return Detector("person", model_config(model, engine="onnx", max_batch=4))


def test_onnx_export_is_cached_next_to_the_model(onnx_detector):
    config = onnx_detector.config
    expected = cached_path(config.path, "onnx", "any", IMGSZ, 4, False)
    assert expected.is_file() and expected.parent == config.path.parent / "person.engines"
    built = expected.stat().st_mtime_ns
    assert prepare("person", config, "cpu", False) == expected
    assert expected.stat().st_mtime_ns == built  # reused, not rebuilt
    assert sorted(p.name for p in config.path.parent.iterdir()) == ["person.engines", "person.pt"]


def test_onnx_predicts_the_same_boxes_as_pytorch(onnx_detector, detector, frames):
    assert not onnx_detector.is_pytorch
    images = list(frames.values())
    from_onnx = onnx_detector.predict(images)  # a batch of 4 through the dynamic-batch export
    from_torch = detector.predict(images)
    for a, b in zip(from_onnx, from_torch):
        assert len(b) > 0
        assert same_boxes(a, b, atol=1.0)


# --- OpenVINO export ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openvino_detector(tmp_path_factory, person_model) -> Detector:
    model = tmp_path_factory.mktemp("model") / "person.pt"
    shutil.copy(person_model, model)
    return Detector("person", model_config(model, engine="openvino", max_batch=4))


def matched(found: Boxes, reference: Boxes, margin: float) -> bool:
    """Every clear reference box (conf 0.25 or more) is found: same class, IoU > 0.85, conf within ``margin``."""
    for row in np.flatnonzero(reference.conf >= 0.25):
        x1 = np.maximum(found.xyxy[:, 0], reference.xyxy[row, 0])
        y1 = np.maximum(found.xyxy[:, 1], reference.xyxy[row, 1])
        x2 = np.minimum(found.xyxy[:, 2], reference.xyxy[row, 2])
        y2 = np.minimum(found.xyxy[:, 3], reference.xyxy[row, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        iou = inter / (area(found.xyxy) + area(reference.xyxy[row]) - inter)
        same = (iou > 0.85) & (found.class_id == reference.class_id[row]) & (np.abs(found.conf - reference.conf[row]) < margin)
        if not same.any():
            return False
    return True


def test_openvino_export_is_cached_and_finds_what_pytorch_finds(openvino_detector, detector, frames):
    expected = cached_path(openvino_detector.config.path, "openvino", "any", IMGSZ, 4, False)
    assert expected.is_dir() and list(expected.glob("*.xml"))
    assert openvino_detector.model.predictor.model.format == "openvino"
    images = list(frames.values())
    from_openvino = openvino_detector.predict(images)
    for a, b in zip(from_openvino, detector.predict(images)):
        assert len(b) > 0
        # OpenVINO runs in bf16 on CPUs that have it (confidences move by up to ~0.02)
        assert matched(a, b, margin=0.05) and matched(b, a, margin=0.05)


def test_a_missing_engine_runtime_is_named_with_its_install_command(tmp_path, person_model, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real_find_spec(name, *a))
    model = tmp_path / "person.pt"
    shutil.copy(person_model, model)
    expected = r"models\.person\.engine: openvino needs the openvino package \(pip install 'camera-monitor\[openvino\]'\)"
    with pytest.raises(ModelLoadError, match=expected):
        load_model("person", model_config(model, engine="openvino"))
    assert not (tmp_path / "person.engines").exists()  # nothing half-built


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
