"""Faults an unattended camera host sees, with real parts on loopback: an RTSP server that dies and comes
back, a broker restarted mid-run (and the monitor SIGKILLed meanwhile), TLS with passwords, a failing GPU."""

from __future__ import annotations

import datetime
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MOSQUITTO, Broker, free_port, street_config, wait_for_port, wait_until, write_config

from monitor.capture import valid_image
from monitor.config import MqttConfig, SecretSource, TlsConfig, load_config
from monitor.pipeline import Monitor
from monitor.publishing import Publisher

def small_config(port: int, **camera) -> dict:
    data = street_config(port, **{"realtime": True, "loop": True, "fps": 3, **camera})
    data["models"]["person"].update(imgsz=320)
    return data


def sample(monitor: Monitor, name: str, **labels) -> float | None:
    return monitor.metrics.registry.get_sample_value(name, labels)


def dedupe_by_seq(messages: list[dict]) -> dict[int, dict]:
    """How a subscriber dedupes QoS 1 redeliveries: keep the first message per seq."""
    by_seq: dict[int, dict] = {}
    for message in messages:
        by_seq.setdefault(message["seq"], message)
    return by_seq


# --- RTSP: the server dies and comes back ---------------------------------------------------


def test_rtsp_camera_reconnects_while_the_other_camera_goes_on(tmp_path, broker, subscriber_factory, rtsp_server):
    data = small_config(broker.port, fps=2)
    data["cameras"]["door"] = {
        "source": rtsp_server.url, "model": "person", "fps": 2,
        "reconnect": {"initial_s": 0.5, "max_s": 2, "stall_s": 3},
        "zones": {"all": {"polygon": [[0, 0], [768, 0], [768, 576], [0, 576]]}},
    }
    config = load_config(write_config(tmp_path, data))
    sub = subscriber_factory(broker.port, ["monitor/door/counts"])
    monitor = Monitor(config)
    monitor.start()
    up = lambda: sample(monitor, "monitor_camera_up", camera="door")  # noqa: E731
    street_processed = lambda: sample(monitor, "monitor_frames_total", camera="street", stage="processed")  # noqa: E731
    door_processed = lambda: sample(monitor, "monitor_frames_total", camera="door", stage="processed")  # noqa: E731
    try:
        assert wait_until(lambda: up() == 1 and (door_processed() or 0) >= 3, 90), "the RTSP camera never came up"
        assert sub.wait_for(lambda s: s.json_on("monitor/door/counts"), 30)

        rtsp_server.kill()
        ups, street_during = [], [street_processed()]
        killed = time.monotonic()
        while time.monotonic() - killed < 12:
            ups.append(up())
            street_during.append(street_processed())
            time.sleep(0.5)
        assert 0 in ups, "monitor_camera_up must go to 0 when the stream dies"
        assert sample(monitor, "monitor_camera_stale", camera="door") == 1
        assert sample(monitor, "monitor_camera_reconnects_total", camera="door") >= 1
        assert sub.wait_for(lambda s: any(m.get("stale") for m in s.json_on("monitor/door/counts")), 10)
        # the file camera never stopped: it kept processing through the whole outage
        assert street_during[-1] > street_during[0] and sample(monitor, "monitor_camera_up", camera="street") == 1
        gaps = np.diff(street_during)
        assert (gaps > 0).sum() >= len(gaps) // 2

        rtsp_server.start()  # the same URL comes back
        processed_before = door_processed()
        assert wait_until(lambda: up() == 1 and door_processed() > processed_before + 2, 60), "no reconnect"
        assert sample(monitor, "monitor_camera_stale", camera="door") == 0
        assert sub.wait_for(lambda s: not s.json_on("monitor/door/counts")[-1].get("stale"), 20)
    finally:
        monitor.stop()


def test_resolution_change_and_garbage_frames_are_named():
    good = np.zeros((576, 768, 3), np.uint8)
    assert valid_image(good, (576, 768, 3)) is None
    assert valid_image(np.zeros((480, 640, 3), np.uint8), (576, 768, 3)) == "resolution changed from 768x576 to 640x480"
    assert valid_image(np.zeros((576, 768), np.uint8), None) == "not a BGR uint8 image"
    assert valid_image(None, None) == "not a BGR uint8 image"


