"""The detector: one loaded Ultralytics model and its settings, and the steps of one batch.

Each camera letterboxes its own frame (``monitor.detection.preprocess``); the inference worker
(``monitor.detection.worker``) hands a batch to ``Detector.infer``, which uploads it from a reused (on
CUDA, pinned) host buffer, runs Ultralytics' backend and NMS on the device, and reads every frame's
boxes back at once, mapped to the camera's pixels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.config import ModelConfig, model_labels
from monitor.detection.engines import EngineChoice, EngineError, cpu_threads, default_cache_dir, prepare, set_openvino_threads
from monitor.detection.preprocess import BatchBuffer, Letterbox, LetterboxSpec, PreparedImage
from monitor.frame import Boxes

log = logging.getLogger(__name__)

TRACKER_LOW_CONF = 0.1  # ByteTrack's second-stage floor: weaker boxes keep existing tracks alive
MAX_DETECTIONS = 300  # per frame, after NMS (Ultralytics' default)


class ModelLoadError(Exception):
    pass


def choose_device(requested: str) -> str:
    """``auto``: the first CUDA GPU if there is one, else the CPU; anything else as given (torch's names)."""
    if requested.isdigit():
        return f"cuda:{requested}"
    if requested != "auto":
        return requested
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def check_device(name: str, device: str) -> None:
    """A CUDA device that this machine does not have is a configuration error, not a crash at the first frame."""
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        have = f"CUDA devices cuda:0 to cuda:{count - 1}" if count else "no usable CUDA device"
        raise ModelLoadError(f"models.{name}.device: {device} does not exist (this machine has {have}); use auto or cpu")


@dataclass(frozen=True)
class LoadedModel:
    model: object  # ultralytics.YOLO
    path: Path  # what was loaded: the model file or its cached export
    choice: EngineChoice


def load_model(name: str, config: ModelConfig, device: str = "cpu", half: bool = False, cache_dir: Path | None = None) -> LoadedModel:
    """Load any Ultralytics format (.pt, .onnx, .engine, OpenVINO dir) without ever downloading.

    The engine (``engine: auto`` or as configured) may run an export of a .pt model: built once in ``cache_dir``
    (default: $CACHE_DIRECTORY, else <state_dir>/cache) and loaded from there.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    path = Path(config.path)
    if not path.exists():
        raise ModelLoadError(f"models.{name}.path: file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelLoadError(f"models.{name}.path: file is empty: {path}")
    try:
        prepared = prepare(name, config, device, half, cache_dir or default_cache_dir())
    except EngineError as exc:
        raise ModelLoadError(str(exc)) from None
    from ultralytics import YOLO

    try:
        return LoadedModel(YOLO(str(prepared.path), task="detect"), prepared.path, prepared.choice)
    except Exception as exc:  # Ultralytics raises many kinds for a corrupt file
        raise ModelLoadError(f"models.{name}.path: cannot load {prepared.path}: {exc}") from exc


@dataclass(frozen=True)
class ClassThresholds:
    """Per-class confidence thresholds as an array indexed by class id."""

    by_class: np.ndarray  # (num_classes,) float32
    floor: float  # lowest confidence asked of the model

    @staticmethod
    def build(config: ModelConfig, class_names: list[str]) -> ClassThresholds:
        by_class = np.array([config.class_conf.get(name, config.conf) for name in class_names], np.float32)
        return ClassThresholds(by_class, float(min(TRACKER_LOW_CONF, by_class.min(initial=config.conf))))

    def passing(self, boxes: Boxes) -> np.ndarray:
        return boxes.conf >= self.by_class[boxes.class_id]


class Detector:
    """One loaded model and its settings. Only the inference worker's thread calls ``predict``."""

    parallel_batches = 1  # batches that may run at once: one device and one reused host buffer

    def __init__(self, name: str, config: ModelConfig, cache_dir: Path | None = None, cameras: int = 1):
        self.name = name
        self.config = config
        self.device = choose_device(config.device)
        check_device(name, self.device)
        self.half = config.half if config.half is not None else self.device.startswith("cuda")
        loaded = load_model(name, config, self.device, self.half, cache_dir)
        self.model, self.model_path, self.engine = loaded.model, loaded.path, loaded.choice
        self.is_pytorch = Path(self.model.ckpt_path or "").suffix == ".pt"
        # OpenVINO gets the cores that decoding leaves; torch keeps Ultralytics' choice (cores - 1) unless set
        self.threads = config.threads or (cpu_threads(cameras) if self.engine.engine == "openvino" else None)
        log.info("model %s: engine %s on %s (%s)%s", name, self.engine.engine, self.device, self.engine.why,
                 f", {self.threads} threads" if self.threads and self.device == "cpu" else "")  # fmt: skip
        names = self._backend().names  # not self.model.names: for an export, each read of it loads the model again
        self._know_classes([names[i] for i in sorted(names)])
        self.batch_buffer = BatchBuffer(config.max_batch)
        self.input = _input_spec(self._backend(), config.imgsz)

    def _know_classes(self, class_names: list[str]) -> None:
        self.class_names = class_names
        self.labels = [self.config.aliases.get(c, c) for c in class_names]  # per class id
        self.label_set = model_labels(self.config, class_names)
        self.thresholds = ClassThresholds.build(self.config, class_names)

    def use_cpu(self) -> None:
        """After a GPU failure: run on the CPU from the next call (Ultralytics sets its device up once)."""
        self.device, self.half = "cpu", False
        self.model.predictor = None

    def warm_up(self) -> None:
        blank = np.zeros((self.config.imgsz, self.config.imgsz, 3), np.uint8)
        self.predict([blank])

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """Letterbox one frame for the model; thread-safe, so each camera does it on its own thread."""
        return self.input.prepare(image)

    def predict(self, images: list[np.ndarray]) -> list[Boxes]:
        return self.infer([self.prepare(image) for image in images])

    def infer(self, prepared: list[PreparedImage]) -> list[Boxes]:
        """Boxes per prepared frame. Frames of different input shapes (camera resolutions) run as separate
        batches, so a frame's boxes never depend on which other cameras shared its batch."""
        out: list[Boxes] = [Boxes.empty()] * len(prepared)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for index, item in enumerate(prepared):
            by_shape.setdefault(item.box.input_shape, []).append(index)
        for indices in by_shape.values():
            for index, boxes in zip(indices, self._infer_batch([prepared[i] for i in indices])):
                out[index] = boxes
        return out

    def _infer_batch(self, prepared: list[PreparedImage]) -> list[Boxes]:
        """Upload, model, NMS on the device; one read-back for the whole batch."""
        import torch

        with torch.inference_mode():
            return self.read_back(self.nms(self._backend()(self.upload(prepared))), prepared)

    # the steps of one batch, public so that bench/stages.py times exactly these

    def upload(self, prepared: list[PreparedImage]):
        """The batch on the model's device: BCHW RGB, 0-1, in the backend's precision."""
        backend = self._backend()
        pixels = self.batch_buffer.upload([item.pixels for item in prepared], backend.device)
        return (pixels.half() if backend.fp16 else pixels.float()).div_(255)

    def nms(self, raw) -> list:
        """Per frame, an (n, 6) device tensor of the boxes kept: x1 y1 x2 y2 conf cls, in model-input pixels."""
        from ultralytics.utils.nms import non_max_suppression

        return non_max_suppression(
            raw,
            self.thresholds.floor,
            self.config.iou,
            agnostic=self.config.agnostic_nms,
            max_det=MAX_DETECTIONS,
            end2end=self._end2end(),
        )

    def _end2end(self) -> bool:
        """Whether the model already ran NMS (YOLOv10/26-style heads): then NMS only picks the top boxes."""
        return getattr(self._backend(), "end2end", False)

    @staticmethod
    def read_back(kept: list, prepared: list[PreparedImage]) -> list[Boxes]:
        """One copy to the host for the whole batch, then each frame's boxes in its camera's pixels."""
        import torch

        rows = torch.cat(kept).float().cpu().numpy()
        splits = np.cumsum([len(k) for k in kept])[:-1]
        return [_to_boxes(part, item.box) for part, item in zip(np.split(rows, splits), prepared)]

    def _backend(self):
        """Ultralytics' AutoBackend for this model: built (device, FP16, layer fusion) by a first tiny predict."""
        if self.model.predictor is None:
            self.model.predict(
                np.zeros((32, 32, 3), np.uint8),
                imgsz=self.config.imgsz,
                device=self.device,
                quantize=16 if self.half and self.is_pytorch else None,  # an export's precision is fixed when built
                verbose=False,
            )
            self._set_threads(self.model.predictor.model)
        return self.model.predictor.model

    def _set_threads(self, backend) -> None:
        """After the backend is built: Ultralytics' device setup resets torch's threads, OpenVINO compiles with every core."""
        if not self.threads or self.device != "cpu":
            return
        if backend.format == "openvino":
            set_openvino_threads(backend.backend, self.model_path, self.threads)
        elif backend.format == "pt":
            import torch

            torch.set_num_threads(self.threads)  # process-wide: leave cores to decoding and the cameras


def _input_spec(backend, imgsz: int) -> LetterboxSpec:
    """Ultralytics' rule: a minimum rectangle for models that take any shape, the full square otherwise."""
    any_shape = backend.format == "pt" or (getattr(backend, "dynamic", False) and backend.format != "imx")
    return LetterboxSpec(imgsz, int(backend.stride), rectangular=any_shape)


def _to_boxes(rows: np.ndarray, box: Letterbox) -> Boxes:
    return Boxes(
        box.boxes_to_source(rows[:, :4].astype(np.float32)),
        rows[:, 4].astype(np.float32),
        rows[:, 5].astype(np.int32),
        np.full(len(rows), -1, np.int64),
    )
