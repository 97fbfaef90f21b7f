"""Pre-processing for the detector: the letterbox, the host batch buffer, and boxes mapped back.

A frame is letterboxed on its camera's thread (``letterbox``), so that resizing runs on as many cores
as there are cameras instead of on the one inference thread. The inference worker copies the
letterboxed frames of a batch into a buffer allocated once per input shape (``BatchBuffer``), pinned
on CUDA so that the copy to the GPU is one asynchronous DMA of uint8 pixels; the channel reorder and
the scaling to 0-1 run on the device. The geometry is Ultralytics' own (``LetterBox``,
``ops.scale_boxes``), so the boxes are the ones ``model.predict`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # Ultralytics' letterbox grey


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where a source image sits in the model's input: resized to ``resized`` (w, h), offset by (left, top)."""

    source_shape: tuple[int, int]  # (h, w) of the camera image
    input_shape: tuple[int, int]  # (h, w) of the model input
    resized: tuple[int, int]  # (w, h) of the image inside the input
    left: int
    top: int

    @staticmethod
    def fit(source_shape: tuple[int, int], imgsz: int, stride: int, rectangular: bool) -> Letterbox:
        """Scale to fit ``imgsz``; ``rectangular`` pads only to a multiple of ``stride`` (fewer pixels to infer)."""
        height, width = source_shape
        ratio = min(imgsz / height, imgsz / width)
        new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
        pad_w, pad_h = imgsz - new_w, imgsz - new_h
        if rectangular:
            pad_w, pad_h = pad_w % stride, pad_h % stride
        return Letterbox(
            source_shape=(height, width),
            input_shape=(new_h + pad_h, new_w + pad_w),
            resized=(new_w, new_h),
            left=round(pad_w / 2 - 0.1),
            top=round(pad_h / 2 - 0.1),
        )

    def boxes_to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Model-input xyxy boxes to source-image pixels, clipped to the image (in place, as scale_boxes does)."""
        height, width = self.source_shape
        xs, ys = xyxy[:, 0::2], xyxy[:, 1::2]  # views: x1 x2, y1 y2
        xs -= self.left
        ys -= self.top
        xs /= self.resized[0] / width
        ys /= self.resized[1] / height
        np.clip(xs, 0, width, out=xs)
        np.clip(ys, 0, height, out=ys)
        return xyxy


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A frame ready for the model: letterboxed BGR uint8 pixels and where the frame sits in them."""

    pixels: np.ndarray  # (input h, input w, 3) uint8
    box: Letterbox


@dataclass(frozen=True, slots=True)
class LetterboxSpec:
    """How a model wants its input: the image size, its stride, and whether a smaller rectangle will do."""

    imgsz: int
    stride: int
    rectangular: bool

    def prepare(self, image: np.ndarray) -> PreparedImage:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image (h, w, 3), got {image.dtype} {image.shape}")
        box = Letterbox.fit(image.shape[:2], self.imgsz, self.stride, self.rectangular)
        return PreparedImage(letterbox(image, box), box)


def letterbox(image: np.ndarray, box: Letterbox) -> np.ndarray:
    """Resize straight into a grey canvas (one allocation; Ultralytics' resize then copyMakeBorder makes two)."""
    canvas = np.full((*box.input_shape, 3), PAD_VALUE, np.uint8)
    new_w, new_h = box.resized
    inside = canvas[box.top : box.top + new_h, box.left : box.left + new_w]
    if image.shape[:2] == (new_h, new_w):
        inside[...] = image
    else:
        cv2.resize(image, (new_w, new_h), dst=inside, interpolation=cv2.INTER_LINEAR)
    return canvas


class BatchBuffer:
    """Host memory a batch is assembled in, allocated once per input shape and reused for every batch.

    Pinned (page-locked) for a CUDA device: the upload is then an asynchronous DMA that needs no staging
    copy. Reuse is safe because one thread serves the model and reads each batch's results back (a
    synchronising copy) before it assembles the next.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._buffers: dict[tuple[int, int, bool], object] = {}

    def upload(self, images: list[np.ndarray], device) -> object:
        """The images as one (n, 3, h, w) RGB uint8 tensor on ``device``."""
        pinned = device.type == "cuda"
        host = self._host(images[0].shape[:2], len(images), pinned)[: len(images)]
        np.stack(images, out=host.numpy())
        batch = host.to(device, non_blocking=pinned)
        return batch.permute(0, 3, 1, 2).contiguous().flip(1)  # BHWC BGR -> BCHW RGB, on the device

    def _host(self, shape: tuple[int, int], count: int, pinned: bool):
        import torch

        key = (*shape, pinned)
        buffer = self._buffers.get(key)
        if buffer is None or len(buffer) < count:
            size = max(count, self.capacity)
            buffer = torch.empty((size, *shape, 3), dtype=torch.uint8, pin_memory=pinned)
            self._buffers[key] = buffer
        return buffer

    @property
    def allocated(self) -> dict[tuple[int, int, bool], int]:
        """(h, w, pinned) -> frames each buffer holds (for tests and the benchmark)."""
        return {key: len(buffer) for key, buffer in self._buffers.items()}
