"""Inference engines: ``engine: auto``'s choice, ONNX and OpenVINO exports built once in the cache directory (never
next to the model, whose folder may be read-only), predicting what PyTorch predicts; the cache key; a missing runtime
or GPU named up front; an export that cannot be built falls back to PyTorch under ``auto``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CLIP, ROOT, write_config
from detection_support import IMGSZ, model_config, same_boxes

from monitor.detection import Detector, ModelLoadError, load_model
from monitor.detection.engines import (
    EngineError,
    cached_path,
    check_runtime,
    choose_engine,
    cpu_threads,
    device_key,
    model_digest,
    prepare,
)
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
    return Detector("person", model_config(model, engine="onnx", max_batch=4), cache_dir=model.parent.parent / "onnx-cache")


def test_onnx_export_is_cached_in_the_cache_dir_not_next_to_the_model(onnx_detector):
    config, cache = onnx_detector.config, config_cache(onnx_detector)
    expected = cached_path(cache, config.path, "onnx", "any", IMGSZ, 4, False)
    assert expected.is_file() and expected.parent == cache / "engines" and onnx_detector.model_path == expected
    built = expected.stat().st_mtime_ns
    assert prepare("person", config, "cpu", False, cache).path == expected
    assert expected.stat().st_mtime_ns == built  # reused, not rebuilt
    assert [p.name for p in config.path.parent.iterdir()] == ["person.pt"]
    assert [p.name for p in (cache / "engines").iterdir()] == [expected.name]  # no scratch folder left behind


def config_cache(detector: Detector):
    return detector.model_path.parent.parent


def test_onnx_predicts_the_same_boxes_as_pytorch(onnx_detector, detector, frames):
    assert not onnx_detector.is_pytorch
    images = list(frames.values())
    from_onnx = onnx_detector.predict(images)  # a batch of 4 through the dynamic-batch export
    from_torch = detector.predict(images)
    for a, b in zip(from_onnx, from_torch):
        assert len(b) > 0
        assert same_boxes(a, b, atol=1.0)


@pytest.fixture(scope="module")
def openvino_detector(person_model) -> Detector:
    """``auto`` on a CPU with the OpenVINO runtime: the export, in the session's cache (CACHE_DIRECTORY)."""
    return Detector("person", model_config(person_model, engine="auto", max_batch=4))


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


