"""``monitor clear-retained``: what a removed camera left on a real broker (counts, bare values of both layouts,
events/active, status, Home Assistant discovery) is emptied, exactly that and nothing of the other cameras."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
import pytest

from conftest import Broker, cut_clip, street_config, Subscriber, write_config
from monitor.cli import main
from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.pipeline import Monitor

OTHER = {  # another camera of the same monitor, and a look-alike under a longer prefix: both must stay
    "monitor/gate/counts": '{"camera":"gate","seq":1}',
    "monitor/gate/count/_total/person": "2",
    "monitor/gate/status": "offline",
    "homeassistant/sensor/monitor_gate/totals_person/config": '{"state_topic":"monitor/gate/counts"}',
    "monitor/street2/counts": '{"camera":"street2","seq":1}',
}
LEGACY = {"monitor/street/lot/person": "1", "monitor/street/totals/person": "4"}  # left by the previous release


def publish_retained(port: int, messages: dict[str, str]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for info in [client.publish(topic, payload, qos=1, retain=True) for topic, payload in messages.items()]:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def retained(port: int) -> dict[str, str]:
    """Everything the broker holds retained now (a fresh subscriber gets exactly that)."""
    sub = Subscriber(port, ["#"])
    marker = "probe/end"
    try:
        sub.wait_for(lambda s: s.client.is_connected(), 10)
        sub.client.publish(marker, "x", qos=1)
        assert sub.wait_for(lambda s: s.on(marker), 10)
        return {topic: payload for topic, payload, was_retained in sub.messages if was_retained}
    finally:
        sub.close()


@pytest.fixture(scope="module")
def left_behind(tmp_path_factory, clip, person_model):
    """A real monitor ran the street camera with discovery on and stopped: its retained topics stay on the broker."""
    folder = tmp_path_factory.mktemp("clear")
    broker = Broker(folder).start()
    segment = cut_clip(clip, folder / "segment.avi", 0, 20)
    data = street_config(broker.port, source=str(segment), realtime=True, loop=True, fps=3)
    data["home_assistant"] = {"enabled": True}
    data["models"]["person"].update(imgsz=320)
    data["state_dir"] = str(folder / "state")
    monitor = Monitor(parse_config(data), Metrics())
    sub = Subscriber(broker.port, ["monitor/#"])
    monitor.start()
    try:
        assert sub.wait_for(lambda s: s.on("monitor/street/counts") and s.on("monitor/street/count/_total/person"), 120)
    finally:
        stopper = threading.Thread(target=monitor.stop)
        stopper.start()
        stopper.join(30)
        sub.close()
    publish_retained(broker.port, {**OTHER, **LEGACY})
    yield broker, data, folder
    broker.stop()


def test_clears_exactly_the_cameras_retained_topics(left_behind, capsys):
    broker, data, folder = left_behind
    before = retained(broker.port)
    street = {t for t in before if t.startswith("monitor/street/") or "/monitor_street/" in t}
    assert {"monitor/street/counts", "monitor/street/status", "monitor/street/events/active",
            "monitor/street/count/lot/person", *LEGACY} <= street
    assert any(t.startswith("homeassistant/sensor/monitor_street/") for t in street)
    config = write_config(folder, {**data, "cameras": {"gate": data["cameras"]["street"]}}, "renamed.yaml")

    assert main(["clear-retained", "--config", str(config), "--camera", "street", "--dry-run"]) == 0
    assert retained(broker.port) == before
    assert main(["clear-retained", "--config", str(config), "--camera", "street"]) == 0
    out = capsys.readouterr().out
    assert sorted(line.removeprefix("cleared ") for line in out.splitlines() if line.startswith("cleared ")) == sorted(street)
    assert f"camera street: cleared {len(street)} retained topics" in out
    after = retained(broker.port)
    assert after == {t: p for t, p in before.items() if t not in street}
    assert OTHER.items() <= after.items()
    assert after["monitor/status"] == "offline"  # the monitor's own status is not the camera's


def test_refuses_a_camera_that_is_online(left_behind, capsys):
    broker, data, folder = left_behind
    publish_retained(broker.port, {"monitor/live/status": "online", "monitor/live/counts": "{}"})
    config = write_config(folder, data, "live.yaml")
    assert main(["clear-retained", "--config", str(config), "--camera", "live"]) == 1
    assert "camera live: not cleared: its status is online" in capsys.readouterr().err
    assert retained(broker.port)["monitor/live/counts"] == "{}"


def test_removed_clears_cameras_no_longer_in_the_config(left_behind, capsys):
    broker, data, folder = left_behind
    publish_retained(broker.port, {"monitor/old/counts": "{}", "monitor/old/count/_total/person": "1", "monitor/old/status": "offline",
                                   "monitor/live/status": "offline"})
    cameras = {name: data["cameras"]["street"] for name in ("street", "gate", "street2", "live")}
    config = write_config(folder, {**data, "cameras": cameras}, "current.yaml")
    assert main(["clear-retained", "--config", str(config), "--removed"]) == 0
    assert "camera old: cleared 3 retained topics" in capsys.readouterr().out
    after = retained(broker.port)
    assert not [t for t in after if t.startswith("monitor/old/")]
    assert "monitor/gate/counts" in after and json.loads(after["monitor/street2/counts"])["camera"] == "street2"


def test_an_unreachable_broker_exits_1(tmp_path, capsys):
    from conftest import free_port

    data = street_config(free_port())  # nothing listens there
    assert main(["clear-retained", "--config", str(write_config(tmp_path, data)), "--camera", "street"]) == 1
    assert "clear-retained: cannot connect to the MQTT broker at 127.0.0.1:" in capsys.readouterr().err
