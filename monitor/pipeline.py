"""The pipeline: wires the stages together, one camera loop thread per camera, with explicit start/stop.

capture (CameraReader thread) -> detection (shared InferenceWorker thread per model)
  -> tracking and zones -> counting -> publishing (Publisher thread) and metrics
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from monitor.capture import CameraReader, CameraState
from monitor.config import AppConfig, CameraConfig, ConfigError, check_model_classes
from monitor.counting import CountSmoother, raw_counts, zone_labels
from monitor.detection.detector import Detector
from monitor.detection.loading import load_detectors
from monitor.detection.worker import InferenceFailed, InferenceWorker
from monitor.escalation.camera import CameraEscalation, build_camera_escalation
from monitor.escalation.service import build_service
from monitor.evidence import EvidenceStore
from monitor.frame import FrameResult
from monitor.geometry import polygon_overlaps_image, segment_meets_image
from monitor.metrics import Metrics
from monitor.motion import MotionGate
from monitor.publishing.availability import Availability
from monitor.publishing.homeassistant import build_discovery
from monitor.publishing.publisher import Publisher
from monitor.publishing.sequence import ACTIVE, COUNTS, EVENTS, Sequences
from monitor.publishing.topics import CountsTopics, warn_if_legacy_layout
from monitor.safety.engine import SafetyEngine
from monitor.tracking import LineCounter, ObjectTracker, ZoneMap
from monitor.web import Recorder, build_web

log = logging.getLogger(__name__)

INFERENCE_TIMEOUT_S = 60.0


@dataclass
class CameraStats:
    """Per-interval figures for the log line."""

    processed: int = 0
    inferred: int = 0
    since: float = field(default_factory=time.monotonic)

    def take(self) -> tuple[float, int]:
        now = time.monotonic()
        fps = self.processed / max(1e-6, now - self.since)
        inferred = self.inferred
        self.processed, self.inferred, self.since = 0, 0, now
        return fps, inferred


class CameraLoop:
    """One camera's frame journey after capture: detect, track, zone, count, publish."""

    def __init__(
        self,
        name: str,
        config: CameraConfig,
        app: AppConfig,
        reader: CameraReader,
        worker: InferenceWorker,
        publisher: Publisher,
        metrics: Metrics,
        evidence: EvidenceStore | None = None,
        sequences: Sequences | None = None,
    ):
        self.name = name
        self.config = config
        self.reader = reader
        self.worker = worker
        self.publisher = publisher
        self.metrics = metrics
        self.config_path = app.source_path
        self.heartbeat_s = app.mqtt.heartbeat_s
        self.log_interval_s = app.logging.interval_s
        detector = worker.detector
        self.labels = detector.labels
        self.tracker = ObjectTracker(config.tracker, detector.thresholds)
        self.zones = ZoneMap(config)
        self.lines = LineCounter(config.lines, config.anchor)
        self.smoother = CountSmoother(config.smoothing)
        self.escalation: CameraEscalation | None = None  # set by Monitor when this camera escalates
        sequences = sequences or Sequences(None)
        store = publisher.outbox
        self.safety = (
            SafetyEngine(
                name, config, app.mqtt, detector.class_names, evidence, metrics,
                sequences.stream(name, EVENTS, store), sequences.stream(name, ACTIVE, store),
            )
            if config.safety else None
        )
        self.motion = MotionGate(config.motion)
        self._last_inferred: FrameResult | None = None  # what a frame without motion reuses
        self.topics = CountsTopics(app.mqtt, name, sequences.stream(name, COUNTS, store))
        self._stale = False
        self._inference_failing = False  # the model (or its server) fails: frames come, counts cannot be made
        self.zone_labels = zone_labels(config, detector.label_set)
        self.last_result: FrameResult | None = None
        self.last_progress = time.monotonic()
        self.stats = CameraStats()
        self._last_publish = 0.0
        self._last_log = time.monotonic()
        self._stop = threading.Event()
        self._frame_size: tuple[int, int] | None = None  # of the first frame, once its zones and lines are checked
        self._thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)

    def start(self) -> None:
        if self.safety:
            self.publisher.publish_all(self.safety.initial_messages())
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.reader.wait_newest(timeout=0.5)
            self.last_progress = time.monotonic()
            self._update_stale(frame is not None)
            if frame is None:
                if self.reader.finished:
                    log.info("camera %s: source finished", self.name)
                    self.close_safety("stream_end")
                    return
                if self.safety:  # stale_camera rules must fire on a dead stream
                    self.publisher.publish_all(self.safety.tick())
                continue
            if self._frame_size is None:
                self._check_geometry(frame.image.shape[1], frame.image.shape[0])
            try:
                result = self.process(FrameResult(frame, self.labels))
            except InferenceFailed:  # the worker logs it, once per outage
                self._set_inference_failing(True)
                continue
            except Exception:  # a bad frame must not end the camera
                log.exception("camera %s: frame %d failed", self.name, frame.index)
                continue
            self._set_inference_failing(False)
            self.last_result = result
            self._log_interval()

    def process(self, result: FrameResult) -> FrameResult:
        self._detect(result)
        object_labels = [self.labels[c] for c in result.objects.class_id.tolist()]
        result.object_zones = self.zones.assign(result.objects, object_labels)
        result.line_totals = self.lines.update(result.objects, object_labels)
        result.raw_counts = raw_counts(result.objects, result.object_zones, object_labels, self.zone_labels)
        result.counts, result.counts_changed = self.smoother.update(result.raw_counts)
        if self.safety:
            self.publisher.publish_all(self.safety.update(result))
        if self.escalation:  # after counting and safety: may override counts, reviews safety events
            self.publisher.publish_all(self.escalation.step(result, self.safety))
        self._publish(result)
        self.stats.processed += 1
        self.stats.inferred += int(result.inferred)
        return result

    def close_safety(self, reason: str) -> None:
        """End the active safety events (stream end, shutdown) so the retained active set is not left stale."""
        if self.safety:
            self.publisher.publish_all(self.safety.close(reason))

    def _check_geometry(self, width: int, height: int) -> None:
        """Once, on the first frame (its size is known only now): zones and lines that cannot count anything."""
        self._frame_size = (width, height)
        where = f"cameras.{self.name}"
        outside = [f"{where}.zones.{zone}.polygon" for zone, z in self.config.zones.items()
                   if not polygon_overlaps_image(z.polygon, width, height)]
        outside += [f"{where}.lines.{line}.points" for line, l in self.config.lines.items()
                    if not segment_meets_image(*l.points, width, height)]
        for key in outside:
            log.error("camera %s: %s (in %s) lies wholly outside the %dx%d frame; it will never count anything",
                      self.name, key, self.config_path or "the config", width, height)

    def _detect(self, result: FrameResult) -> None:
        """Detections (from the model, or the last inferred frame's when nothing moved) and tracked objects."""
        previous = self._last_inferred
        frame = result.frame  # keep-alive on stream time: a file replayed fast is re-checked per 2 s of footage
        if not self.motion.should_infer(frame.image, frame.stream_time) and previous is not None:
            # the tracker still sees every frame, so tracks confirm and age exactly as without the gate
            result.detections, result.inferred = previous.detections, False
            self.metrics.inference_skipped(self.name)
        else:
            try:
                result.detections = self.worker.submit(result.frame.image).result(timeout=INFERENCE_TIMEOUT_S)
            except Exception:
                self.motion.reset()
                raise
            self._last_inferred = result
        result.objects = self.tracker.update(result.detections, result.frame.image)

    def _set_inference_failing(self, failing: bool) -> None:
        if failing != self._inference_failing:
            self._inference_failing = failing
            self._update_stale(got_frame=True)

    def _update_stale(self, got_frame: bool) -> None:
        """No frames, or no inference: say so (``"stale": true`` in the counts, monitor_camera_stale) instead of
        freezing old counts."""
        stale = self._inference_failing or (not got_frame and self.reader.is_stale())
        if stale == self._stale:
            if stale and self.last_result and time.monotonic() - self._last_publish >= self.heartbeat_s:
                self._publish_stale()
            return
        self._stale = stale
        self.metrics.camera_stale_state(self.name, stale)
        if stale:
            log.warning("camera %s: %s; its counts are stale", self.name, "inference failing" if self._inference_failing else "no frames")
            if self.last_result:
                self._publish_stale()
        else:
            self._last_publish = 0.0  # fresh counts go out with the next frame

    def _publish_stale(self) -> None:
        self.publisher.publish_all(self.topics.messages(self.last_result, extra={"stale": True}))
        self._last_publish = time.monotonic()

    def _publish(self, result: FrameResult) -> None:
        now = time.monotonic()
        heartbeat_due = now - self._last_publish >= self.heartbeat_s
        if result.counts_changed or heartbeat_due:
            extra = self.escalation.payload_extra if self.escalation else None
            self.publisher.publish_all(self.topics.messages(result, extra=extra, force_bare=heartbeat_due))
            self._last_publish = now
        self.metrics.counts(self.name, result.counts, result.line_totals)
        self.metrics.frame_processed(self.name, time.monotonic() - result.frame.mono_time)

    def _log_interval(self) -> None:
        if time.monotonic() - self._last_log < self.log_interval_s:
            return
        self._last_log = time.monotonic()
        fps, _ = self.stats.take()
        counts = self.last_result.counts if self.last_result else {}
        summary = " ".join(f"{zone}={per_label}" for zone, per_label in counts.items())
        log.info("camera %s: %.1f fps, %s", self.name, fps, summary)