# --- the broker restarts; the monitor is SIGKILLed while it is down ---------------------------


PERSISTENT = "persistence true\npersistence_location {dir}/\nautosave_interval 1\n"


@pytest.fixture
def persistent_broker(tmp_path):
    store = tmp_path / "mosquitto-data"
    store.mkdir()
    store.chmod(0o777)
    broker = Broker(tmp_path, PERSISTENT.format(dir=store) + "user root\n").start()
    yield broker
    broker.stop()


def persistent_subscriber(subscriber_factory, port: int, name: str):
    return subscriber_factory(port, ["monitor/+/counts"], client_id=f"scada-{name}", clean=False)


def test_broker_restart_loses_no_count(tmp_path, persistent_broker, subscriber_factory):
    config = load_config(write_config(tmp_path, small_config(persistent_broker.port)))
    sub = persistent_subscriber(subscriber_factory, persistent_broker.port, "restart")
    monitor = Monitor(config)
    monitor.start()
    outbox = monitor.publisher.outbox
    try:
        assert sub.wait_for(lambda s: len(s.on("monitor/street/counts")) >= 3, 90)
        persistent_broker.stop()
        peak, down_since = 0, time.monotonic()
        while time.monotonic() - down_since < 6:
            peak = max(peak, outbox.size())
            time.sleep(0.2)
        assert peak >= 1, "messages produced while the broker is down wait in the outbox"
        assert sample(monitor, "monitor_outbox_messages") >= 1
        persistent_broker.start()
        assert wait_until(lambda: outbox.size() == 0, 60), "the outbox drains after the broker is back"
        time.sleep(1.0)
    finally:
        monitor.stop()
    last = sqlite3.connect(config.mqtt.outbox.path).execute("SELECT seq FROM sequences WHERE stream='street/counts'").fetchone()[0]
    assert sub.wait_for(lambda s: last in [m["seq"] for m in s.json_on("monitor/street/counts")], 20)
    received = [m["seq"] for m in sub.json_on("monitor/street/counts")]
    by_seq = dedupe_by_seq(sub.json_on("monitor/street/counts"))
    assert sorted(by_seq) == list(range(min(by_seq), last + 1)), "every seq, none missing"
    assert len(received) - len(by_seq) <= 20, "duplicates only as QoS 1 allows (redelivery, retained re-send)"


def start_monitor_process(config_path: Path, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(config_path)], env=env,
                            stdout=log_path.open("a"), stderr=subprocess.STDOUT)


def test_monitor_sigkilled_while_the_broker_is_down_loses_no_count(tmp_path, persistent_broker, subscriber_factory):
    path = write_config(tmp_path, small_config(persistent_broker.port))
    config = load_config(path)
    sub = persistent_subscriber(subscriber_factory, persistent_broker.port, "sigkill")
    log_path = tmp_path / "monitor.log"
    first = start_monitor_process(path, log_path)
    try:
        assert sub.wait_for(lambda s: len(s.on("monitor/street/counts")) >= 3, 120), log_path.read_text()[-3000:]
        persistent_broker.stop()
        db = sqlite3.connect(config.mqtt.outbox.path)
        assert wait_until(lambda: db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] >= 2, 30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stored = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        killed_at_seq = db.execute("SELECT seq FROM sequences WHERE stream='street/counts'").fetchone()[0]
        db.close()
        assert stored >= 2
    finally:
        if first.poll() is None:
            first.kill()
    persistent_broker.start()
    second = start_monitor_process(path, log_path)
    try:
        assert sub.wait_for(lambda s: max(m["seq"] for m in s.json_on("monitor/street/counts")) > killed_at_seq + 2, 120), \
            log_path.read_text()[-3000:]
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    last = sqlite3.connect(config.mqtt.outbox.path).execute("SELECT seq FROM sequences WHERE stream='street/counts'").fetchone()[0]
    assert sub.wait_for(lambda s: last in [m["seq"] for m in s.json_on("monitor/street/counts")], 20)
    by_seq = dedupe_by_seq(sub.json_on("monitor/street/counts"))
    assert sorted(by_seq) == list(range(min(by_seq), last + 1)), "seq contiguous across the SIGKILL"
    assert "messages from before the restart will be sent first" in log_path.read_text()


