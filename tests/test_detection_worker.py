"""The inference worker: batching frames across cameras (at most max_batch, one frame per camera), and
mixed resolutions served by shape."""

from __future__ import annotations

from detection_support import same_boxes

from monitor.detection import Detector, InferenceWorker
from monitor.metrics import Metrics


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


def test_mixed_resolutions_batch_by_shape_and_match_single_frames(detector, sized_images):
    assert {detector.prepare(image).box.input_shape for image in sized_images} == {(256, 320), (320, 256), (192, 320)}
    outputs, metrics = serve_together(detector, sized_images, max_batch=3, batch_wait_ms=500)
    assert batch_figures(metrics) == (1, 3)  # one worker batch, run as one model call per input shape
    for image, batched in zip(sized_images, outputs):
        assert same_boxes(batched, detector.predict([image])[0], atol=1e-3)
    assert set(detector.batch_buffer.allocated) >= {(256, 320, False), (320, 256, False), (192, 320, False)}