def test_auto_on_a_cpu_runs_the_openvino_export_and_finds_what_pytorch_finds(openvino_detector, detector, frames, session_cache_dir):
    expected = cached_path(session_cache_dir, openvino_detector.config.path, "openvino", "any", IMGSZ, 4, False)
    assert expected.is_dir() and list(expected.glob("*.xml")) and openvino_detector.model_path == expected
    assert (openvino_detector.engine.engine, openvino_detector.engine.reason) == ("openvino", "auto_cpu_openvino")
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
        load_model("person", model_config(model, engine="openvino"), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing half-built


def test_auto_without_the_openvino_runtime_runs_pytorch_and_says_how_to_get_it(tmp_path, person_model, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real_find_spec(name, *a))
    choice = choose_engine(model_config(person_model, engine="auto"), "cpu")
    assert (choice.engine, choice.reason) == ("pytorch", "auto_cpu_no_openvino")
    assert "pip install 'camera-monitor[openvino]'" in choice.why
    loaded = load_model("person", model_config(person_model, engine="auto"), cache_dir=tmp_path / "cache")
    assert loaded.path == person_model and not (tmp_path / "cache").exists()


def test_auto_picks_pytorch_on_cuda_and_openvino_on_a_cpu(person_model):
    auto = model_config(person_model, engine="auto")
    assert (choose_engine(auto, "cuda:0").engine, choose_engine(auto, "cuda:0").reason) == ("pytorch", "auto_gpu")
    assert "FP16" in choose_engine(auto, "cuda:0").why and "tensorrt is opt-in" in choose_engine(auto, "cuda:0").why
    assert choose_engine(auto, "mps").engine == "pytorch"
    assert (choose_engine(auto, "cpu").engine, choose_engine(auto, "cpu").reason) == ("openvino", "auto_cpu_openvino")
    assert choose_engine(model_config(person_model.with_suffix(".onnx"), engine="auto"), "cpu").reason == "auto_not_pt"
    for configured in ("pytorch", "none"):
        assert choose_engine(model_config(person_model, engine=configured), "cpu").engine == "pytorch"
    onnx = choose_engine(model_config(person_model, engine="onnx"), "cpu")
    assert (onnx.engine, onnx.reason) == ("onnx", "configured")


def test_under_auto_an_export_that_cannot_be_built_falls_back_to_pytorch_with_one_warning(tmp_path, caplog):
    source = tmp_path / "person.pt"
    source.write_bytes(np.random.default_rng(0).bytes(2048))  # not a model: the exporter fails
    with caplog.at_level("WARNING", logger="monitor.detection.engines"):
        prepared = prepare("person", model_config(source, engine="auto"), "cpu", False, tmp_path / "cache")
    assert prepared.path == source and (prepared.choice.engine, prepared.choice.reason) == ("pytorch", "export_failed")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "cannot build the openvino export" in warnings[0] and "running it on PyTorch" in warnings[0]
    assert list((tmp_path / "cache" / "engines").iterdir()) == []  # no scratch folder left behind


def test_the_cache_key_holds_everything_an_export_depends_on(tmp_path):
    source = tmp_path / "person.pt"
    source.write_bytes(b"weights")
    cache = tmp_path / "cache"
    base = cached_path(cache, source, "onnx", "any", 640, 4, False)
    digest = model_digest(source)
    assert base == cache / "engines" / f"person-{digest}-any-640-b4-fp32.onnx"
    variants = [
        cached_path(cache, source, "openvino", "any", 640, 4, False),
        cached_path(cache, source, "tensorrt", "nvidia-h200", 640, 4, False),
        cached_path(cache, source, "onnx", "any", 320, 4, False),
        cached_path(cache, source, "onnx", "any", 640, 8, False),
        cached_path(cache, source, "onnx", "any", 640, 4, True),
    ]
    assert len({base, *variants}) == 6
    assert [p.name for p in variants[:2]] == [f"person-{digest}-any-640-b4-fp32_openvino_model", f"person-{digest}-nvidia-h200-640-b4-fp32.engine"]
    assert variants[-1].name == f"person-{digest}-any-640-b4-fp16.onnx"
    source.write_bytes(b"retrained weights")  # a new model at the same path gets exports of its own
    assert cached_path(cache, source, "onnx", "any", 640, 4, False) != base


def test_openvino_runs_with_the_threads_given(person_model, openvino_detector, frames):
    def threads_of(detector: Detector) -> int:
        return detector.model.predictor.model.backend.ov_compiled_model.get_property("INFERENCE_NUM_THREADS")

    assert threads_of(openvino_detector) == openvino_detector.threads == cpu_threads(1)  # the default: decoding's leftovers
    one = Detector("person", model_config(person_model, engine="auto", max_batch=4, threads=1))  # the same cached export
    assert threads_of(one) == 1
    assert matched(one.predict([frames[0]])[0], openvino_detector.predict([frames[0]])[0], margin=0.01)


def test_openvino_gets_the_cores_that_decoding_leaves():
    assert [cpu_threads(cameras, cores=2) for cameras in (1, 2, 4, 8, 9, 16)] == [2, 2, 2, 2, 1, 1]
    assert cpu_threads(64, cores=16) == 12 and cpu_threads(1, cores=1) == 1


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
    cached = cached_path(tmp_path / "cache", source, "onnx", "any", IMGSZ, 2, False)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"built earlier")
    monkeypatch.setattr(engines, "_export", lambda *a: pytest.fail("rebuilt a cached export"))
    assert prepare("person", config, "cpu", False, tmp_path / "cache").path == cached
    assert cached.read_bytes() == b"built earlier"