# --- TLS and passwords ----------------------------------------------------------------------


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_broker(tmp_path):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "monitor", "right-password"], check=True,
                   capture_output=True, timeout=30)
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
                    f"allow_anonymous false\npassword_file {passwd}\n")
    process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield port, ca
    process.terminate()
    process.wait(5)


def tls_publisher(port: int, ca: Path, password: str, tmp_path: Path) -> Publisher:
    secret = tmp_path / f"secret-{password}"
    secret.write_text(password + "\n")
    config = MqttConfig(port=port, client_id=f"tls-{password}", username="monitor",
                        password=SecretSource(file=secret), tls=TlsConfig(ca_file=ca))
    publisher = Publisher(config)
    publisher.start()
    return publisher


def test_tls_with_password_connects(tmp_path, tls_broker):
    port, ca = tls_broker
    publisher = tls_publisher(port, ca, "right-password", tmp_path)
    try:
        assert publisher.connected.wait(15)
    finally:
        publisher.stop()


def test_wrong_password_is_refused_with_a_clear_log_line(tmp_path, tls_broker, caplog):
    port, ca = tls_broker
    caplog.set_level(logging.INFO, logger="monitor")
    publisher = tls_publisher(port, ca, "wrong-password", tmp_path)
    try:
        assert wait_until(lambda: "refused the connection" in caplog.text, 15)
        assert not publisher.connected.is_set()
    finally:
        publisher.stop()
    assert f"MQTT broker 127.0.0.1:{port} refused the connection: Not authorized" in caplog.text \
        or "Bad user name or password" in caplog.text
    assert "wrong-password" not in caplog.text  # credentials never in logs


def test_untrusted_broker_certificate_is_refused_with_a_clear_log_line(tmp_path, tls_broker, caplog):
    port, _ = tls_broker
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = make_ca_and_server_cert(other)
    caplog.set_level(logging.INFO, logger="monitor")
    publisher = tls_publisher(port, other_ca, "right-password", tmp_path)
    try:
        assert wait_until(lambda: "not trusted" in caplog.text, 20), caplog.text
        assert not publisher.connected.is_set()
    finally:
        publisher.stop()
    assert "TLS: the broker's certificate is not trusted (certificate signature failure)" in caplog.text
    assert "check mqtt.tls.ca_file" in caplog.text


# --- a failing GPU --------------------------------------------------------------------------


def gpu_worker(person_model: Path, policy: str):
    from monitor.config import ModelConfig
    from monitor.detection import Detector, InferenceWorker
    from monitor.metrics import Metrics

    # PyTorch, as engine: auto picks on a GPU
    detector = Detector("person", ModelConfig(path=person_model, device="cpu", imgsz=320, warmup=False,
                                              on_gpu_failure=policy, engine="pytorch"))
    detector.device = "cuda:0"  # as if it had been on a GPU; this machine's torch has no CUDA, so it fails for real
    detector.model.predictor = None  # the backend is built again, on cuda:0, at the first batch
    metrics = Metrics()
    worker = InferenceWorker(detector, metrics)
    worker.start()
    return detector, worker, metrics


def test_cuda_error_falls_back_to_cpu(person_model, clip):
    import cv2

    ok, image = cv2.VideoCapture(str(clip)).read()
    detector, worker, metrics = gpu_worker(person_model, "cpu")
    try:
        boxes = worker.submit(image).result(timeout=120)
        assert detector.device == "cpu" and len(boxes) > 0
        assert metrics.registry.get_sample_value("monitor_gpu_fallbacks_total", {"model": "person"}) == 1
        assert worker.fatal is None
    finally:
        worker.stop()


def test_cuda_error_with_exit_policy_marks_the_worker_fatal(person_model, clip):
    import cv2

    ok, image = cv2.VideoCapture(str(clip)).read()
    detector, worker, _ = gpu_worker(person_model, "exit")
    try:
        with pytest.raises(Exception, match="CUDA"):
            worker.submit(image).result(timeout=120)
        assert worker.fatal and "CUDA error on cuda:0" in worker.fatal
    finally:
        worker.stop()
