"""``monitor triton-repo``: a Triton Inference Server model repository for a YOLO model.

The repository holds ``<name>/config.pbtxt`` (dynamic batching, the class names and stride as parameters
the monitor reads back) and ``<name>/1/model.onnx``: Ultralytics' dynamic-batch ONNX export with a few
nodes put in front, so the graph takes the letterboxed frames exactly as the camera hosts send them,
uint8 NHWC BGR (a quarter of float32's bytes on the wire), and does the colour order, the layout and the
scaling to 0-1 itself. Its raw output (boxes and class scores before NMS) goes back to the monitor, which
runs its own NMS and box mapping.

Backends: ``onnxruntime`` (NVIDIA's Triton container; on a GPU optionally through TensorRT) or ``python``
(the same ONNX run by ONNX Runtime inside Triton's Python backend, ``monitor/tools/triton_backend.py``: what
the PyPI Triton server of the tests and benchmarks can run).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BACKEND_MODEL = Path(__file__).with_name("triton_backend.py")
INPUT = "images"  # Ultralytics' input name, kept for the new uint8 input
DOCKER_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the version the tests run


class RepoError(Exception):
    pass


@dataclass(frozen=True)
class RepoSettings:
    model: Path  # a YOLO .pt
    out: Path
    name: str | None = None  # default: the model file's stem
    imgsz: int = 640
    max_batch: int = 16
    backend: str = "onnxruntime"  # or python
    kind: str = "gpu"  # instance kind: gpu or cpu (python: always cpu)
    instances: int = 1
    tensorrt: bool = False  # onnxruntime on a GPU: run the graph through TensorRT (FP16)
    threads: int = 0  # ONNX Runtime intra-op threads per instance (0: its default)
    queue_delay_us: int = 2000  # how long Triton may hold a request to batch it with others
    delay_ms: float = 0.0  # python backend only: added time per batch, to rehearse a slow server

    @property
    def model_name(self) -> str:
        return self.name or self.model.stem


def write_repository(settings: RepoSettings) -> Path:
    """Export, wrap and write ``<out>/<name>/``; returns that folder."""
    _check(settings)
    import onnx

    model = onnx.load(str(_export(settings)))
    names = _class_names(model)
    stride = int(_metadata(model).get("stride", "32"))
    wrap_uint8_nhwc(model)
    folder = settings.out / settings.model_name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(version / "model.onnx"))
    if settings.backend == "python":
        shutil.copyfile(BACKEND_MODEL, version / "model.py")
    (folder / "config.pbtxt").write_text(model_config(settings, model, names, stride))
    return folder


def _check(settings: RepoSettings) -> None:
    if not settings.model.is_file():
        raise RepoError(f"--model: no such file: {settings.model}")
    if settings.model.suffix != ".pt":
        raise RepoError(f"--model: expected an Ultralytics .pt model, got {settings.model.name}")
    if settings.backend not in ("onnxruntime", "python"):
        raise RepoError(f"--backend: onnxruntime or python, got {settings.backend!r}")
    if settings.tensorrt and (settings.backend != "onnxruntime" or settings.kind != "gpu"):
        raise RepoError("--tensorrt: needs --backend onnxruntime and --kind gpu")
    if settings.imgsz % 32 or not 1 <= settings.max_batch <= 256:
        raise RepoError("--imgsz must be a multiple of 32 and --max-batch 1-256")


def _export(settings: RepoSettings) -> Path:
    """Ultralytics' ONNX export with a dynamic batch and image size (built once into the cache directory)."""
    from monitor.config import ModelConfig
    from monitor.detection.engines import EngineError, default_cache_dir, prepare

    config = ModelConfig(path=settings.model, engine="onnx", imgsz=settings.imgsz, max_batch=settings.max_batch)
    try:
        return prepare(settings.model_name, config, "cpu", False, default_cache_dir()).path
    except EngineError as exc:
        raise RepoError(str(exc)) from exc


