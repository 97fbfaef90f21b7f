"""A reload (SIGHUP) never ends the daemon: a config that fails its checks, a pipeline that fails to build for any
reason, or one that fails to start leaves a running pipeline and says why in STATUS=; and a broker that accepts
TCP but never answers CONNECT is logged (once)."""

from __future__ import annotations

import logging
import socket
import threading
import time

from conftest import cut_clip, street_config, write_config
from test_service import FakeSystemd

from monitor.config import MqttConfig, OutboxConfig, load_config
from monitor.publishing import Publisher
from monitor.service import Notifier, Service

COUNTS = "monitor/street/counts"


def test_whatever_fails_in_a_reload_the_daemon_keeps_counting(tmp_path, broker, subscriber_factory, clip, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    systemd = FakeSystemd(tmp_path / "notify.sock")
    data = street_config(broker.port, source=str(cut_clip(clip, tmp_path / "short.avi", count=20)), loop=True, realtime=True, fps=4)
    data["models"]["person"].update(imgsz=320)
    data["mqtt"]["heartbeat_s"] = 1
    path = write_config(tmp_path, data)
    sub = subscriber_factory(broker.port, [COUNTS])
    service = Service(path, load_config(path), Notifier(str(systemd.path)), tick_s=0.1)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()

    def reload_with(changed: dict, expect_status: str) -> str:
        write_config(tmp_path, changed)
        seen = len(sub.on(COUNTS))
        mark = time.monotonic()
        service.reload_requested.set()
        assert systemd.wait_for(f"STATUS={expect_status}", 120, since=mark), systemd.lines("STATUS=", since=mark)
        assert sub.wait_for(lambda s: len(s.on(COUNTS)) > seen + 2, 60), "counts go on"
        assert thread.is_alive()
        return systemd.lines("STATUS=", since=mark)[-1]

    taken = socket.socket()
    try:
        assert systemd.wait_for("READY=1", 120)
        status = reload_with({**data, "mqtt": {**data["mqtt"], "tls": {"ca_file": "missing-ca.pem"}}}, "reload refused")
        assert status == "STATUS=reload refused: config has errors"
        assert f"mqtt.tls.ca_file: cannot read {tmp_path / 'missing-ca.pem'} (No such file or directory)" in caplog.text

        (tmp_path / "state" / "a-file").write_text("")  # a relative dataset.dir is under state_dir (the conftest's)
        broken = {**data, "escalation": {"base_url": "http://127.0.0.1:9/v1", "dataset": {"dir": "a-file/escalations"}}}
        broken["cameras"] = {"street": {**data["cameras"]["street"], "escalation": {"enabled": True}}}
        status = reload_with(broken, "reload refused: cannot build the new pipeline")
        assert "a-file/escalations" in status

        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port_taken = {**data, "metrics": {"enabled": True, "port": taken.getsockname()[1]}}
        status = reload_with(port_taken, "reload failed, previous configuration running")
        assert f"metrics.port: cannot listen on 127.0.0.1:{taken.getsockname()[1]}" in status

        reload_with(data, "running")  # and a good config still reloads
    finally:
        taken.close()
        service.stop_requested.set()
        thread.join(60)
        systemd.close()
    assert not thread.is_alive()


def test_a_broker_that_never_answers_connect_is_logged_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def accept_and_stay_silent():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    port = server.getsockname()[1]
    publisher = Publisher(MqttConfig(port=port, keepalive_s=5, client_id="silent", outbox=OutboxConfig(enabled=False)))
    publisher.start()
    try:
        deadline = time.monotonic() + 60
        while len(accepted) < 3 and time.monotonic() < deadline:  # three CONNECTs, none answered
            time.sleep(0.1)
        assert len(accepted) >= 3
    finally:
        publisher.stop()
        server.close()
        for connection in accepted:
            connection.close()
    lines = [r.getMessage() for r in caplog.records if "never answered CONNECT" in r.getMessage()]
    assert lines == [f"MQTT broker 127.0.0.1:{port} accepted the connection but never answered CONNECT "
                     f"(Keep alive timeout, keep-alive 5s): is it an MQTT broker, and does it expect TLS? Retrying"]
    assert not publisher.connected.is_set()