class Monitor:
    """The whole daemon: build from a validated config, start, wait, stop.

    ``availability`` (the status topics) is the monitor's own unless given: the service passes one that outlives
    the pipeline, so that a reload publishes no ``offline``; likewise ``sequences`` (every stream's ``(epoch, seq)``).
    """

    def __init__(
        self,
        config: AppConfig,
        metrics: Metrics | None = None,
        availability: Availability | None = None,
        sequences: Sequences | None = None,
    ):
        self.config = config
        self.metrics = metrics or Metrics()
        self._owns_availability = availability is None
        self.availability = availability or Availability(config.mqtt, list(config.cameras))
        self.sequences = sequences or Sequences(config.state_dir)
        cameras_per_model = Counter(camera.model for camera in config.cameras.values())
        self.detectors: dict[str, Detector] = load_detectors(config.models, cameras_per_model, config.cache_dir)
        check_model_classes(config, {name: d.class_names for name, d in self.detectors.items()})
        self.workers = {name: InferenceWorker(d, self.metrics) for name, d in self.detectors.items()}
        for camera in config.cameras.values():
            self.workers[camera.model].clients += 1
        self.escalation = build_service(config, self.metrics)
        self.recorder = Recorder(config.mqtt.prefix, list(config.cameras)) if config.web.enabled else None
        self.publisher: Publisher | None = None
        try:
            self.publisher = Publisher(config.mqtt, self.metrics, self.sequences, tap=self.recorder)
            self._build_cameras(config)
        except BaseException:
            self.discard()
            raise
        self._http = None
        self._started = False

    def _build_cameras(self, config: AppConfig) -> None:
        self.sequences.bind(config.mqtt.outbox.path if self.publisher.outbox else None)
        self.readers = {name: CameraReader(name, cam, self.metrics) for name, cam in config.cameras.items()}
        self.evidence = EvidenceStore(config.evidence) if config.evidence.enabled else None
        self.loops = {
            name: CameraLoop(
                name, cam, config, self.readers[name], self.workers[cam.model], self.publisher, self.metrics, self.evidence,
                self.sequences,
            )
            for name, cam in config.cameras.items()
        }
        for name, cam in config.cameras.items():
            loop = self.loops[name]
            loop.escalation = build_camera_escalation(
                name, cam, config, self.escalation, self.detectors[cam.model], loop.zone_labels, self.metrics
            )
        zone_labels = {name: loop.zone_labels for name, loop in self.loops.items()}
        self.home_assistant = build_discovery(config, zone_labels) if config.home_assistant.enabled else None
        budget = self.escalation.budget if self.escalation else None
        self.web = build_web(config, self.loops, self.metrics, self.recorder, self.evidence, budget) if self.recorder else None

    def discard(self) -> None:
        """Release what a monitor that was built but never started holds (a refused reload, ``monitor check``)."""
        if self.publisher:
            self.publisher.close()
        if self.escalation:
            self.escalation.close()

    @property
    def device(self) -> str:
        return ",".join(sorted({d.device for d in self.detectors.values()}))

    def start(self) -> None:
        warn_if_legacy_layout(self.config.mqtt)
        self.metrics.build(self.device)
        for name, detector in self.detectors.items():
            self.metrics.model_info(name, detector.engine.engine, detector.device, detector.engine.reason)
        self.metrics.mqtt_state(False)
        for name in self.detectors:
            self.metrics.register_model(name)
        for name, camera in self.config.cameras.items():
            self.metrics.register_camera(name, camera.fps)
            self.metrics.register_safety(name, [rule.key for rule in camera.safety])
        if self.config.metrics.enabled:
            try:
                self._http = self._serve_metrics()
            except ConfigError:
                self.discard()
                raise
        self._started = True
        self.availability.start()  # before the cameras: "online" comes before the first counts
        if self.evidence:
            self.evidence.prune()
        if self.home_assistant:
            self.home_assistant.attach(self.publisher)
        if self.web:
            self.web.start()
        self.publisher.start()
        if self.escalation:
            self.escalation.start()
        for worker in self.workers.values():
            worker.start()
        for name in self.config.cameras:
            self.readers[name].start()
            self.loops[name].start()

    def _serve_metrics(self):
        host, port = self.config.metrics.host, self.config.metrics.port
        try:
            return self.metrics.serve(host, port)
        except OSError as exc:
            raise ConfigError([
                f"metrics.port: cannot listen on {host}:{port} ({exc.strerror or exc}); another process has it? "
                f"Choose another port, or metrics.enabled: false (in {self.config.source_path})"
            ]) from None

    def wait(self, stop_requested: threading.Event) -> None:
        """Block until asked to stop or every camera has finished (file sources without loop)."""
        while not stop_requested.wait(0.2):
            if all(loop.finished for loop in self.loops.values()):
                log.info("all cameras finished")
                return

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        # loops before readers: a loop that saw its reader stopped would end its events as "stream_end"
        for loop in self.loops.values():
            loop.stop()
        for reader in self.readers.values():
            reader.stop()
        for worker in self.workers.values():
            worker.stop()
        if self.escalation:
            self.escalation.stop()  # answers that came back meanwhile are still published
            for loop in self.loops.values():
                if loop.escalation:
                    self.publisher.publish_all(loop.escalation.drain(loop.safety))
        for loop in self.loops.values():
            loop.close_safety("shutdown")
        self.publisher.stop()
        if self._owns_availability:
            self.availability.stop()
        if self._http:
            server, thread = self._http
            server.shutdown()
            server.server_close()  # free the port: a reload starts a new endpoint on it
            thread.join(5)
        if self.web:
            self.web.stop()

    def camera_states(self) -> dict[str, CameraState]:
        return {name: reader.state for name, reader in self.readers.items()}
