"""Inference engines: which one runs a model (``engine: auto``), and its export, built once and cached.

``auto`` picks PyTorch (FP16) on a CUDA device (TensorRT stays opt-in) and the OpenVINO export on a CPU
when the OpenVINO runtime is installed (the fastest CPU engine: 1.1-1.4x PyTorch's frames per second on an
AVX2 CPU, 2-4x on one with bfloat16 units; bench/RESULTS.md), else PyTorch. Exports go to a cache directory the process may write (``cache_dir``:
systemd's ``$CACHE_DIRECTORY``, else ``<state_dir>/cache``), never next to the model, whose folder may
be read-only (``ProtectSystem=strict``). The cache key holds everything an export depends on: the
model file's content, the engine, the device (a TensorRT engine only runs on the GPU model it was
built for), the image size, the largest batch and the precision. An export never downloads anything:
a missing exporter package is a clear error naming the key. Under ``auto`` an export that cannot be
built is one warning, and the model runs on PyTorch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from monitor.config import ModelConfig, default_state_dir, systemd_cache_dir

log = logging.getLogger(__name__)

SUFFIX = {"onnx": ".onnx", "openvino": "_openvino_model", "tensorrt": ".engine"}
RUNTIME = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino"), "tensorrt": ("tensorrt", "tensorrt")}
FORMAT = {"onnx": "onnx", "openvino": "openvino", "tensorrt": "engine"}
PROGRESS_EVERY_S = 10.0
# CPU one camera's decoding takes: a 720p H.264 frame costs 6.2 ms of CPU (bench/RESULTS.md, "Stages"), 10 fps
DECODE_CORES_PER_CAMERA = 0.062


class EngineError(Exception):
    pass


@dataclass(frozen=True)
class EngineChoice:
    """What runs a model and why: ``reason`` is a small fixed set (a metric label), ``why`` the sentence logged."""

    engine: str  # pytorch, onnx, openvino, tensorrt
    reason: str  # configured, auto_gpu, auto_cpu_openvino, auto_cpu_no_openvino, auto_not_pt, export_failed
    why: str


@dataclass(frozen=True)
class PreparedModel:
    """The file to load, and the engine choice that led to it."""

    path: Path
    choice: EngineChoice


def default_cache_dir() -> Path:
    return systemd_cache_dir() or default_state_dir() / "cache"


def runtime_installed(engine: str) -> bool:
    return importlib.util.find_spec(RUNTIME[engine][0]) is not None


def choose_engine(config: ModelConfig, device: str) -> EngineChoice:
    """``auto``: PyTorch on CUDA, OpenVINO on a CPU that has the runtime, else PyTorch; any other value as given."""
    if config.engine in ("pytorch", "none"):
        return EngineChoice("pytorch", "configured", "engine: pytorch in the config")
    if config.engine != "auto":
        return EngineChoice(config.engine, "configured", f"engine: {config.engine} in the config")
    if Path(config.path).suffix != ".pt":
        return EngineChoice("pytorch", "auto_not_pt", f"auto: {Path(config.path).name} is already an export; loaded as it is")
    if device != "cpu":
        return EngineChoice("pytorch", "auto_gpu", f"auto: PyTorch{' FP16' if device.startswith('cuda') else ''} on {device}"
                            " (engine: tensorrt is opt-in)")  # fmt: skip
    if runtime_installed("openvino"):
        return EngineChoice("openvino", "auto_cpu_openvino", "auto: a CPU, and the OpenVINO runtime is installed")
    return EngineChoice(
        "pytorch", "auto_cpu_no_openvino",
        "auto: a CPU without the OpenVINO runtime (pip install 'camera-monitor[openvino]': the faster CPU engine)",
    )  # fmt: skip


def device_key(engine: str, device: str) -> str:
    """What the export is tied to: the GPU's name for TensorRT, nothing else for the portable formats."""
    if engine != "tensorrt":
        return "any"
    import torch

    if not device.startswith("cuda") and not device.isdigit():
        raise EngineError("tensorrt needs a CUDA device (set device: cuda or auto on a GPU host)")
    index = int(device.split(":")[1]) if ":" in device else int(device) if device.isdigit() else 0
    return re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(index)).strip("-").lower()


def check_runtime(engine: str) -> None:
    """Nothing is installed at run time (Ultralytics would try pip): a missing runtime is named up front."""
    module, extra = RUNTIME[engine]
    if not runtime_installed(engine):
        raise EngineError(f"{engine} needs the {module} package (pip install 'camera-monitor[{extra}]')")


