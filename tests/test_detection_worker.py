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


# --- failures and served models ----------------------------------------------------------------


def variant_of(detector: Detector, infer, **attributes) -> Detector:
    """The session detector with another ``infer`` (a failing or a slow model), sharing everything else."""
    variant = Detector.__new__(Detector)
    variant.__dict__.update({**detector.__dict__, "infer": infer, **attributes})
    return variant


def test_failed_batches_fail_their_frames_are_counted_and_logged_once_per_streak(detector, frames, caplog):
    import logging

    import pytest

    from monitor.detection import InferenceFailed

    failing = {"now": True}

    def infer(prepared):
        if failing["now"]:
            raise RuntimeError("the server went away")
        return detector.infer(prepared)

    metrics = Metrics()
    worker = InferenceWorker(variant_of(detector, infer), metrics)
    worker.clients = 1
    caplog.set_level(logging.WARNING, "monitor.detection.worker")
    worker.start()
    try:
        image = frames[0]
        for _ in range(3):
            with pytest.raises(InferenceFailed, match="model person: the server went away"):
                worker.submit(image).result(timeout=30)
        failing["now"] = False
        assert len(worker.submit(image).result(timeout=60)) > 0
        assert worker.alive and worker.busy_since is None  # failing is neither dying nor hanging
    finally:
        worker.stop()
    assert metrics.registry.get_sample_value("monitor_inference_errors_total", {"model": "person"}) == 3
    messages = [record.getMessage() for record in caplog.records]
    assert sum("inference failed" in m for m in messages) == 1  # a streak is logged once when it starts...
    assert any("inference works again after 3 failed batches" in m for m in messages)  # ...and when it ends


def test_a_served_model_has_a_request_per_camera_in_flight(detector, frames):
    import threading

    cameras = 3
    together = threading.Barrier(cameras, timeout=20)  # passes only when three batches run at the same time

    sizes, local_model = [], threading.Lock()  # the local detector behind it is single-threaded

    def infer(prepared):
        sizes.append(len(prepared))
        together.wait()
        with local_model:
            return detector.infer(prepared)

    one_frame_each = detector.config.model_copy(update={"max_batch": 1})  # no batching here: each lane takes one frame
    worker = InferenceWorker(variant_of(detector, infer, parallel_batches=8, config=one_frame_each))
    worker.clients = cameras
    worker.start()
    try:
        futures = [worker.submit(image) for image in list(frames.values())[:cameras]]
        assert all(len(future.result(timeout=60)) > 0 for future in futures)
    finally:
        worker.stop()
    assert sizes == [1, 1, 1] and not together.broken
