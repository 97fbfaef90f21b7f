"""Metrics: health and work figures as Prometheus metrics, on their own registry (no global state).

Label values come only from the configuration (camera, zone, model and class names) and from small
fixed sets (stage, result), so cardinality is bounded by the config. A feature that is off exports nothing
of its own: the escalation service's gauges appear when it starts (``monitor_escalation_enabled`` says which).
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from monitor import __version__
from monitor.frame import Counts

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("monitor_frames", "Frames by stage", ["camera", "stage"], registry=r)
        self.inference_seconds = Histogram(
            "monitor_inference_seconds", "Model inference time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.inference_batch = Histogram(
            "monitor_inference_batch_size", "Frames per inference call", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.latency = Histogram(
            "monitor_frame_latency_seconds", "Capture to publish, per processed frame", ["camera"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.object_count = Gauge("monitor_object_count", "Smoothed objects per zone and class", ["camera", "zone", "class"], registry=r)
        self.line_crossings = Gauge("monitor_line_crossings", "Line crossing totals", ["camera", "line", "direction"], registry=r)
        self.camera_up = Gauge("monitor_camera_up", "1 while the camera delivers frames", ["camera"], registry=r)
        self.camera_fps_target = Gauge("monitor_camera_target_fps", "Configured processing rate", ["camera"], registry=r)
        self.reconnects = Counter("monitor_camera_reconnects", "Reconnect attempts", ["camera"], registry=r)
        self.mqtt_connected = Gauge("monitor_mqtt_connected", "1 while connected to the broker", registry=r)
        self.mqtt_messages = Counter("monitor_mqtt_messages", "MQTT messages by result", ["result"], registry=r)
        self.inference_skipped_frames = Counter(
            "monitor_inference_skipped", "Frames whose detections were reused because nothing moved", ["camera"], registry=r
        )
        self.escalations = Counter(
            "monitor_escalations", "Escalations to the multimodal model", ["camera", "reason", "outcome"], registry=r
        )
        self.escalation_seconds = Histogram(
            "monitor_escalation_seconds", "Escalation call time, retries included", ["camera"],
            buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120), registry=r,
        )
        self.escalation_cost = Counter("monitor_escalation_cost", "Estimated money spent on escalations", ["camera"], registry=r)
        self.escalation_enabled = Gauge("monitor_escalation_enabled", "1 while escalation runs, 0 when it is off", registry=r)
        # registered by the first escalation_state: with escalation off, a budget of 0 would read as "spent"
        self.escalation_budget = Gauge("monitor_escalation_budget_remaining", "Estimated money left today", registry=None)
        self.escalation_circuit = Gauge("monitor_escalation_circuit_open", "1 while failures keep escalation off", registry=None)
        self._escalation_registered = False
        self._escalation_lock = threading.Lock()  # escalation workers report from their own threads
        self.count_disagreements = Counter(
            "monitor_count_disagreement", "Escalations whose model counts differ from the detector's", ["camera"], registry=r
        )
        self.build_info = Gauge("monitor_build_info", "Version and inference device", ["version", "device"], registry=r)
        self.model_engine = Gauge(
            "monitor_model_info", "Always 1: the engine running each model, its device, and why (engine: auto)",
            ["model", "engine", "device", "reason"], registry=r,
        )  # fmt: skip
        # unattended running (outbox, stale cameras, GPU fallback)
        self.camera_stale = Gauge("monitor_camera_stale", "1 while the camera's counts are stale (no frames)", ["camera"], registry=r)
        self.outbox_messages = Gauge("monitor_outbox_messages", "Messages waiting for the broker's acknowledgement", registry=r)
        self.outbox_oldest = Gauge("monitor_outbox_oldest_seconds", "Age of the oldest unacknowledged message", registry=r)
        self.outbox_dropped_total = Counter("monitor_outbox_dropped", "Outbox messages dropped by the size policy", ["kind"], registry=r)
        self.outbox_errors = Counter("monitor_outbox_errors", "Outbox database failures (disk full...)", registry=r)
        self.outbox_alarm = Gauge("monitor_outbox_full", "1 while the outbox drops events or cannot write", registry=r)
        self.outbox_corrupt_total = Counter(
            "monitor_outbox_corrupt", "Corrupt outbox files moved aside (and a fresh outbox started)", registry=r
        )
        self.gpu_fallbacks = Counter("monitor_gpu_fallbacks", "Models moved to the CPU after a CUDA error", ["model"], registry=r)
        self.inference_errors = Counter(
            "monitor_inference_errors", "Batches whose inference failed (the model, or the server serving it)", ["model"], registry=r
        )
        self.safety_events = Counter("monitor_safety_events", "Safety events started", ["camera", "rule"], registry=r)
        self.safety_active = Gauge("monitor_safety_events_active", "Safety events active now", ["camera", "rule"], registry=r)

    def serve(self, host: str, port: int):
        """Start the HTTP endpoint; returns (server, thread) so it can be shut down."""
        return start_http_server(port, addr=host, registry=self.registry)

    # --- capture events -------------------------------------------------------------------

    def frame_captured(self, camera: str) -> None:
        self.frames.labels(camera, "captured").inc()

    def frame_dropped(self, camera: str) -> None:
        self.frames.labels(camera, "dropped").inc()

    def camera_state(self, camera: str, up: bool) -> None:
        self.camera_up.labels(camera).set(1 if up else 0)

    def camera_reconnect(self, camera: str) -> None:
        self.reconnects.labels(camera).inc()

    # --- processing events ----------------------------------------------------------------

    def register_camera(self, camera: str, target_fps: float | None) -> None:
        """Create a camera's series at zero so that dashboards and rate() see them from the start."""
        for stage in ("captured", "processed", "dropped"):
            self.frames.labels(camera, stage)
        self.reconnects.labels(camera)
        self.inference_skipped_frames.labels(camera)
        self.camera_up.labels(camera).set(0)
        self.camera_stale.labels(camera).set(0)
        if target_fps:
            self.camera_fps_target.labels(camera).set(target_fps)

    def inference_skipped(self, camera: str) -> None:
        self.inference_skipped_frames.labels(camera).inc()

    def inference_done(self, model: str, seconds: float, batch_size: int) -> None:
        self.inference_seconds.labels(model).observe(seconds)
        self.inference_batch.labels(model).observe(batch_size)

    def register_model(self, model: str) -> None:
        self.inference_errors.labels(model)

    def inference_failed(self, model: str) -> None:
        self.inference_errors.labels(model).inc()

    def frame_processed(self, camera: str, latency_s: float) -> None:
        self.frames.labels(camera, "processed").inc()
        self.latency.labels(camera).observe(latency_s)

    def processed_frames(self, camera: str) -> float:
        """The camera's ``monitor_frames_total{stage="processed"}`` so far (the operator's page takes its fps from it)."""
        return self.registry.get_sample_value("monitor_frames_total", {"camera": camera, "stage": "processed"}) or 0.0

    def counts(self, camera: str, counts: Counts, line_totals: dict[str, dict[str, int]]) -> None:
        for zone, per_label in counts.items():
            for label, n in per_label.items():
                self.object_count.labels(camera, zone, label).set(n)
        for line, totals in line_totals.items():
            for direction, n in totals.items():
                self.line_crossings.labels(camera, line, direction).set(n)

    # --- escalation events ----------------------------------------------------------------

    def escalation(self, camera: str, reason: str, outcome: str, seconds: float | None = None, cost: float = 0.0) -> None:
        self.escalations.labels(camera, reason, outcome).inc()
        if seconds is not None:
            self.escalation_seconds.labels(camera).observe(seconds)
        if cost > 0:
            self.escalation_cost.labels(camera).inc(cost)

    def escalation_state(self, budget_remaining: float, circuit_open: bool) -> None:
        with self._escalation_lock:
            if not self._escalation_registered:
                self._escalation_registered = True
                self.registry.register(self.escalation_budget)
                self.registry.register(self.escalation_circuit)
                self.escalation_enabled.set(1)
        self.escalation_budget.set(budget_remaining)
        self.escalation_circuit.set(1 if circuit_open else 0)

    def count_disagreement(self, camera: str) -> None:
        self.count_disagreements.labels(camera).inc()

    def register_escalation(self, camera: str, reasons: tuple[str, ...] = ()) -> None:
        self.escalation_cost.labels(camera)
        self.count_disagreements.labels(camera)
        for reason in reasons:  # zero series, so dashboards and rate() see escalations before the first call
            self.escalations.labels(camera, reason, "ok")

    # --- publishing events ----------------------------------------------------------------

    def mqtt_state(self, connected: bool) -> None:
        self.mqtt_connected.set(1 if connected else 0)

    def mqtt_message(self, result: str) -> None:
        self.mqtt_messages.labels(result).inc()

    # --- unattended running ---------------------------------------------------------------

    def camera_stale_state(self, camera: str, stale: bool) -> None:
        self.camera_stale.labels(camera).set(1 if stale else 0)

    def outbox_state(self, messages: int, oldest_s: float) -> None:
        self.outbox_messages.set(messages)
        self.outbox_oldest.set(oldest_s)

    def outbox_dropped(self, kind: str, n: int) -> None:
        self.outbox_dropped_total.labels(kind).inc(n)

    def outbox_error(self) -> None:
        self.outbox_errors.inc()

    def outbox_full(self, full: bool) -> None:
        self.outbox_alarm.set(1 if full else 0)

    def outbox_corrupt(self) -> None:
        self.outbox_corrupt_total.inc()

    def register_safety(self, camera: str, rules: list[str]) -> None:
        for rule in rules:
            self.safety_events.labels(camera, rule)
            self.safety_active.labels(camera, rule).set(0)

    def safety_event_started(self, camera: str, rule: str) -> None:
        self.safety_events.labels(camera, rule).inc()

    def safety_events_active(self, camera: str, rule: str, n: int) -> None:
        self.safety_active.labels(camera, rule).set(n)

    def gpu_fallback(self, model: str) -> None:
        self.gpu_fallbacks.labels(model).inc()

    def build(self, device: str) -> None:
        self.build_info.labels(__version__, device).set(1)

    def model_info(self, model: str, engine: str, device: str, reason: str) -> None:
        self.model_engine.labels(model, engine, device, reason).set(1)