def model_digest(source: Path) -> str:
    """The model file's content, short: a retrained model at the same path gets exports of its own."""
    digest = hashlib.sha256()
    with source.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def cached_path(cache_dir: Path, source: Path, engine: str, key: str, imgsz: int, batch: int, half: bool) -> Path:
    precision = "fp16" if half else "fp32"
    name = f"{source.stem}-{model_digest(source)}-{key}-{imgsz}-b{batch}-{precision}{SUFFIX[engine]}"
    return cache_dir / "engines" / name


def prepare(name: str, config: ModelConfig, device: str, half: bool, cache_dir: Path) -> PreparedModel:
    """The file to load for ``config``: the model itself, or its cached export (built on first use)."""
    source = Path(config.path)
    choice = choose_engine(config, device)
    if choice.engine == "pytorch" or source.suffix != ".pt":
        return PreparedModel(source, choice)
    try:
        return PreparedModel(_cached_export(name, config, choice.engine, device, half, cache_dir), choice)
    except EngineError as exc:
        if choice.reason == "configured":
            raise EngineError(f"models.{name}.engine: {exc}") from None
        log.warning("model %s: %s; running it on PyTorch instead (engine: pytorch silences this)", name, exc)
        return PreparedModel(source, EngineChoice("pytorch", "export_failed", f"the {choice.engine} export failed: {exc}"))


def _cached_export(name: str, config: ModelConfig, engine: str, device: str, half: bool, cache_dir: Path) -> Path:
    source = Path(config.path)
    key = device_key(engine, device)
    check_runtime(engine)
    fp16 = half and engine == "tensorrt"
    target = cached_path(cache_dir, source, engine, key, config.imgsz, config.max_batch, fp16)
    if target.exists():
        return target
    log.info("model %s: building the %s export %s in %s (once; tens of seconds on a small CPU)", name, engine, target.name, target.parent)
    started = time.monotonic()
    try:
        with _Progress(f"model {name}: still building the {engine} export"):
            _export(source, config, engine, device, fp16, target)
    except Exception as exc:  # exporters raise many kinds (missing package, unsupported op, CUDA errors, read-only disk)
        raise EngineError(f"cannot build the {engine} export of {source} in {target.parent}: {exc}") from exc
    log.info("model %s: %s export built in %.0f s: %s", name, engine, time.monotonic() - started, target)
    return target


class _Progress:
    """Logs a line every PROGRESS_EVERY_S while a long step runs, so a first start does not look hung."""

    def __init__(self, message: str):
        self.message = message
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="export-progress", daemon=True)

    def __enter__(self) -> _Progress:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(PROGRESS_EVERY_S):
            log.info("%s (%.0f s)", self.message, time.monotonic() - self._started)


def _export(source: Path, config: ModelConfig, engine: str, device: str, fp16: bool, target: Path) -> None:
    """Export a copy of the model in a scratch folder, then move the result into place in one rename."""
    from ultralytics import YOLO

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as scratch:
        copy = Path(scratch) / source.name
        shutil.copy2(source, copy)
        options = dict(
            format=FORMAT[engine],
            imgsz=config.imgsz,
            batch=config.max_batch,
            dynamic=True,  # any batch up to max_batch
            quantize=16 if fp16 else None,
            device=device if engine == "tensorrt" else "cpu",
            verbose=False,
        )
        if engine != "openvino":  # the OpenVINO exporter refuses the argument
            options["simplify"] = False  # onnxslim is not installed; simplification only saves load time
        exported = YOLO(str(copy), task="detect").export(**options)
        try:
            Path(exported).rename(target)
        except OSError:
            if not target.exists():  # else another process built the same export meanwhile: use theirs
                raise


def cpu_threads(cameras: int, cores: int | None = None) -> int:
    """The cores decoding leaves to the model: each camera's decoding takes DECODE_CORES_PER_CAMERA of a core."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores - math.floor(cameras * DECODE_CORES_PER_CAMERA + 0.5))


def set_openvino_threads(backend, export: Path, threads: int) -> None:
    """Compile Ultralytics' OpenVINO model again with ``threads`` inference threads (its default: every core)."""
    compile_model = backend.compile_model  # functools.partial(core.compile_model, device_name=..., config=...)
    if compile_model.keywords.get("device_name") != "CPU":
        return  # AUTO or an accelerator: its plugin decides
    config = {**compile_model.keywords.get("config", {}), "INFERENCE_NUM_THREADS": threads}
    xml = next(export.glob("*.xml"))
    core = compile_model.func.__self__
    backend.compile_model = functools.partial(core.compile_model, device_name="CPU", config=config)
    backend.ov_compiled_model = backend.compile_model(core.read_model(model=str(xml), weights=str(xml.with_suffix(".bin"))))