def _metadata(model) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _class_names(model) -> list[str]:
    import ast

    names = ast.literal_eval(_metadata(model).get("names", "{}"))  # Ultralytics writes a Python dict literal
    if not names:
        raise RepoError("the ONNX export carries no class names")
    return [str(names[i]) for i in sorted(names)]


def wrap_uint8_nhwc(model) -> None:
    """Put Cast, BGR->RGB, NHWC->NCHW and /255 in front of the graph: the monitor's own upload steps, on the server."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    original = graph.input[0]
    if original.name != INPUT or original.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise RepoError(f"unexpected ONNX input {original.name!r}: expected float32 {INPUT!r} (an Ultralytics export)")
    inner = "images_rgb01"
    for node in graph.node:
        node.input[:] = [inner if name == INPUT else name for name in node.input]
    graph.initializer.extend([
        numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr_to_rgb"),
        numpy_helper.from_array(np.array(255.0, np.float32), "full_scale"),
    ])  # fmt: skip
    steps = [
        helper.make_node("Cast", [INPUT], ["images_float"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["images_float", "bgr_to_rgb"], ["images_rgb"], axis=3),
        helper.make_node("Transpose", ["images_rgb"], ["images_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["images_nchw", "full_scale"], [inner]),
    ]
    for position, node in enumerate(steps):
        graph.node.insert(position, node)
    uint8 = helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", "height", "width", 3])
    graph.input.remove(original)
    graph.input.insert(0, uint8)
    import onnx

    onnx.checker.check_model(model)


def tensor_dims(value_info) -> list[int]:
    """An ONNX input or output's dims without the batch, as Triton writes them (-1: any size)."""
    dims = value_info.type.tensor_type.shape.dim[1:]
    return [dim.dim_value if dim.HasField("dim_value") else -1 for dim in dims]


def model_config(settings: RepoSettings, model, names: list[str], stride: int) -> str:
    """config.pbtxt in Triton's text format (``inference.ModelConfig``)."""
    (source,), (output,) = model.graph.input, model.graph.output
    kind = "KIND_CPU" if settings.backend == "python" or settings.kind == "cpu" else "KIND_GPU"
    parameters = {"names": json.dumps(names, ensure_ascii=False), "stride": str(stride)}
    if settings.threads:
        parameters["intra_op_thread_count"] = str(settings.threads)  # the onnxruntime backend's key; python reads it too
    if settings.backend == "python" and settings.delay_ms:
        parameters["delay_ms"] = str(settings.delay_ms)
    lines = [
        f"# Written by `monitor triton-repo` from {settings.model.name} (exported at imgsz {settings.imgsz}).",
        "# Input: letterboxed BGR uint8 frames, NHWC; the graph converts them. Output: boxes and class scores",
        "# before NMS, which the monitor runs itself.",
        f'name: "{settings.model_name}"',
        f'backend: "{settings.backend}"',
        f"max_batch_size: {settings.max_batch}",
        f'input [ {{ name: "{source.name}" data_type: TYPE_UINT8 dims: {_dims(tensor_dims(source))} }} ]',
        f'output [ {{ name: "{output.name}" data_type: TYPE_FP32 dims: {_dims(tensor_dims(output))} }} ]',
        f"dynamic_batching {{ max_queue_delay_microseconds: {settings.queue_delay_us} }}",
        f"instance_group [ {{ count: {settings.instances} kind: {kind} }} ]",
    ]
    lines += [
        f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(value, ensure_ascii=False)} }} }}'
        for key, value in parameters.items()
    ]
    if settings.tensorrt:
        lines.append(
            "optimization { execution_accelerators { gpu_execution_accelerator: [ "
            '{ name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }'
        )
    return "\n".join(lines) + "\n"


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def docker_command(repository: Path) -> str:
    """How to serve the repository with NVIDIA's Triton container on a GPU host."""
    return (
        f"docker run --rm --gpus all --shm-size 1g -p 8000:8000 -p 8001:8001 -p 8002:8002 "
        f"-v {repository.resolve()}:/models {DOCKER_IMAGE} tritonserver --model-repository=/models"
    )