def test_without_an_engine_or_for_a_non_pt_file_the_model_itself_is_loaded(tmp_path):
    source = tmp_path / "person.pt"
    assert prepare("person", model_config(source), "cpu", False, tmp_path / "cache").path == source
    onnx = tmp_path / "person.onnx"
    assert prepare("person", model_config(onnx, engine="openvino"), "cpu", False, tmp_path / "cache").path == onnx
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_is_an_error_naming_the_key_and_leaves_no_file(tmp_path):
    source = tmp_path / "person.pt"
    source.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(EngineError, match=r"models\.person\.engine: cannot build the onnx export of .*person\.pt"):
        prepare("person", model_config(source, engine="onnx"), "cpu", False, tmp_path / "cache")
    assert list((tmp_path / "cache" / "engines").iterdir()) == []


# --- the shipped unit's situation: the model in a read-only folder, the process without write access to it -------

NOBODY = 65534


@pytest.fixture
def service_like(person_model):
    """A config whose model lies in a read-only folder, run (as root: as nobody, like the unit's DynamicUser) by
    ``monitor check``, with CACHE_DIRECTORY and STATE_DIRECTORY as systemd would set them."""
    base = Path(tempfile.mkdtemp(prefix="monitor-ro-"))  # not under pytest's 0700 folder: nobody must reach it
    base.chmod(0o755)
    models = base / "models"
    models.mkdir()
    shutil.copy(person_model, models / "person-fall.pt")
    data = {
        "models": {"person": {"path": str(models / "person-fall.pt"), "imgsz": IMGSZ, "max_batch": 2, "warmup": False}},
        "cameras": {"street": {"source": str(CLIP), "model": "person"}},
    }
    config = write_config(base, data)
    config.chmod(0o644)
    for folder in ("cache", "state", "home"):
        (base / folder).mkdir()
        _give_to_nobody(base / folder)
    (models / "person-fall.pt").chmod(0o444)
    models.chmod(0o555)
    yield base
    models.chmod(0o755)
    shutil.rmtree(base, ignore_errors=True)


def _give_to_nobody(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)


def check_as_the_service(base: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CACHE_DIRECTORY": str(base / "cache"), "STATE_DIRECTORY": str(base / "state"),
           "HOME": str(base / "home"), "YOLO_CONFIG_DIR": str(base / "home"), "MPLCONFIGDIR": str(base / "home"),
           "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}  # fmt: skip
    as_nobody = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
    return subprocess.run(
        [sys.executable, "-m", "monitor", "check", "--config", str(base / "config.yaml")],
        capture_output=True, text=True, env=env, cwd=base, timeout=600, **as_nobody,
    )  # fmt: skip


@pytest.mark.slow
def test_with_the_model_in_a_read_only_folder_check_builds_the_export_in_the_cache_directory(service_like):
    model = service_like / "models" / "person-fall.pt"
    done = check_as_the_service(service_like)
    assert done.returncode == 0, done.stderr
    export = cached_path(service_like / "cache", model, "openvino", "any", IMGSZ, 2, False)
    assert f"model person: engine openvino on cpu (auto: a CPU, and the OpenVINO runtime is installed); export ready in {export}" in done.stdout
    assert "building the openvino export" in done.stderr and "export built in" in done.stderr  # progress, not silence
    assert export.is_dir() and list(export.glob("*.xml"))
    assert [p.name for p in model.parent.iterdir()] == ["person-fall.pt"]
    again = check_as_the_service(service_like)  # the next start loads it: nothing built
    assert again.returncode == 0 and "building" not in again.stderr and f"export ready in {export}" in again.stdout


def test_an_unwritable_cache_falls_back_to_pytorch_with_one_warning(service_like):
    (service_like / "cache").chmod(0o555)
    if os.geteuid() == 0:
        os.chown(service_like / "cache", 0, 0)  # root's, read-only to nobody
    done = check_as_the_service(service_like)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "cannot build the openvino export" in warnings[0] and "running it on PyTorch" in warnings[0]
    assert "model person: engine pytorch on cpu (the openvino export failed: " in done.stdout
    assert list((service_like / "cache").iterdir()) == []
