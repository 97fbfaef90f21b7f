"""The page's HTTP server, for real on loopback (a synthetic frame stands in for the camera): the token off
loopback, loopback Host names only without one, read-only, evidence only from the store, no secret in any answer,
bounded clients, and the status codes of what it serves."""

from __future__ import annotations

import json
import socket

import cv2
import numpy as np
import pytest

from conftest import wait_until
from monitor.web.server import MAX_CLIENTS, host_name
from web_support import EVENT_ID, TOKEN, Page, basic, web_config

PATHS = ("/", "/static/app.js", "/static/style.css", "/api/cameras", "/api/counts", "/api/events", "/api/escalations",
         "/api/cameras/street/frame", "/camera/street.jpg")


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
    wrong = ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": basic("wrong")},
             {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": "Basic !!!"}, {"Authorization": f"Token {TOKEN}"})
    for path in (*PATHS, f"/evidence/{EVENT_ID}.jpg"):
        for headers in wrong:
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
    assert [host_name(h) for h in ("127.0.0.1:8099", "LocalHost", "[::1]:80", "::1", None)] == [
        "127.0.0.1", "localhost", "::1", "::1", None
    ]


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


def test_no_secret_or_camera_credential_in_any_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("WEB_TEST_PASSWORD", "hunter2-mqtt")
    data = web_config(tmp_path)
    data["mqtt"].update(username="monitor", password={"env": "WEB_TEST_PASSWORD"})
    data["escalation"] = {"base_url": "http://127.0.0.1:9/v1", "api_key": {"env": "WEB_TEST_PASSWORD"}}
    with Page(tmp_path, data) as page:
        page.publish_counts_and_an_event()
        answers = [page.request(path)[2] for path in PATHS]
    assert not [a for a in answers if b"hunter2" in a or b"admin" in a]
    camera = json.loads(answers[3])["cameras"][0]
    assert camera["source"] == "rtsp://***@10.0.0.5:554/Streaming/Channels/102"


def test_clients_are_bounded_and_slow_ones_do_not_hold_the_page(tmp_path):
    with Page(tmp_path) as page:
        idle = [socket.create_connection(("127.0.0.1", page.server.port)) for _ in range(MAX_CLIENTS)]
        try:
            for connection in idle:  # each holds a handler thread, waiting for its request line
                connection.settimeout(0.05)
                with pytest.raises(socket.timeout):
                    connection.recv(1)
            assert page.request("/api/cameras")[0] == 503
        finally:
            for connection in idle:
                connection.close()
        assert wait_until(lambda: page.request("/api/cameras")[0] == 200, 20), "the slots never came back"


def test_frames_are_served_as_jpeg_while_kept(tmp_path):
    with Page(tmp_path) as page:
        for query in ("", "?frame=7", "?frame=7&plain=1"):
            status, headers, body = page.request(f"/camera/street.jpg{query}")
            image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            assert status == 200 and headers["Content-Type"] == "image/jpeg" and image.shape == (576, 768, 3)
        assert page.request("/camera/street.jpg?frame=6")[0] == 404  # not a frame the page showed
        page.loop.last_result = None
        assert page.request("/camera/street.jpg")[0] == 503 and page.request("/api/cameras/street/frame")[0] == 503
