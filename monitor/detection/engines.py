"""Inference engines: exports of a model (ONNX, OpenVINO, TensorRT) built once and cached next to it.

The cache key holds everything an export depends on: the engine, the device (a TensorRT engine only
runs on the GPU model it was built for), the image size, the largest batch and the precision. An
export never downloads anything: a missing exporter package is a clear error naming the key.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
import tempfile
from pathlib import Path

from monitor.config import ModelConfig

log = logging.getLogger(__name__)

SUFFIX = {"onnx": ".onnx", "openvino": "_openvino_model", "tensorrt": ".engine"}
RUNTIME = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino"), "tensorrt": ("tensorrt", "tensorrt")}
FORMAT = {"onnx": "onnx", "openvino": "openvino", "tensorrt": "engine"}


class EngineError(Exception):
    pass


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
    if importlib.util.find_spec(module) is None:
        raise EngineError(f"{engine} needs the {module} package (pip install 'camera-monitor[{extra}]')")


def cached_path(source: Path, engine: str, key: str, imgsz: int, batch: int, half: bool) -> Path:
    precision = "fp16" if half else "fp32"
    name = f"{source.stem}-{key}-{imgsz}-b{batch}-{precision}{SUFFIX[engine]}"
    return source.parent / f"{source.stem}.engines" / name


def prepare(name: str, config: ModelConfig, device: str, half: bool) -> Path:
    """The file to load for ``config``: the model itself, or its cached export (built on first use)."""
    source = Path(config.path)
    if config.engine == "none" or source.suffix != ".pt":
        return source
    try:
        key = device_key(config.engine, device)
        check_runtime(config.engine)
    except EngineError as exc:
        raise EngineError(f"models.{name}.engine: {exc}") from None
    target = cached_path(source, config.engine, key, config.imgsz, config.max_batch, half and config.engine == "tensorrt")
    if target.exists():
        return target
    log.info("model %s: building %s export %s (once; cached)", name, config.engine, target.name)
    try:
        _export(source, config, device, half, target)
    except Exception as exc:  # exporters raise many kinds (missing package, unsupported op, CUDA errors)
        raise EngineError(f"models.{name}.engine: cannot build the {config.engine} export of {source}: {exc}") from exc
    return target


def _export(source: Path, config: ModelConfig, device: str, half: bool, target: Path) -> None:
    """Export a copy of the model in a scratch folder, then move the result into place in one rename."""
    from ultralytics import YOLO

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        copy = Path(scratch) / source.name
        shutil.copy2(source, copy)
        options = dict(
            format=FORMAT[config.engine],
            imgsz=config.imgsz,
            batch=config.max_batch,
            dynamic=True,  # any batch up to max_batch
            quantize=16 if half and config.engine == "tensorrt" else None,
            device=device if config.engine == "tensorrt" else "cpu",
            verbose=False,
        )
        if config.engine != "openvino":  # the OpenVINO exporter refuses the argument
            options["simplify"] = False  # onnxslim is not installed; simplification only saves load time
        exported = YOLO(str(copy), task="detect").export(**options)
        Path(exported).rename(target)
