"""Shared by the operator's page tests: a real web server over a synthetic camera frame (no model needed)."""

from __future__ import annotations

import base64
import http.client
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from conftest import boxes_of, street_config
from monitor.capture import CameraReader
from monitor.config import parse_config
from monitor.counting import zone_labels
from monitor.evidence import EvidenceStore
from monitor.frame import CapturedFrame, FrameResult
from monitor.metrics import Metrics
from monitor.publishing.message import Message
from monitor.publishing.publisher import Publisher
from monitor.publishing.topics import CountsTopics
from monitor.web import Recorder, build_web

TOKEN = "4f1c2b9e7d3a48c6a0e5b1d2c3f4a5b6"
SOURCE = "rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/102?user=admin&pwd=hunter2"
EVENT_ID = "street-lot_intrusion-0123456789"


def web_config(tmp_path: Path, **web) -> dict:
    """The bundled config with the page on (a free port), evidence under tmp_path and a camera URL with credentials."""
    data = street_config(1883)
    data["web"] = {"enabled": True, "port": 0, **web}
    data["state_dir"] = str(tmp_path / "state")
    data["evidence"] = {"dir": str(tmp_path / "evidence")}
    data["cameras"]["street"]["source"] = SOURCE
    return data


def synthetic_result(index: int = 7) -> FrameResult:
    """A grey 768x576 frame with two people: one standing at (120, 400), one at (515, 230)."""
    frame = CapturedFrame("street", index, np.full((576, 768, 3), 90, np.uint8), time.time(), time.monotonic())
    objects = boxes_of([([100, 300, 140, 400], 0.9, 0, 3), ([500, 150, 530, 230], 0.7, 1, 4)])
    result = FrameResult(frame, ["person", "person"], detections=objects, objects=objects)
    result.counts = {"lot": {"person": 1}, "path": {"person": 0}, "lawn": {"person": 1}, "_all": {"person": 2}}
    return result


def event_payload(snapshot: Path) -> dict:
    return {"type": "start", "id": EVENT_ID, "rule": "lot_intrusion", "kind": "intrusion", "zone": "lot",
            "status": "active", "verdict": "auto", "start": "2026-11-23T17:02:11.415Z", "duration_s": 1.0,
            "snapshot": str(snapshot), "reviews": []}


class Page:
    """A real web server over a synthetic camera loop; its recorder fed through a real (unstarted) Publisher."""

    def __init__(self, tmp_path: Path, data: dict | None = None, **web):
        self.config = parse_config(data or web_config(tmp_path, **web))
        camera = self.config.cameras["street"]
        self.result = synthetic_result()
        self.loop = SimpleNamespace(
            reader=CameraReader("street", camera), zone_labels=zone_labels(camera, ["person"]), last_result=self.result
        )
        self.recorder = Recorder(self.config.mqtt.prefix, ["street"])
        self.publisher = Publisher(self.config.mqtt, tap=self.recorder)  # never started: no broker needed
        self.evidence = EvidenceStore(self.config.evidence)
        self.evidence_bytes = self.evidence.save(EVENT_ID, np.full((576, 768, 3), 200, np.uint8)).read_bytes()
        self.server = build_web(self.config, {"street": self.loop}, Metrics(), self.recorder, self.evidence)

    def publish_counts_and_an_event(self) -> dict:
        """The counts of the synthetic frame and an active intrusion, through the publisher; the counts payload."""
        messages = CountsTopics(self.config.mqtt, "street").messages(self.result)
        event = event_payload(self.evidence.dir / f"{EVENT_ID}.jpg")
        self.publisher.publish_all(messages + [
            Message("monitor/street/events", json.dumps(event), 1, False),
            Message("monitor/street/events/active", json.dumps({"camera": "street", "count": 1, "events": [event]}), 1, True),
        ])
        return json.loads(messages[0].payload)

    def __enter__(self) -> Page:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self.publisher.outbox.close()

    def request(self, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        connection.putrequest(method, path, skip_host="Host" in (headers or {}))
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, response.headers, body


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"operator:{password}".encode()).decode()
