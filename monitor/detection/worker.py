"""The inference worker: one thread per model that serves all of the model's cameras (a served model: several).

It batches the frames that are ready at that moment (up to ``max_batch``, waiting at most
``batch_wait_ms`` for more, and never longer than it takes every camera to hand in its frame), so N
cameras on one GPU cost far less than N single-frame calls. A CUDA error moves the model to the CPU
(``on_gpu_failure: cpu``) or marks the worker fatal for systemd to restart the service (``exit``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from monitor.detection.detector import Detector
from monitor.detection.preprocess import PreparedImage
from monitor.detection.triton import TritonError
from monitor.frame import Boxes

log = logging.getLogger(__name__)


FAILURE_LOG_EVERY_S = 30.0  # while inference keeps failing (a model server down): one summary line this often


class InferenceEvents(Protocol):
    def inference_done(self, model: str, seconds: float, batch_size: int) -> None: ...
    def inference_failed(self, model: str) -> None: ...
    def gpu_fallback(self, model: str) -> None: ...


class NullInferenceEvents:
    def inference_done(self, model: str, seconds: float, batch_size: int) -> None: ...
    def inference_failed(self, model: str) -> None: ...
    def gpu_fallback(self, model: str) -> None: ...


class InferenceFailed(Exception):
    """A frame's batch could not be inferred (the model, or the server that serves it, failed)."""


@dataclass
class FailureStreak:
    """Failed batches in a row: logged when it starts, summarised while it lasts, and when it ends."""

    model: str
    failed: int = 0
    since: float = 0.0
    last_log: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)  # a served model's worker has several threads

    def failure(self, exc: Exception) -> None:
        with self.lock:
            self._failure(exc)

    def success(self) -> None:
        with self.lock:
            self._success()

    def _failure(self, exc: Exception) -> None:
        now = time.monotonic()
        if not self.failed:
            self.since = self.last_log = now
            log.error("model %s: inference failed (%s); its cameras' counts are stale until it works again", self.model, exc,
                      exc_info=None if isinstance(exc, TritonError) else exc)  # a server's answer needs no traceback
        elif now - self.last_log >= FAILURE_LOG_EVERY_S:
            self.last_log = now
            log.error("model %s: inference still failing (%d batches in %.0f s): %s", self.model, self.failed + 1, now - self.since, exc)
        self.failed += 1

    def _success(self) -> None:
        if self.failed:
            log.warning("model %s: inference works again after %d failed batches in %.0f s",
                        self.model, self.failed, time.monotonic() - self.since)  # fmt: skip
            self.failed = 0


@dataclass
class _Request:
    prepared: PreparedImage
    future: Future


class InferenceWorker:
    """Serves one Detector to many cameras: submit an image, get a Future of its Boxes.

    A local model runs one batch at a time (one thread). A served model (``Detector.parallel_batches`` > 1)
    gets a thread per camera, up to that bound, so that several requests are in flight and the server batches
    them with other hosts' (Triton's dynamic batching).
    """

    def __init__(self, detector: Detector, events: InferenceEvents | None = None, queue_size: int = 64):
        self.detector = detector
        self.events = events or NullInferenceEvents()
        self._requests: queue.Queue[_Request | None] = queue.Queue(maxsize=queue_size)
        self._threads: list[threading.Thread] = []
        self._busy: dict[int, float] = {}  # thread id -> when its batch started
        self.last_progress = time.monotonic()
        self.clients = 0  # cameras that submit (one frame in flight each); 0: unknown
        self.fatal: str | None = None  # set after a CUDA error with on_gpu_failure: exit
        self.failures = FailureStreak(detector.name)

    def start(self) -> None:
        if self.detector.config.warmup:
            self.detector.warm_up()
        lanes = max(1, min(self.detector.parallel_batches, self.clients or 1))
        self._threads = [
            threading.Thread(target=self._run, name=f"inference-{self.detector.name}-{i}", daemon=True) for i in range(lanes)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        for _ in self._threads:
            try:
                self._requests.put(None, timeout=1.0)
            except queue.Full:
                pass
        for thread in self._threads:
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    @property
    def busy_since(self) -> float | None:
        """When the oldest batch still running started (None: idle); the watchdog's measure of a hang."""
        return min(self._busy.values(), default=None)

    def submit(self, image: np.ndarray, timeout: float = 5.0) -> Future:
        """Letterboxes on the caller's (the camera's) thread; the worker thread only batches and infers."""
        future: Future = Future()
        self._requests.put(_Request(self.detector.prepare(image), future), timeout=timeout)
        return future

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._serve(batch)

    def _next_batch(self) -> list[_Request] | None:
        first = self._requests.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.detector.config.batch_wait_ms / 1000
        most = min(self.detector.config.max_batch, self.clients or self.detector.config.max_batch)
        while len(batch) < most:  # every camera's frame is here: waiting longer gains nothing
            try:
                item = self._requests.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                self._requests.put(None)  # stop after serving this batch
                break
            batch.append(item)
        return batch

    def _predict_or_fall_back(self, prepared: list[PreparedImage]) -> list[Boxes]:
        """A CUDA error moves the model to the CPU (``on_gpu_failure: cpu``) or marks the worker fatal (``exit``)."""
        try:
            return self.detector.infer(prepared)
        except Exception as exc:
            if not (is_cuda_error(exc) and self.detector.device.startswith("cuda")):  # not a served model's server error
                raise
            if self.detector.config.on_gpu_failure == "exit" or not self.detector.is_pytorch:
                self.fatal = f"model {self.detector.name}: CUDA error on {self.detector.device}: {exc}"
                log.critical("%s; exiting so that systemd restarts the service", self.fatal)
                raise
            log.error("model %s: CUDA error on %s (%s); going on on the CPU", self.detector.name, self.detector.device, exc)
            self.detector.use_cpu()
            self.events.gpu_fallback(self.detector.name)
            return self.detector.infer(prepared)

    def _serve(self, batch: list[_Request]) -> None:
        started = time.monotonic()
        lane = threading.get_ident()
        self._busy[lane] = started
        try:
            outputs = self._predict_or_fall_back([request.prepared for request in batch])
        except Exception as exc:  # one bad batch must not kill the worker
            self.failures.failure(exc)
            self.events.inference_failed(self.detector.name)
            for request in batch:
                failed = InferenceFailed(f"model {self.detector.name}: {exc}")
                failed.__cause__ = exc
                request.future.set_exception(failed)
            return
        finally:
            del self._busy[lane]
        seconds = time.monotonic() - started
        self.last_progress = time.monotonic()
        self.failures.success()
        self.events.inference_done(self.detector.name, seconds, len(batch))
        for request, boxes in zip(batch, outputs):
            request.future.set_result(boxes)


def is_cuda_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(word in text for word in ("CUDA", "cuDNN", "CUBLAS", "AcceleratorError", "NVML"))


