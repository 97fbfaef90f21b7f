"""Inference engines: ONNX and OpenVINO exports built once and cached next to the model, predicting what
PyTorch predicts; the cache key; a missing runtime or GPU named up front."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from detection_support import IMGSZ, model_config, same_boxes

from monitor.detection import Detector, ModelLoadError, load_model
from monitor.detection.engines import EngineError, cached_path, check_runtime, device_key, prepare
from monitor.frame import Boxes


def test_tensorrt_without_a_gpu_is_a_clear_error(tmp_path, person_model):
    model = tmp_path / "person.pt"
    shutil.copy(person_model, model)
    with pytest.raises(ModelLoadError, match=r"models\.person\.engine: tensorrt needs a CUDA device"):
        load_model("person", model_config(model, engine="tensorrt"), device="cpu")


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


def test_the_cache_key_holds_everything_an_export_depends_on(tmp_path):
    source = tmp_path / "person.pt"
    base = cached_path(source, "onnx", "any", 640, 4, False)
    assert base == tmp_path / "person.engines" / "person-any-640-b4-fp32.onnx"
    variants = [
        cached_path(source, "openvino", "any", 640, 4, False),
        cached_path(source, "tensorrt", "nvidia-h200", 640, 4, False),
        cached_path(source, "onnx", "any", 320, 4, False),
        cached_path(source, "onnx", "any", 640, 8, False),
        cached_path(source, "onnx", "any", 640, 4, True),
    ]
    assert len({base, *variants}) == 6
    assert [p.name for p in variants[:2]] == ["person-any-640-b4-fp32_openvino_model", "person-nvidia-h200-640-b4-fp32.engine"]
    assert variants[-1].name == "person-any-640-b4-fp16.onnx"


def test_portable_exports_are_tied_to_no_device():
    assert device_key("onnx", "cpu") == device_key("openvino", "cuda:0") == "any"


def test_tensorrt_needs_a_cuda_device_before_anything_is_built():
    with pytest.raises(EngineError, match="tensorrt needs a CUDA device"):
        device_key("tensorrt", "cpu")


def test_check_runtime_names_the_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(EngineError, match=r"^onnx needs the onnxruntime package \(pip install 'camera-monitor\[onnx\]'\)$"):
        check_runtime("onnx")
    with pytest.raises(EngineError, match=r"tensorrt needs the tensorrt package \(pip install 'camera-monitor\[tensorrt\]'\)"):
        check_runtime("tensorrt")


def test_a_cached_export_is_used_as_it_is(tmp_path, monkeypatch):
    import monitor.detection.engines as engines

    source = tmp_path / "person.pt"
    source.write_bytes(b"weights")
    config = model_config(source, engine="onnx", max_batch=2)
    cached = cached_path(source, "onnx", "any", IMGSZ, 2, False)
    cached.parent.mkdir()
    cached.write_bytes(b"built earlier")
    monkeypatch.setattr(engines, "_export", lambda *a: pytest.fail("rebuilt a cached export"))
    assert prepare("person", config, "cpu", False) == cached
    assert cached.read_bytes() == b"built earlier"


def test_without_an_engine_or_for_a_non_pt_file_the_model_itself_is_loaded(tmp_path):
    source = tmp_path / "person.pt"
    assert prepare("person", model_config(source), "cpu", False) == source
    onnx = tmp_path / "person.onnx"
    assert prepare("person", model_config(onnx, engine="openvino"), "cpu", False) == onnx
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_is_an_error_naming_the_key_and_leaves_no_file(tmp_path):
    source = tmp_path / "person.pt"
    source.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(EngineError, match=r"models\.person\.engine: cannot build the onnx export of .*person\.pt"):
        prepare("person", model_config(source, engine="onnx"), "cpu", False)
    assert list((tmp_path / "person.engines").iterdir()) == []
