"""Level 4, agency, with the real client: Node-RED 4 from npm (scripts/node-red.sh, cached) runs headless, takes the
shipped flow (examples/node-red/ice-reorder.json) through its admin API as a user's import would, and the monitor runs
the ice-store example on its clip against a real Mosquitto. The flow's HTTP request must reach a loopback HTTP server
exactly once per stock-low event, with the event's camera, zone, count and snapshot path; a duplicate of the start
message (what QoS 1 may deliver) must not order again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from conftest import ROOT, Broker, free_port, Subscriber, wait_for_port, write_config
from monitor.config import load_config
from monitor.pipeline import Monitor
from monitor.tools import icegen

FLOW = ROOT / "examples" / "node-red" / "ice-reorder.json"
EXAMPLE = ROOT / "examples" / "ice-store.yaml"
PREFIX = Path(os.environ.get("NODE_RED_PREFIX", Path.home() / ".cache" / "monitor-tests" / "node-red"))
OFFLINE_HINTS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "network")


@pytest.fixture(scope="session")
def node_red() -> Path:
    if not shutil.which("node"):
        pytest.fail("node is missing: run scripts/setup.sh (Debian's nodejs)")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "node-red.sh")], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "NODE_RED_PREFIX": str(PREFIX)})
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if any(hint in output for hint in OFFLINE_HINTS):
            pytest.skip(f"Node-RED cannot be installed (npm registry unreachable): {output[-300:]}")
        pytest.fail(f"scripts/node-red.sh failed:\n{output[-3000:]}")
    return PREFIX / "node_modules" / "node-red" / "red.js"


class OrderDesk:
    """The supplier's endpoint: a loopback HTTP server that records every POST body."""

    def __init__(self):
        self.orders: list[dict] = []
        desk = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                desk.orders.append({"path": self.path, "content_type": self.headers.get("Content-Type"), "body": json.loads(body)})
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/reorder"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.orders):
                return True
            time.sleep(0.1)
        return False

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class NodeRed:
    """Node-RED headless on a free loopback port with its own user dir; flows go in through the admin API."""

    def __init__(self, red_js: Path, folder: Path):
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        settings = folder / "settings.js"
        settings.write_text(
            "module.exports = {uiHost: '127.0.0.1', uiPort: %d, flowFile: 'flows.json', credentialSecret: false,\n"
            "  diagnostics: {enabled: false}, telemetry: {enabled: false}, editorTheme: {tours: false},\n"
            "  logging: {console: {level: 'info'}}};\n" % self.port
        )
        self.log_path = folder / "node-red.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(["node", str(red_js), "--userDir", str(folder), "--settings", str(settings)],
                                            stdout=log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def deploy(self, flows: list[dict]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/flows", data=json.dumps(flows).encode(), method="POST",
            headers={"Content-Type": "application/json", "Node-RED-Deployment-Type": "full"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status in (200, 204), response.status

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


def shipped_flow(mqtt_port: int, reorder_url: str) -> list[dict]:
    """The shipped flow with what a user sets after importing it: the broker's port and the re-order URL."""
    flow = json.loads(FLOW.read_text())
    for node in flow:
        if node["type"] == "mqtt-broker":
            node["port"] = str(mqtt_port)
        if node["type"] == "tab":
            next(v for v in node["env"] if v["name"] == "REORDER_URL")["value"] = reorder_url
    return flow


def example_config(folder: Path, clip: Path, mqtt_port: int) -> Path:
    """examples/ice-store.yaml on its clip against the test broker (escalation off: no model endpoint here)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data.pop("escalation")
    data.update(state_dir=str(folder / "state"))
    data["mqtt"].update(port=mqtt_port, client_id=f"ice-node-red-{mqtt_port}")
    data["metrics"].update(enabled=False)
    data["models"]["bags"].update(path=str(ROOT / "models" / "ice-bags.pt"), threads=1)
    data["cameras"]["store"].update(source=str(clip), realtime=False)
    return write_config(folder, data, "ice-store.yaml")


def publish(port: int, topic: str, payload: str) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_the_flow_orders_once_per_stock_low_event(tmp_path, node_red):
    clip = tmp_path / "ice-store.avi"
    icegen.write_clip(clip, seed=6, n_frames=300, fps=1)  # the example's own clip: stock_low starts at about 205 s
    broker = Broker(tmp_path).start()
    desk = OrderDesk()
    red = NodeRed(node_red, tmp_path / "node-red")
    events = Subscriber(broker.port, ["ice/+/events"])
    try:
        wait_for_port(red.port, timeout=60)
        red.deploy(shipped_flow(broker.port, desk.url))
        assert wait_until(lambda: "Connected to broker" in red.log, 60), red.log[-3000:]

        monitor = Monitor(load_config(example_config(tmp_path, clip, broker.port)))
        monitor.start()
        try:
            monitor.wait(threading.Event())  # the clip ends: the monitor is done
        finally:
            monitor.stop()
        starts = [e for e in events.json_on("ice/store/events") if e["type"] == "start" and e["rule"] == "stock_low"]
        assert len(starts) == 1, [(e["type"], e["rule"]) for e in events.json_on("ice/store/events")]
        assert desk.wait_for(lambda orders: len(orders) >= len(starts), 30), red.log[-3000:]

        # QoS 1 is at least once: the same start again must not order again; a new event (the probe) still orders,
        # and Node-RED handles one topic's messages in order, so once the probe's order is in, the duplicate had its turn
        publish(broker.port, "ice/store/events", json.dumps(starts[0]))
        probe = {**starts[0], "id": "store-stock_low-probe", "detail": {"count": 3, "below": 8}}
        publish(broker.port, "ice/store/events", json.dumps(probe))
        assert desk.wait_for(lambda orders: any(o["body"]["event_id"] == probe["id"] for o in orders), 30), red.log[-3000:]
    finally:
        events.close()
        red.stop()
        desk.stop()
        broker.stop()

    event = starts[0]
    assert [o["body"]["event_id"] for o in desk.orders] == [event["id"], probe["id"]]
    order = desk.orders[0]
    assert order["path"] == "/reorder" and order["content_type"].startswith("application/json")
    assert order["body"] == {"camera": "store", "zone": "storage", "count": event["detail"]["count"], "below": 8,
                             "snapshot": event["snapshot"], "event_id": event["id"], "started": event["start"]}
    assert event["detail"]["count"] < 8 and Path(event["snapshot"]).is_file()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False
