"""The operator's page without a browser: its configuration, the real HTTP server's guards (token, Host, methods,
evidence, bounded clients), the recorder's bounds and the JSON answers. A synthetic frame stands in for the
camera loop here; tests/test_web_browser.py runs the whole page on the real monitor and clip."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import ROOT, street_config, write_config
from monitor.capture import CameraReader
from monitor.config import ConfigError, parse_config
from monitor.counting import zone_labels
from monitor.evidence import EvidenceStore
from monitor.frame import Boxes, CapturedFrame, FrameResult
from monitor.geometry import anchor_points
from monitor.metrics import Metrics
from monitor.publishing.message import Message
from monitor.publishing.publisher import Publisher
from monitor.publishing.topics import CountsTopics
from monitor.web import Recorder, build_web
from monitor.web.api import RateMeter
from monitor.web.recorder import KEEP_ESCALATIONS, KEEP_EVENTS
from monitor.web.server import MAX_CLIENTS

TOKEN = "4f1c2b9e7d3a48c6a0e5b1d2c3f4a5b6"
SOURCE = "rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/102?user=admin&pwd=hunter2"
EVENT_ID = "street-lot_intrusion-0123456789"


def web_config(tmp_path: Path, **web) -> dict:
    data = street_config(1883)
    data["web"] = {"enabled": True, "port": 0, **web}
    data["state_dir"] = str(tmp_path / "state")
    data["evidence"] = {"dir": str(tmp_path / "evidence")}
    data["cameras"]["street"]["source"] = SOURCE
    return data


def synthetic_result(index: int = 7) -> FrameResult:
    image = np.full((576, 768, 3), 90, np.uint8)
    frame = CapturedFrame("street", index, image, time.time(), time.monotonic())
    objects = Boxes(
        np.array([[100, 300, 140, 400], [500, 150, 530, 230]], np.float32),
        np.array([0.9, 0.7], np.float32), np.array([0, 1], np.int32), np.array([3, 4], np.int64),
    )
    result = FrameResult(frame, ["person", "person"], detections=objects, objects=objects)
    result.counts = {"lot": {"person": 1}, "path": {"person": 0}, "lawn": {"person": 1}, "_all": {"person": 2}}
    return result


class Page:
    """A real web server over a synthetic camera loop, a real recorder fed through a real Publisher."""

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
        self.evidence_bytes = self.evidence_jpeg()
        self.server = build_web(self.config, {"street": self.loop}, Metrics(), self.recorder, self.evidence)

    def evidence_jpeg(self) -> bytes:
        path = self.evidence.save(EVENT_ID, np.full((576, 768, 3), 200, np.uint8))
        return path.read_bytes()

    def publish_counts_and_an_event(self) -> dict:
        messages = CountsTopics(self.config.mqtt, "street").messages(self.result)
        event = {"type": "start", "id": EVENT_ID, "rule": "lot_intrusion", "kind": "intrusion", "zone": "lot",
                 "status": "active", "verdict": "auto", "start": "2026-11-23T17:02:11.415Z", "duration_s": 1.0,
                 "snapshot": str(self.evidence.dir / f"{EVENT_ID}.jpg"), "reviews": []}
        active = {"camera": "street", "count": 1, "events": [event]}
        self.publisher.publish_all(messages + [
            Message("monitor/street/events", json.dumps(event), 1, False),
            Message("monitor/street/events/active", json.dumps(active), 1, True),
        ])
        return json.loads(messages[0].payload)

    def __enter__(self) -> Page:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self.publisher.outbox.close()

    def request(self, path: str, method: str = "GET", headers: dict | None = None, host: str = "127.0.0.1"):
        connection = http.client.HTTPConnection(host, self.server.port, timeout=10)
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


# --- configuration ---------------------------------------------------------------------------------------


def test_the_page_is_off_by_default_and_on_loopback_when_on():
    config = parse_config({"models": street_config(1883)["models"], "cameras": street_config(1883)["cameras"]})
    assert config.web.enabled is False and config.web.host == "127.0.0.1" and config.web.token is None


def test_live_view_is_still_read_as_the_old_name_of_web(tmp_path, caplog):
    data = street_config(1883)
    del data["web"]
    data["live_view"] = {"enabled": True, "port": 8123, "refresh_s": 1}
    with caplog.at_level(logging.WARNING, logger="monitor"):
        config = parse_config(data)
    assert config.web.enabled and config.web.port == 8123 and config.web.refresh_s == 1
    assert "live_view: deprecated name of the web section; rename it to web" in caplog.text
    data["live_view"]["port"] = 70000
    with pytest.raises(ConfigError, match=r"live_view\.port: Input should be less than or equal to 65535"):
        parse_config(data)
    data["web"] = {"enabled": False}
    with pytest.raises(ConfigError, match="live_view: the old name of web: give only web"):
        parse_config(data)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "monitor.local"])
def test_a_non_loopback_bind_without_a_token_is_refused(tmp_path, host):
    with pytest.raises(ConfigError) as error:
        parse_config(web_config(tmp_path, host=host))
    assert error.value.problems == [
        f"web: host {host} is not a loopback address: give token ({{file: web-token}}) or bind 127.0.0.1"
    ]
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert parse_config(web_config(tmp_path, host=loopback)).web.host == loopback


def test_monitor_check_refuses_a_non_loopback_bind_without_a_token(tmp_path):
    import subprocess
    import sys

    path = write_config(tmp_path, web_config(tmp_path, host="0.0.0.0"))
    checked = subprocess.run(
        [sys.executable, "-m", "monitor", "check", "--no-models", "--config", str(path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert checked.returncode == 2
    assert "web: host 0.0.0.0 is not a loopback address" in checked.stderr


def test_token_problems_name_web_token(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "short").write_text("abc\n")
    for token, expected in (
        ({"file": "short"}, "web.token: 3 characters; use at least 16 (openssl rand -hex 16)"),
        ({"file": "missing"}, f"web.token: cannot read secret file {tmp_path / 'missing'}: No such file or directory"),
        ({"env": "NO_SUCH_WEB_TOKEN"}, "web.token: environment variable NO_SUCH_WEB_TOKEN is not set"),
    ):
        config = parse_config(web_config(tmp_path, host="0.0.0.0", token=token))
        with pytest.raises(ConfigError) as error:
            config.web.reveal_token()
        assert error.value.problems == [expected]


# --- the server's guards -------------------------------------------------------------------------------


@pytest.fixture
def token_page(tmp_path, monkeypatch):
    """Bound to every address, with the token from a credential file (as systemd's LoadCredential= gives it)."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "web-token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    with Page(tmp_path, host="0.0.0.0", token={"file": "web-token"}) as page:
        yield page


def test_off_loopback_every_request_needs_the_token(token_page):
    for path in ("/", "/static/app.js", "/api/cameras", "/camera/street.jpg", f"/evidence/{EVENT_ID}.jpg"):
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": basic("wrong")},
                        {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": "Basic !!!"},
                        {"Authorization": f"Token {TOKEN}"}):
            status, response_headers, body = token_page.request(path, headers=headers)
            assert status == 401, (path, headers)
            assert response_headers["WWW-Authenticate"].startswith("Basic realm=")
            assert body == b"token required\n"
        assert token_page.request(path, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200, path
        assert token_page.request(path, headers={"Authorization": basic(TOKEN)})[0] == 200, path


def test_on_loopback_only_loopback_host_names_are_answered(tmp_path):
    with Page(tmp_path) as page:
        assert page.request("/api/cameras", headers={"Host": f"evil.example:{page.server.port}"})[0] == 403
        assert page.request("/api/cameras", headers={"Host": "10.0.0.9"})[0] == 403
        for host in (f"127.0.0.1:{page.server.port}", f"localhost:{page.server.port}", "[::1]:8099"):
            assert page.request("/api/cameras", headers={"Host": host})[0] == 200, host


def test_the_page_is_read_only_and_answers_only_what_it_serves(tmp_path):
    with Page(tmp_path) as page:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            assert page.request("/api/cameras", method=method)[0] == 501, method
        status, headers, _ = page.request("/api/cameras", method="HEAD")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert "default-src 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
        for path in ("/etc/passwd", "/api", "/api/cameras/dock/frame", "/camera/dock.jpg", "/static/../server.py",
                     "/static/server.py", "/monitor/web/server.py"):
            assert page.request(path)[0] == 404, path
        assert page.request("/camera/street.jpg?frame=abc")[0] == 400


def test_evidence_comes_only_from_the_store_by_event_id(tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"\xff\xd8 not for the page")
    with Page(tmp_path) as page:
        status, headers, body = page.request(f"/evidence/{EVENT_ID}.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == page.evidence_bytes
        (page.evidence.dir / "link.jpg").symlink_to(outside)
        (page.evidence.dir / "dropped-in-later.jpg").write_bytes(b"\xff\xd8 not written by the store")
        for path in ("/evidence/../secret.jpg", "/evidence/..%2Fsecret.jpg", "/evidence/%2e%2e%2fsecret.jpg",
                     "/evidence/..%2f..%2fsecret.jpg", f"/evidence/{tmp_path}/secret.jpg", "/evidence/link.jpg",
                     "/evidence/dropped-in-later.jpg", "/evidence/secret", f"/evidence/{EVENT_ID}.jpg.part"):
            status, _, body = page.request(path)
            assert status == 404 and b"not for the page" not in body, path
    assert EvidenceStore(page.config.evidence).read("link") is None  # a fresh scan finds the link: never followed


def test_no_secret_or_camera_credential_in_any_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("WEB_TEST_PASSWORD", "hunter2-mqtt")
    data = web_config(tmp_path)
    data["mqtt"].update(username="monitor", password={"env": "WEB_TEST_PASSWORD"})
    data["escalation"] = {"base_url": "http://127.0.0.1:9/v1", "api_key": {"env": "WEB_TEST_PASSWORD"}}
    with Page(tmp_path, data) as page:
        page.publish_counts_and_an_event()
        answers = [page.request(path)[2] for path in ("/", "/static/app.js", "/api/cameras", "/api/counts",
                                                      "/api/events", "/api/escalations", "/api/cameras/street/frame")]
    assert not [a for a in answers if b"hunter2" in a or b"admin" in a]
    camera = json.loads(answers[2])["cameras"][0]
    assert camera["source"] == "rtsp://***@10.0.0.5:554/Streaming/Channels/102"


def test_clients_are_bounded_and_slow_ones_do_not_hold_the_page(tmp_path):
    with Page(tmp_path) as page:
        idle = [socket.create_connection(("127.0.0.1", page.server.port)) for _ in range(MAX_CLIENTS)]
        try:
            for connection in idle:  # each holds a handler thread, waiting for a request line
                connection.settimeout(0.05)
                with pytest.raises(socket.timeout):
                    connection.recv(1)
            assert page.request("/api/cameras")[0] == 503
        finally:
            for connection in idle:
                connection.close()
        deadline = time.monotonic() + 20
        while page.request("/api/cameras")[0] != 200:
            assert time.monotonic() < deadline, "the slots never came back"
            time.sleep(0.05)


# --- what the answers hold -----------------------------------------------------------------------------


def test_the_answers_are_what_the_publisher_was_given(tmp_path):
    with Page(tmp_path) as page:
        counts = page.publish_counts_and_an_event()
        assert json.loads(page.request("/api/counts")[2]) == {"street": counts}
        camera = json.loads(page.request("/api/cameras")[2])["cameras"][0]
        assert camera["counts"] == counts and camera["count_source"] == "detector" and camera["active_events"] == 1
        assert camera["state"] == "connecting" and camera["frame"] == 7 and camera["image"] == "camera/street.jpg?frame=7"
        events = json.loads(page.request("/api/events")[2])["cameras"]["street"]
        assert [e["id"] for e in events["active"]] == [EVENT_ID] and events["recent"] == []
        assert events["active"][0]["snapshot"] == f"evidence/{EVENT_ID}.jpg"  # a link, not the server's path
        assert json.loads(page.request("/api/escalations")[2]) == {"budget": None, "escalations": []}


def test_frames_are_served_as_jpeg_and_the_editor_gets_the_daemons_anchor_points(tmp_path):
    with Page(tmp_path) as page:
        for query in ("", "?frame=7", "?frame=7&plain=1"):
            status, headers, body = page.request(f"/camera/street.jpg{query}")
            image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            assert status == 200 and headers["Content-Type"] == "image/jpeg" and image.shape == (576, 768, 3)
        annotated, plain = page.request("/camera/street.jpg?frame=7")[2], page.request("/camera/street.jpg?frame=7&plain=1")[2]
        assert annotated != plain
        assert page.request("/camera/street.jpg?frame=6")[0] == 404  # not a frame the page showed
        editor = json.loads(page.request("/api/cameras/street/frame")[2])
        expected = anchor_points(page.result.objects.xyxy, "bottom_center").tolist()
        assert [o["anchor"] for o in editor["objects"]] == expected == [[120.0, 400.0], [515.0, 230.0]]
        assert editor["zones"]["lot"][0] == [0, 150] and editor["lines"]["crossing"] == [[380, 200], [420, 420]]
        assert (editor["frame"], editor["width"], editor["height"], editor["labels"]) == (7, 768, 576, ["person"])


def test_the_recorder_keeps_a_bounded_recent_history():
    recorder = Recorder("site/a", ["street"])
    for i in range(KEEP_EVENTS + 30):
        recorder.message(Message("site/a/street/events", json.dumps({"id": f"e{i}", "type": "start"}), 1, False))
    for i in range(KEEP_ESCALATIONS + 30):
        recorder.message(Message("site/a/street/escalations", json.dumps({"frame": i}), 1, False))
    recorder.message(Message("site/a/street/events", json.dumps({"id": "e40", "type": "end"}), 1, False))
    recorder.message(Message("site/a/street/counts", "not json", 1, True))
    recorder.message(Message("site/a/street/lot/person", "3", 1, True))
    view = recorder.view("street")
    assert len(view.events) == KEEP_EVENTS and len(view.escalations) == KEEP_ESCALATIONS
    assert view.events[0] == {"id": "e40", "type": "end"} and view.events[-1]["id"] == "e30"
    assert view.escalations[0] == {"frame": KEEP_ESCALATIONS + 29} and view.counts is None


def test_the_rate_meter_reports_per_second_over_its_window():
    clock, counter = [100.0], [0.0]
    meter = RateMeter(lambda: counter[0], window_s=10.0, clock=lambda: clock[0])
    assert meter.rate() is None
    for _ in range(8):
        clock[0] += 1.0
        counter[0] += 5
    assert meter.rate() == pytest.approx(5.0)
    clock[0] += 60.0  # nobody asked for a minute: the old sample is out of the window
    assert meter.rate() is None
