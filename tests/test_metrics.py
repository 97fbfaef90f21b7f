"""Metrics: each method moves its own series, registration creates zero series, label values come only from the
caller, and the registry is served over HTTP."""

from __future__ import annotations

import urllib.request

import pytest

from monitor import __version__
from monitor.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def samples(metrics: Metrics) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_fresh_registry_has_no_labelled_series():
    labelled = [key for key in samples(Metrics()) if key[1]]
    assert labelled == []


def test_frames_by_stage():
    m = Metrics()
    m.frame_captured("a")
    m.frame_captured("a")
    m.frame_dropped("a")
    m.frame_processed("a", 0.04)
    assert sample(m, "monitor_frames_total", camera="a", stage="captured") == 2
    assert sample(m, "monitor_frames_total", camera="a", stage="dropped") == 1
    assert sample(m, "monitor_frames_total", camera="a", stage="processed") == 1
    assert m.processed_frames("a") == 1 and m.processed_frames("b") == 0  # what the operator's page reads
    assert sample(m, "monitor_frame_latency_seconds_count", camera="a") == 1
    assert sample(m, "monitor_frame_latency_seconds_sum", camera="a") == pytest.approx(0.04)
    assert sample(m, "monitor_frame_latency_seconds_bucket", camera="a", le="0.035") == 0
    assert sample(m, "monitor_frame_latency_seconds_bucket", camera="a", le="0.05") == 1


def test_camera_state_reconnects_and_staleness():
    m = Metrics()
    m.camera_state("a", True)
    assert sample(m, "monitor_camera_up", camera="a") == 1
    m.camera_state("a", False)
    assert sample(m, "monitor_camera_up", camera="a") == 0
    m.camera_reconnect("a")
    m.camera_reconnect("a")
    assert sample(m, "monitor_camera_reconnects_total", camera="a") == 2
    m.camera_stale_state("a", True)
    assert sample(m, "monitor_camera_stale", camera="a") == 1
    m.camera_stale_state("a", False)
    assert sample(m, "monitor_camera_stale", camera="a") == 0


def test_register_camera_creates_its_series_at_zero():
    m = Metrics()
    m.register_camera("a", 5.0)
    for stage in ("captured", "processed", "dropped"):
        assert sample(m, "monitor_frames_total", camera="a", stage=stage) == 0
    assert sample(m, "monitor_camera_reconnects_total", camera="a") == 0
    assert sample(m, "monitor_inference_skipped_total", camera="a") == 0
    assert sample(m, "monitor_camera_up", camera="a") == 0
    assert sample(m, "monitor_camera_stale", camera="a") == 0
    assert sample(m, "monitor_camera_target_fps", camera="a") == 5.0
    m.register_camera("b", None)
    assert sample(m, "monitor_camera_target_fps", camera="b") is None


def test_inference():
    m = Metrics()
    m.inference_done("person", 0.02, 4)
    m.inference_done("person", 0.2, 1)
    assert sample(m, "monitor_inference_seconds_count", model="person") == 2
    assert sample(m, "monitor_inference_seconds_sum", model="person") == pytest.approx(0.22)
    assert sample(m, "monitor_inference_batch_size_sum", model="person") == 5
    assert sample(m, "monitor_inference_batch_size_bucket", model="person", le="2.0") == 1
    m.inference_skipped("a")
    assert sample(m, "monitor_inference_skipped_total", camera="a") == 1
    m.gpu_fallback("person")
    assert sample(m, "monitor_gpu_fallbacks_total", model="person") == 1


def test_counts_set_each_zone_class_and_line_direction():
    m = Metrics()
    m.counts("a", {"lot": {"person": 3, "car": 1}, "_all": {"person": 4}}, {"door": {"in": 7, "out": 2}})
    assert sample(m, "monitor_object_count", camera="a", zone="lot", **{"class": "person"}) == 3
    assert sample(m, "monitor_object_count", camera="a", zone="lot", **{"class": "car"}) == 1
    assert sample(m, "monitor_object_count", camera="a", zone="_all", **{"class": "person"}) == 4
    assert sample(m, "monitor_line_crossings", camera="a", line="door", direction="in") == 7
    assert sample(m, "monitor_line_crossings", camera="a", line="door", direction="out") == 2
    m.counts("a", {"lot": {"person": 0}}, {})
    assert sample(m, "monitor_object_count", camera="a", zone="lot", **{"class": "person"}) == 0


