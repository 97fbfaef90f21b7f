"""Metrics: health and work figures as Prometheus metrics, on their own registry (no global state).

Label values come only from the configuration (camera, zone, model and class names) and from small
fixed sets (stage, result), so cardinality is bounded by the config.
"""

from __future__ import annotations

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
        self.build_info = Gauge("monitor_build_info", "Version and inference device", ["version", "device"], registry=r)

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
        self.camera_up.labels(camera).set(0)
        if target_fps:
            self.camera_fps_target.labels(camera).set(target_fps)

    def inference_done(self, model: str, seconds: float, batch_size: int) -> None:
        self.inference_seconds.labels(model).observe(seconds)
        self.inference_batch.labels(model).observe(batch_size)

    def frame_processed(self, camera: str, latency_s: float) -> None:
        self.frames.labels(camera, "processed").inc()
        self.latency.labels(camera).observe(latency_s)

    def counts(self, camera: str, counts: Counts, line_totals: dict[str, dict[str, int]]) -> None:
        for zone, per_label in counts.items():
            for label, n in per_label.items():
                self.object_count.labels(camera, zone, label).set(n)
        for line, totals in line_totals.items():
            for direction, n in totals.items():
                self.line_crossings.labels(camera, line, direction).set(n)

    # --- publishing events ----------------------------------------------------------------

    def mqtt_state(self, connected: bool) -> None:
        self.mqtt_connected.set(1 if connected else 0)

    def mqtt_message(self, result: str) -> None:
        self.mqtt_messages.labels(result).inc()

    def build(self, device: str) -> None:
        self.build_info.labels(__version__, device).set(1)
