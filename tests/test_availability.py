"""Availability as Home Assistant and Node-RED read it: ``<prefix>/status`` and ``<prefix>/<camera>/status`` go
``offline`` through the broker when the process is killed (each has its own last will), and a reload is not an
outage (no ``offline`` at all, only a removed camera goes ``offline``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from conftest import cut_clip, street_config, write_config
from monitor.config import load_config
from monitor.service import Notifier, Service

PREFIX = "avail"


def two_cameras(port: int, segment, **mqtt) -> dict:
    data = street_config(port, source=str(segment), realtime=True, loop=True, fps=2)
    data["cameras"]["street"].pop("safety", None)
    data["cameras"]["yard"] = {**data["cameras"]["street"], "lines": {}}
    data["models"]["person"].update(imgsz=320)
    data["mqtt"].update(prefix=PREFIX, **mqtt)
    return data


@pytest.fixture(scope="module")
def segment(tmp_path_factory, clip):
    return cut_clip(clip, tmp_path_factory.mktemp("clip") / "segment.avi", 0, 20)


def status_log(subscriber) -> dict[str, list[str]]:
    return {topic: subscriber.on(topic) for topic in (f"{PREFIX}/status", f"{PREFIX}/street/status", f"{PREFIX}/yard/status")}


def test_sigkill_turns_every_status_offline_through_the_broker(tmp_path, broker, subscriber_factory, segment, person_model):
    data = two_cameras(broker.port, segment, bare_layout="legacy")
    path = write_config(tmp_path, data)
    sub = subscriber_factory(broker.port, [f"{PREFIX}/#"])
    log_path = tmp_path / "monitor.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(path)],
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "YOLO_OFFLINE": "1"})
    try:
        assert sub.wait_for(lambda s: s.on(f"{PREFIX}/street/counts") and s.on(f"{PREFIX}/yard/counts"), 180), log_path.read_text()[-3000:]
        assert all(values == ["online"] for values in status_log(sub).values()), status_log(sub)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert sub.wait_for(lambda s: all(v[-1:] == ["offline"] for v in status_log(s).values()), 30), status_log(sub)
    finally:
        if process.poll() is None:
            process.kill()
    assert all(values == ["online", "offline"] for values in status_log(sub).values()), status_log(sub)
    # the legacy layout, still there behind its switch, says that it goes
    assert sub.on(f"{PREFIX}/street/totals/person") and not sub.on(f"{PREFIX}/street/count/_total/person")
    assert "mqtt.bare_layout: legacy is deprecated" in log_path.read_text()


def test_a_reload_publishes_no_offline(tmp_path, broker, subscriber_factory, segment, person_model):
    data = two_cameras(broker.port, segment)
    path = write_config(tmp_path, data)
    sub = subscriber_factory(broker.port, [f"{PREFIX}/#"])
    service = Service(path, load_config(path), Notifier(""), tick_s=0.1)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert sub.wait_for(lambda s: s.on(f"{PREFIX}/street/counts") and s.on(f"{PREFIX}/yard/counts"), 180)
        # the reload removes the yard camera and adds a zone to the street
        del data["cameras"]["yard"]
        data["cameras"]["street"]["zones"]["everywhere"] = {"polygon": [[0, 0], [767, 0], [767, 575], [0, 575]]}
        write_config(tmp_path, data)
        service.reload_requested.set()
        assert sub.wait_for(lambda s: s.on(f"{PREFIX}/street/count/everywhere/person"), 180), "the reload never applied"
        assert sub.wait_for(lambda s: s.on(f"{PREFIX}/yard/status")[-1:] == ["offline"], 30)
        during = status_log(sub)
    finally:
        service.stop_requested.set()
        thread.join(60)
    assert during == {f"{PREFIX}/status": ["online"], f"{PREFIX}/street/status": ["online"], f"{PREFIX}/yard/status": ["online", "offline"]}
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/status")[-1:] == ["offline"], 10)
    assert status_log(sub) == {f"{PREFIX}/status": ["online", "offline"], f"{PREFIX}/street/status": ["online", "offline"],
                               f"{PREFIX}/yard/status": ["online", "offline"]}
