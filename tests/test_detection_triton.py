"""Inference on a real Triton Inference Server (PyPI's nvidia-pytriton build; the Python backend runs the ONNX
graph that `monitor triton-repo` writes): the local model's boxes, start-up errors, a slow server, and a server
killed and restarted under a running service."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from conftest import cut_clip, free_port, street_config, wait_until, write_config
from detection_support import model_config, same_boxes
from test_service import FakeSystemd
from triton_fixtures import EXPORT_IMGSZ, MAX_BATCH, start_server, triton_model, write_python_repository

from bench.triton import TritonServer
from monitor.cli import main as monitor_main
from monitor.config import ConfigError, ModelConfig, load_config, parse_config
from monitor.detection import Detector, ModelLoadError, build_detector
from monitor.detection.engines import cached_path
from monitor.detection.triton import TritonError, describe
from monitor.metrics import Metrics
from monitor.pipeline import Monitor
from monitor.service import Notifier, Service

SLOW_MS = 400


@pytest.fixture(scope="module")
def repository(tmp_path_factory, person_model):
    out = tmp_path_factory.mktemp("repository")
    write_python_repository(out, person_model, "person-fall")
    write_python_repository(out, person_model, "person-slow", "--delay-ms", str(SLOW_MS))
    return out


@pytest.fixture(scope="module")
def triton(repository, tmp_path_factory):
    server = start_server(repository, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def segment(tmp_path_factory, clip):
    return cut_clip(clip, tmp_path_factory.mktemp("clip") / "segment.avi", 0, 40)


def served(url: str, **overrides) -> ModelConfig:
    return ModelConfig(**{**triton_model(url), "warmup": False, **overrides})


# --- the same boxes as the local model ----------------------------------------------------------


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_boxes_through_triton_equal_the_local_model(triton, frames, detector, person_model, session_cache_dir, scheme):
    remote = build_detector("person", served(triton.grpc_url if scheme == "grpc" else triton.http_url))
    assert remote.class_names == ["Normal", "Fall"] and remote.labels == ["person", "person"]  # from the server's config
    assert (remote.engine.engine, remote.engine.reason, remote.model_path) == ("triton", "configured", None)  # model_info
    # the local model: the same ONNX export, run by ONNX Runtime here, with the float input the graph on the server builds
    local = Detector("person", model_config(cached_path(session_cache_dir, person_model, "onnx", "any", EXPORT_IMGSZ, MAX_BATCH, False)))
    images = list(frames.values())
    through_triton = remote.predict(images)  # one request of four frames
    for remote_boxes, local_boxes, pytorch_boxes in zip(through_triton, local.predict(images), detector.predict(images)):
        assert len(local_boxes) >= 2
        assert same_boxes(remote_boxes, local_boxes, atol=1e-3)
        assert same_boxes(remote_boxes, pytorch_boxes, atol=1.0)  # ONNX Runtime vs PyTorch: within a pixel
    height, width = 256, 320  # 768x576 into 320: 320x240, padded to the stride (the minimum rectangle, as locally)
    assert remote.server.sent_bytes == len(images) * height * width * 3  # uint8 pixels, not 4-byte floats


# --- start-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, expected",
    [
        ({"triton": {"url": "tcp://h:8001", "model": "m"}}, "models.person.triton.url: expected grpc://host:port or http://host:port, got 'tcp://h:8001'"),
        ({"triton": {"url": "grpc://h:80x1", "model": "m"}}, "models.person.triton.url: bad port in 'grpc://h:80x1'"),
        ({"triton": {"url": "grpc://h:8001"}}, "models.person.triton.model: required key is missing"),
        ({"triton": {"url": "grpc://h:8001", "model": "m", "timeout_s": 0}}, "models.person.triton.timeout_s: Input should be greater than 0"),
        ({"path": "a.pt", "triton": {"url": "grpc://h:8001", "model": "m"}}, "models.person.triton: give path (a local model) or triton (a served one), not both"),
        ({"imgsz": 320}, "models.person.path: required key is missing (a model file, or triton: a model on a Triton server)"),
    ],
)
def test_triton_config_errors_name_the_key(model, expected):
    with pytest.raises(ConfigError) as error:
        parse_config({"models": {"person": model}, "cameras": {"street": {"source": "a.avi", "model": "person"}}})
    assert error.value.problems == [expected]


def test_triton_down_at_start_names_the_url_and_model(tmp_path, capsys, segment):
    url = f"grpc://127.0.0.1:{free_port()}"
    with pytest.raises(ModelLoadError, match=rf"^models\.person\.triton: no Triton server answers at {url} \(for model 'person-fall'\)"):
        build_detector("person", served(url, triton={"url": url, "model": "person-fall", "timeout_s": 1}))
    data = street_config(free_port(), source=str(segment))
    data["models"]["person"] = triton_model(url, timeout_s=1)
    assert monitor_main(["check", "--config", str(write_config(tmp_path, data))]) == 2
    assert f"models.person.triton: no Triton server answers at {url} (for model 'person-fall')" in capsys.readouterr().err


def test_a_model_that_is_not_ready_is_a_clear_error(triton):
    with pytest.raises(ModelLoadError) as error:
        build_detector("person", served(triton.grpc_url, triton={"url": triton.grpc_url, "model": "person-nope"}))
    message = str(error.value)
    assert message.startswith(f"models.person.triton: {triton.grpc_url} model 'person-nope' is not ready; the server has:")
    assert "person-fall 1 READY" in message and "person-slow 1 READY" in message


def test_max_batch_above_the_served_models_is_a_clear_error(triton):
    with pytest.raises(ModelLoadError, match=rf"^models\.person\.max_batch: 32 is more than the max_batch_size 16 of {triton.http_url} model 'person-fall'"):
        build_detector("person", served(triton.http_url, max_batch=32))


def test_a_model_without_uint8_nhwc_input_is_refused():
    metadata = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 3, -1, -1]}],
                "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, 6, -1]}]}  # fmt: skip
    with pytest.raises(TritonError, match=r"its input 'images' is FP32 \[-1, 3, -1, -1\]; the monitor sends uint8 NHWC"):
        describe(metadata, {"parameters": {"names": {"string_value": '["a"]'}}}, "grpc://h:8001 model 'x'")
    metadata["inputs"][0].update(datatype="UINT8", shape=["-1", "-1", "-1", "3"])  # gRPC's JSON writes int64 as text
    with pytest.raises(TritonError, match=r"no class names \(parameters\.names"):
        describe(metadata, {"max_batch_size": 8}, "grpc://h:8001 model 'x'")
    assert describe(metadata, {"max_batch_size": 8, "parameters": {"names": {"string_value": '["a", "b"]'}}}, "x").class_names == ["a", "b"]


def test_wait_at_start_waits_for_the_server(repository, tmp_path, caplog):
    late = TritonServer(repository, tmp_path)
    built: list = []
    caplog.set_level(logging.WARNING, "monitor.detection.triton")
    waiting = threading.Thread(target=lambda: built.append(build_detector("person", served(late.grpc_url, triton={
        "url": late.grpc_url, "model": "person-fall", "timeout_s": 1, "wait_at_start": True}))))  # fmt: skip
    waiting.start()
    try:
        time.sleep(3)
        assert built == [] and waiting.is_alive()
        assert f"models.person.triton: waiting for Triton (0 s so far): no Triton server answers at {late.grpc_url}" in caplog.text
        late.start()
        waiting.join(120)
        assert len(built) == 1 and built[0].class_names == ["Normal", "Fall"]
    finally:
        late.stop()
        waiting.join(5)


# --- a slow server: the newest frame wins, nothing queues ----------------------------------------


def test_a_slow_server_drops_frames_never_builds_a_backlog(triton, broker, segment):
    data = street_config(broker.port, source=str(segment), realtime=True, loop=True, fps=10, safety=[])
    data["models"]["person"] = triton_model(triton.grpc_url, model="person-slow")
    monitor = Monitor(parse_config(data), Metrics())
    get = monitor.metrics.registry.get_sample_value
    monitor.start()
    try:
        assert wait_until(lambda: (get("monitor_frames_total", {"camera": "street", "stage": "processed"}) or 0) >= 6, 60)
    finally:
        monitor.stop()
    figures = {stage: get("monitor_frames_total", {"camera": "street", "stage": stage}) for stage in ("captured", "processed", "dropped")}
    # 10 fps against at least 400 ms per frame: most frames are replaced by a newer one before the model takes them
    assert figures["dropped"] > figures["processed"]
    # every captured frame was processed or dropped; at most one waited in the slot and one was in flight
    assert figures["captured"] - figures["processed"] - figures["dropped"] <= 2
    assert get("monitor_inference_errors_total", {"model": "person"}) == 0


# --- the server killed and restarted under a running service ------------------------------------


def test_triton_killed_and_restarted_mid_run(triton, broker, segment, subscriber_factory, tmp_path, monkeypatch):
    data = street_config(broker.port, source=str(segment), realtime=True, loop=True, fps=5, safety=[])
    data["cameras"]["street2"] = data["cameras"]["street"]
    data["models"]["person"] = triton_model(triton.grpc_url, timeout_s=1)
    data["service"] = {"watchdog_stall_s": 3}
    config = load_config(write_config(tmp_path, data))
    systemd = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a keep-alive every 0.2 s while healthy
    service = Service(tmp_path / "config.yaml", config, Notifier(str(systemd.path)), tick_s=0.1)
    subscriber = subscriber_factory(broker.port, ["monitor/+/counts"])
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    cameras = ("street", "street2")
    try:
        assert systemd.wait_for("READY=1", 120)
        metrics = service.monitor.metrics.registry.get_sample_value
        value = lambda name, **labels: metrics(name, labels) or 0  # noqa: E731
        processed = lambda camera: value("monitor_frames_total", camera=camera, stage="processed")  # noqa: E731
        assert wait_until(lambda: all(processed(c) >= 5 for c in cameras), 60)

        triton.kill()
        killed_at = time.monotonic()
        assert wait_until(lambda: all(value("monitor_camera_stale", camera=c) == 1 for c in cameras), 30)
        assert wait_until(lambda: all(any(m.get("stale") for m in subscriber.json_on(f"monitor/{c}/counts")) for c in cameras), 30)
        time.sleep(max(0.0, killed_at + 5 - time.monotonic()))  # longer than watchdog_stall_s
        for camera in cameras:
            assert value("monitor_camera_up", camera=camera) == 1  # the camera itself is fine: it delivers frames
            assert value("monitor_camera_stale", camera=camera) == 1
        errors_during = value("monitor_inference_errors_total", model="person")
        assert errors_during >= 3
        # a remote outage is not a hang: the keep-alives go on and nothing is reported stalled
        assert len(systemd.lines("WATCHDOG=1", since=killed_at + 3)) >= 5
        assert systemd.lines("STATUS=stalled") == []
        processed_during = {c: processed(c) for c in cameras}

        triton.start()
        assert wait_until(lambda: all(value("monitor_camera_stale", camera=c) == 0 for c in cameras), 60)
        assert wait_until(lambda: all(processed(c) >= processed_during[c] + 5 for c in cameras), 60)
        for camera in cameras:
            assert "stale" not in subscriber.json_on(f"monitor/{camera}/counts")[-1]
        errors_after = value("monitor_inference_errors_total", model="person")
        time.sleep(1.0)
        assert value("monitor_inference_errors_total", model="person") == errors_after  # no more failures
        assert systemd.lines("STATUS=stalled") == []
    finally:
        service.stop_requested.set()
        runner.join(60)
        systemd.close()
        if triton.process.poll() is not None:
            triton.start()