def test_escalation_outcomes_time_and_cost():
    m = Metrics()
    m.register_escalation("a", ("grey_band", "audit"))
    assert sample(m, "monitor_escalations_total", camera="a", reason="grey_band", outcome="ok") == 0
    assert sample(m, "monitor_escalation_cost_total", camera="a") == 0
    assert sample(m, "monitor_count_disagreement_total", camera="a") == 0
    m.escalation("a", "grey_band", "ok", seconds=1.5, cost=0.002)
    m.escalation("a", "grey_band", "dropped")
    assert sample(m, "monitor_escalations_total", camera="a", reason="grey_band", outcome="ok") == 1
    assert sample(m, "monitor_escalations_total", camera="a", reason="grey_band", outcome="dropped") == 1
    assert sample(m, "monitor_escalation_seconds_count", camera="a") == 1  # a dropped request took no time
    assert sample(m, "monitor_escalation_cost_total", camera="a") == pytest.approx(0.002)
    m.count_disagreement("a")
    assert sample(m, "monitor_count_disagreement_total", camera="a") == 1
    m.escalation_state(7.5, True)
    assert sample(m, "monitor_escalation_budget_remaining") == 7.5
    assert sample(m, "monitor_escalation_circuit_open") == 1
    m.escalation_state(7.0, False)
    assert sample(m, "monitor_escalation_circuit_open") == 0


def test_mqtt_and_outbox():
    m = Metrics()
    m.mqtt_state(True)
    assert sample(m, "monitor_mqtt_connected") == 1
    m.mqtt_state(False)
    assert sample(m, "monitor_mqtt_connected") == 0
    m.mqtt_message("sent")
    m.mqtt_message("sent")
    m.mqtt_message("dropped")
    assert sample(m, "monitor_mqtt_messages_total", result="sent") == 2
    assert sample(m, "monitor_mqtt_messages_total", result="dropped") == 1
    m.outbox_state(12, 3.5)
    assert sample(m, "monitor_outbox_messages") == 12 and sample(m, "monitor_outbox_oldest_seconds") == 3.5
    m.outbox_dropped("count", 20)
    m.outbox_dropped("count", 5)
    assert sample(m, "monitor_outbox_dropped_total", kind="count") == 25
    m.outbox_error()
    assert sample(m, "monitor_outbox_errors_total") == 1
    m.outbox_full(True)
    assert sample(m, "monitor_outbox_full") == 1
    m.outbox_full(False)
    assert sample(m, "monitor_outbox_full") == 0


def test_safety_events():
    m = Metrics()
    m.register_safety("a", ["lot_intrusion", "down"])
    assert sample(m, "monitor_safety_events_total", camera="a", rule="down") == 0
    assert sample(m, "monitor_safety_events_active", camera="a", rule="down") == 0
    m.safety_event_started("a", "down")
    m.safety_events_active("a", "down", 2)
    assert sample(m, "monitor_safety_events_total", camera="a", rule="down") == 1
    assert sample(m, "monitor_safety_events_active", camera="a", rule="down") == 2
    assert sample(m, "monitor_safety_events_total", camera="a", rule="lot_intrusion") == 0


def test_build_info_names_the_version_and_device():
    m = Metrics()
    m.build("cuda:0")
    assert sample(m, "monitor_build_info", version=__version__, device="cuda:0") == 1


def test_model_info_names_the_engine_its_device_and_why():
    m = Metrics()
    m.model_info("person", "openvino", "cpu", "auto_cpu_openvino")
    assert sample(m, "monitor_model_info", model="person", engine="openvino", device="cpu", reason="auto_cpu_openvino") == 1


def test_label_values_come_only_from_what_was_given():
    m = Metrics()
    m.register_camera("gate", 2.0)
    m.register_escalation("gate", ("flicker",))
    m.register_safety("gate", ["crowd"])
    m.frame_processed("gate", 0.1)
    m.counts("gate", {"dock": {"forklift": 1}}, {"door": {"in": 1}})
    m.inference_done("yolo", 0.01, 1)
    m.escalation("gate", "flicker", "timeout", seconds=5.0)
    m.mqtt_message("failed")
    m.outbox_dropped("event", 1)
    m.build("cpu")
    given = {"gate", "flicker", "crowd", "dock", "forklift", "door", "in", "yolo", "timeout", "failed", "event", "cpu", __version__}
    fixed = {"captured", "processed", "dropped", "ok"}  # the stages and the zero outcome that registration creates
    values = {value for _, labels in samples(m) for key, value in labels if key != "le"}
    assert values == given | fixed


def test_serve_exposes_the_registry_over_http():
    m = Metrics()
    m.register_camera("a", 1.0)
    server, thread = m.serve("127.0.0.1", 0)
    try:
        port = server.server_address[1]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'monitor_camera_target_fps{camera="a"} 1.0' in text
    assert 'monitor_frames_total{camera="a",stage="captured"} 0.0' in text


def test_metrics_of_escalation_are_absent_while_it_is_off():
    metrics = Metrics()
    registry = metrics.registry
    assert registry.get_sample_value("monitor_escalation_enabled") == 0
    assert registry.get_sample_value("monitor_escalation_budget_remaining") is None  # not 0, which reads "spent"
    assert registry.get_sample_value("monitor_escalation_circuit_open") is None
    metrics.escalation_state(2.5, False)
    assert registry.get_sample_value("monitor_escalation_enabled") == 1
    assert registry.get_sample_value("monitor_escalation_budget_remaining") == 2.5
    assert registry.get_sample_value("monitor_escalation_circuit_open") == 0
