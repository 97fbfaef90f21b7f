"""Pre-processing: Ultralytics' letterbox and box rescaling, reproduced exactly; the reused batch buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.data.augment import LetterBox
from ultralytics.utils import ops

from monitor.detection.preprocess import BatchBuffer, Letterbox, LetterboxSpec

SHAPES = [(576, 768), (720, 1280), (1080, 810), (100, 50), (640, 640), (333, 517)]  # (h, w)


def noise(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("rectangular", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_letterbox_is_pixel_identical_to_ultralytics(shape, rectangular):
    image = noise(shape)
    prepared = LetterboxSpec(640, 32, rectangular).prepare(image)
    expected = LetterBox(640, auto=rectangular, stride=32)(image=image)
    assert prepared.pixels.shape == expected.shape
    assert np.array_equal(prepared.pixels, expected)


def test_rectangular_input_is_the_smallest_stride_multiple():
    assert Letterbox.fit((720, 1280), 640, 32, rectangular=True).input_shape == (384, 640)  # 40% fewer pixels
    assert Letterbox.fit((576, 768), 640, 32, rectangular=True).input_shape == (480, 640)
    assert Letterbox.fit((720, 1280), 640, 32, rectangular=False).input_shape == (640, 640)


@pytest.mark.parametrize("rectangular", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_boxes_map_back_like_scale_boxes(shape, rectangular):
    box = Letterbox.fit(shape, 640, 32, rectangular)
    h, w = box.input_shape
    rng = np.random.default_rng(1)
    xy = rng.uniform(-20, max(h, w) + 20, (50, 2, 2)).astype(np.float32)  # some outside the image: clipped
    xyxy = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    expected = ops.scale_boxes((h, w), torch.from_numpy(xyxy.copy()), shape).numpy()
    assert np.allclose(box.boxes_to_source(xyxy.copy()), expected, atol=1e-4)


def test_a_grey_or_odd_frame_is_refused_with_its_shape():
    spec = LetterboxSpec(640, 32, True)
    with pytest.raises(ValueError, match=r"expected a BGR uint8 image \(h, w, 3\), got uint8 \(480, 640\)"):
        spec.prepare(np.zeros((480, 640), np.uint8))
    with pytest.raises(ValueError, match="got float32"):
        spec.prepare(np.zeros((480, 640, 3), np.float32))


def test_batch_buffer_is_allocated_once_per_shape_and_reused():
    buffer = BatchBuffer(capacity=4)
    cpu = torch.device("cpu")
    first = [noise((480, 640), seed) for seed in range(3)]
    batch = buffer.upload(first, cpu)
    assert batch.shape == (3, 3, 480, 640) and batch.dtype == torch.uint8
    assert torch.equal(batch[1], torch.from_numpy(first[1][..., ::-1].copy()).permute(2, 0, 1))  # BGR -> RGB, CHW
    host = buffer._host((480, 640), 4, pinned=False)
    second = [noise((480, 640), seed) for seed in range(10, 14)]
    buffer.upload(second, cpu)
    assert buffer._host((480, 640), 4, pinned=False).data_ptr() == host.data_ptr()  # the same memory, refilled
    assert np.array_equal(host[3].numpy(), second[3])
    buffer.upload([noise((384, 640))], cpu)
    assert buffer.allocated == {(480, 640, False): 4, (384, 640, False): 4}  # never pinned without CUDA
    buffer.upload([noise((480, 640), s) for s in range(6)], cpu)  # more than its capacity: grows once
    assert buffer.allocated[(480, 640, False)] == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a CUDA device")
def test_batch_buffer_is_pinned_and_uploads_to_the_gpu():
    buffer = BatchBuffer(capacity=2)
    images = [noise((384, 640), seed) for seed in range(2)]
    batch = buffer.upload(images, torch.device("cuda:0"))
    assert batch.is_cuda and buffer._host((384, 640), 2, pinned=True).is_pinned()
    assert torch.equal(batch[0].cpu(), torch.from_numpy(images[0][..., ::-1].copy()).permute(2, 0, 1))
