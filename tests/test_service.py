"""systemd integration: sd_notify, the watchdog that stops when the pipeline stalls, signals, reload, the unit file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, free_port, street_config, write_config

from monitor.capture import CameraState
from monitor.config import ConfigError, load_config
from monitor.service import Notifier, Service, cameras_down, stalled_parts, watchdog_interval

UNIT = ROOT / "systemd" / "monitor.service"


class FakeSystemd:
    """The NOTIFY_SOCKET end: a unix datagram socket that records every notification."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str, since: float = 0.0) -> list[str]:
        return [line for t, line in list(self.messages) if line.startswith(prefix) and t >= since]

    def wait_for(self, prefix: str, timeout: float, since: float = 0.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lines(prefix, since):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd_socket(tmp_path):
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def small_config(port: int, **camera) -> dict:
    data = street_config(port, **{"realtime": True, "loop": True, "fps": 3, **camera})
    data["models"]["person"].update(imgsz=320)
    return data


# --- sd_notify -----------------------------------------------------------------------------


def test_notifier_sends_datagrams(systemd_socket):
    notifier = Notifier(str(systemd_socket.path))
    notifier.ready("running: 1 camera")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping()
    assert systemd_socket.wait_for("STOPPING=1", 2)
    lines = [line for _, line in systemd_socket.messages]
    assert lines[:3] == ["READY=1", "STATUS=running: 1 camera", f"MAINPID={os.getpid()}"]
    assert "WATCHDOG=1" in lines and "RELOADING=1" in lines
    assert any(re.fullmatch(r"MONOTONIC_USEC=\d+", line) for line in lines)


def test_notifier_without_systemd_is_a_no_op():
    notifier = Notifier("")
    assert not notifier.enabled and notifier.send("READY=1") is False


def test_watchdog_interval_is_half_of_watchdog_sec():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another process
    assert watchdog_interval({}) is None


def fake_monitor(now: float, **overrides):
    parts = dict(
        loops={"a": SimpleNamespace(finished=False, last_progress=now)},
        readers={"a": SimpleNamespace(state="up")},
        workers={"m": SimpleNamespace(busy_since=None, alive=True, fatal=None)},
        publisher=SimpleNamespace(alive=True, last_progress=now),
    )
    parts.update(overrides)
    return SimpleNamespace(**parts)


def test_stalled_parts_names_what_is_stuck():
    now = 1000.0
    assert stalled_parts(fake_monitor(now), 10, now) == []
    dead_loop = {"a": SimpleNamespace(finished=True, last_progress=now)}
    assert stalled_parts(fake_monitor(now, loops=dead_loop), 10, now) == ["camera a: loop thread ended"]
    hung = {"m": SimpleNamespace(busy_since=now - 30, alive=True, fatal=None)}
    assert stalled_parts(fake_monitor(now, workers=hung), 10, now) == ["model m: inference hung for 30s"]
    idle = {"m": SimpleNamespace(busy_since=None, alive=True, fatal=None)}  # idle is not hung
    assert stalled_parts(fake_monitor(now, workers=idle), 10, now + 5) == []
    dead_publisher = SimpleNamespace(alive=False, last_progress=now)
    assert stalled_parts(fake_monitor(now, publisher=dead_publisher), 10, now) == ["publisher: thread ended"]


def test_cameras_down_names_each_camera_with_its_problem():
    readers = {"a": SimpleNamespace(state=CameraState.UP, problem=None),
               "b": SimpleNamespace(state=CameraState.DOWN, problem="cannot open source")}
    assert cameras_down(fake_monitor(0, readers=readers)) == ["camera b down: cannot open source"]


def test_status_says_which_camera_is_down_instead_of_just_running(tmp_path, broker, systemd_socket, clip):
    source = tmp_path / "street.avi"
    shutil.copyfile(clip, source)
    config = load_config(write_config(tmp_path, small_config(broker.port, source=str(source))))
    source.unlink()  # gone after the config was checked (an unmounted share, a deleted recording)
    service = Service(tmp_path / "config.yaml", config, Notifier(str(systemd_socket.path)), tick_s=0.1)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert systemd_socket.wait_for("STATUS=running: 1 camera on cpu; camera street down: file", 120)
    finally:
        service.stop_requested.set()
        thread.join(60)
    (status,) = set(systemd_socket.lines("STATUS=running: 1 camera on cpu; camera street down"))
    assert status.endswith(f"file {source} does not exist")


# --- the watchdog with the real pipeline -------------------------------------------------------


def test_keepalives_stop_when_the_detector_hangs(tmp_path, broker, systemd_socket, monkeypatch, clip):
    data = small_config(broker.port)
    data["service"] = {"watchdog_stall_s": 3}
    config = load_config(write_config(tmp_path, data))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # WatchdogSec=0.4s: a keep-alive every 0.2 s
    service = Service(tmp_path / "config.yaml", config, Notifier(str(systemd_socket.path)), tick_s=0.1)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    release = threading.Event()
    try:
        assert systemd_socket.wait_for("READY=1", 120), "never READY"
        time.sleep(2.0)
        assert len(systemd_socket.lines("WATCHDOG=1")) >= 5, "keep-alives while healthy"

        detector = service.monitor.detectors["person"]
        real_infer = detector.infer
        monkeypatch.setattr(detector, "infer", lambda prepared: release.wait(60) and real_infer(prepared))
        hung_at = time.monotonic()
        assert systemd_socket.wait_for("STATUS=stalled", 15, since=hung_at)
        status = systemd_socket.lines("STATUS=stalled", since=hung_at)[0]
        assert "model person: inference hung" in status
        quiet_from = time.monotonic()
        time.sleep(2.0)
        assert systemd_socket.lines("WATCHDOG=1", since=quiet_from) == [], "keep-alives must stop while hung"

        release.set()  # inference works again: keep-alives come back
        assert systemd_socket.wait_for("WATCHDOG=1", 20, since=time.monotonic())
    finally:
        release.set()
        service.stop_requested.set()
        thread.join(60)
    assert systemd_socket.wait_for("STOPPING=1", 2)


# --- the real command under a fake systemd: READY, reload on SIGHUP, stop on SIGTERM ---------


def test_monitor_run_reload_and_stop(tmp_path, broker, systemd_socket, subscriber_factory, clip):
    metrics_port = free_port()
    data = small_config(broker.port)
    data["metrics"].update(enabled=True, port=metrics_port)
    path = write_config(tmp_path, data)
    env = {**os.environ, "NOTIFY_SOCKET": str(systemd_socket.path), "WATCHDOG_USEC": "2000000", "YOLO_OFFLINE": "1"}
    sub = subscriber_factory(broker.port, ["monitor/+/counts"])
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(path)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert systemd_socket.wait_for("READY=1", 120), "never READY"
        assert systemd_socket.wait_for("WATCHDOG=1", 10)
        assert sub.wait_for(lambda s: s.json_on("monitor/street/counts"), 60)

        # a broken config: refused, the running one stays
        path.write_text(path.read_text().replace("model: person", "model: nosuchmodel"))
        mark = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        assert systemd_socket.wait_for("STATUS=reload refused", 20, since=mark)
        assert systemd_socket.lines("RELOADING=1", since=mark) == []

        # a valid changed config: RELOADING, then READY again, and seq goes on
        data["cameras"]["street"]["zones"]["lawn"]["polygon"] = [[0, 300], [768, 300], [768, 576], [0, 576]]
        write_config(tmp_path, data)
        seq_before = sub.json_on("monitor/street/counts")[-1]["seq"]
        mark = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        assert systemd_socket.wait_for("RELOADING=1", 20, since=mark)
        assert systemd_socket.wait_for("READY=1", 120, since=mark)
        assert sub.wait_for(lambda s: s.json_on("monitor/street/counts")[-1]["seq"] > seq_before + 1, 60)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "monitor_outbox_messages" in metrics  # the endpoint came back on its port after the reload

        mark = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "SIGTERM stops well within TimeoutStopSec=30"
        assert systemd_socket.lines("STOPPING=1", since=mark)
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate(timeout=10)[0]
    assert "nosuchmodel" in output  # the refused reload names the problem
    seqs = [m["seq"] for m in sub.json_on("monitor/street/counts")]
    assert sorted(set(seqs)) == list(range(min(seqs), max(seqs) + 1)), "seq contiguous across the reload"


# --- configuration: state dir, secrets --------------------------------------------------------


def test_state_dir_comes_from_systemd(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/monitor:/var/lib/other")
    config = load_config(write_config(tmp_path, street_config(1883)))
    assert config.state_dir == Path("/var/lib/monitor")
    assert config.mqtt.outbox.path == Path("/var/lib/monitor/outbox-monitor-test-1883.sqlite")
    monkeypatch.delenv("STATE_DIRECTORY")
    config = load_config(write_config(tmp_path, street_config(1883)))
    assert config.state_dir == tmp_path / "state"  # next to the config file


def test_inline_secret_in_a_world_readable_config_is_refused(tmp_path, caplog):
    data = street_config(1883)
    data["mqtt"].update(username="monitor", password={"value": "s3cret"})
    path = write_config(tmp_path, data)
    path.chmod(0o644)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "mqtt.password.value: inline secret" in str(error.value) and "mode 644" in str(error.value)
    assert "s3cret" not in str(error.value)
    path.chmod(0o600)
    assert load_config(path).mqtt.password.reveal() == "s3cret"
    data["service"] = {"secrets_in_readable_config": "warn"}
    path = write_config(tmp_path, data)
    path.chmod(0o644)
    load_config(path)
    assert "inline secret" in caplog.text
    data["mqtt"]["password"] = {"file": "mqtt-password"}  # a credential file is fine at any mode
    path = write_config(tmp_path, {**data, "service": {}})
    path.chmod(0o644)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and load_config(path)


# --- the unit file ----------------------------------------------------------------------------


@pytest.fixture
def checkable_unit(tmp_path) -> Path:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = tmp_path / "monitor.service"
    # verify checks that ExecStart exists: point it at this checkout's entry point
    unit.write_text(UNIT.read_text().replace("/opt/monitor/venv/bin/monitor", shutil.which("monitor") or "/bin/true"))
    return unit


def test_unit_file_verifies(checkable_unit):
    result = subprocess.run(["systemd-analyze", "verify", str(checkable_unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_unit_file_security_exposure(checkable_unit):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(checkable_unit)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for monitor.service: ([\d.]+) (\w+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    print(f"systemd-analyze security exposure: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= 2.0  # README states the score; 10 is fully exposed


def test_unit_file_has_the_essentials():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes", "StateDirectory=monitor",
                 "CacheDirectory=monitor", "LogsDirectory=monitor", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "SystemCallFilter=@system-service", "DeviceAllow=char-video4linux",
                 "DeviceAllow=/dev/nvidiactl", "TimeoutStopSec=", "ExecReload="):
        assert line in text, line


def test_the_unit_starts_without_credentials_and_the_drop_in_adds_them(tmp_path):
    """A LoadCredential= whose file is missing stops a unit from starting: a broker without a password must not
    need one, so the credentials come in a drop-in that only sites with passwords install."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    assert "LoadCredential" not in "".join(line for line in UNIT.read_text().splitlines(True) if not line.startswith("#"))
    drop_in = ROOT / "systemd" / "monitor.service.d" / "credentials.conf"
    settings = [line for line in drop_in.read_text().splitlines() if line and not line.startswith("#")]
    assert settings == ["[Service]", "LoadCredential=mqtt-password:/etc/monitor/credentials/mqtt-password"]
    unit = tmp_path / "monitor.service"
    unit.write_text(UNIT.read_text().replace("/opt/monitor/venv/bin/monitor", shutil.which("monitor") or "/bin/true"))
    (tmp_path / "monitor.service.d").mkdir()
    shutil.copy(drop_in, tmp_path / "monitor.service.d")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug"})
    assert result.returncode == 0, result.stderr
    assert f"DropIn Path: {tmp_path / 'monitor.service.d' / 'credentials.conf'}" in result.stdout  # read with the unit
    assert "credentials.conf:" not in result.stderr  # and nothing in it ignored (unknown keys are named file:line)


def test_a_new_pipeline_that_fails_to_start_leaves_no_status_connections_of_its_own(tmp_path):
    """A reload onto another broker prefix builds new status connections; the new pipeline starts them, then fails:
    they must go (else the new prefix's cameras stay 'online' beside the running ones)."""
    started: list = []

    class Pipeline:
        def __init__(self, config, availability, sequences, fail: bool):
            self.config, self.availability, self.fail = config, availability, fail
            self.device, self.readers = "cpu", {}

        def start(self):
            self.availability.start()
            started.append(self.availability)
            if self.fail:
                raise RuntimeError("the publisher did not start")

        def stop(self):
            pass

    def build(config, availability, sequences):
        return Pipeline(config, availability, sequences, fail=config.mqtt.prefix == "other")

    data = street_config(free_port())
    path = write_config(tmp_path, data)
    service = Service(path, load_config(path), Notifier(None), build=build)
    service.lock = service.sequences = None
    service.monitor = build(service.config, service.availability, None)
    service.monitor.start()
    write_config(tmp_path, {**data, "mqtt": {**data["mqtt"], "prefix": "other"}})
    assert service.reload() is False
    failed, restarted = started[1], started[2]
    assert failed is not service.availability and not failed._started  # stopped again
    assert restarted is service.availability and service.config.mqtt.prefix == "monitor"
    service.availability.stop()
