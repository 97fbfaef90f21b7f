"""The operator's page in a real browser: Debian's headless Chromium driven by Playwright, against a real monitor
on the street clip (real YOLO, real Mosquitto, a real OpenAI-compatible server on loopback for escalations).

One monitor run is shared by every test here: the intrusion segment of the clip (tests/test_safety_clip.py: a man
on the kerbside strip, watched by a ``kerb_intrusion`` rule) played once, every frame processed. The page is opened while it runs (the overview must update without a
reload); the other checks look at the final state, which then stays put.

Screenshots of the overview, the events, the escalations and the zone editor go to a temporary folder on every run; with
``UPDATE_SCREENSHOTS=1`` they also replace the committed ones in ``docs/`` (shown in the README).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml

from conftest import ROOT, Broker, Subscriber, add_kerb_intrusion, cut_clip, free_port, street_config, wait_until, write_config
from fake_openai import Answer, FakeOpenAI
from monitor.annotate import zone_colour
from monitor.common import ALL_ZONES
from monitor.config import load_config
from monitor.counting import raw_counts, zone_labels
from monitor.geometry import anchor_points, points_in_polygon
from monitor.pipeline import Monitor
from monitor.tracking import ZoneMap

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [  # Debian's build, as root, on a machine without internet: no sandbox, no background traffic
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SEGMENT = (575, 680)  # clip frames: a man walks along the kerbside strip; the jacket lies on the lawn
LLM_KEY = "sk-test-5e3a41f0c9b24d7e"
MODEL_NOTE = "a person-shaped object lies on the lawn"
SHOTS = ROOT / "docs"
WAIT_S = 120
VIEWPORT = {"width": 1280, "height": 860}


def monitor_config(workdir: Path, clip: Path, broker: Broker, server: FakeOpenAI, web_port: int) -> dict:
    segment = cut_clip(clip, workdir / "street-segment.avi", SEGMENT[0], SEGMENT[1] - SEGMENT[0])
    data = street_config(broker.port, source=str(segment))
    add_kerb_intrusion(data)
    data["web"] = {"enabled": True, "port": web_port, "refresh_s": 0.5}
    data["state_dir"] = str(workdir / "state")
    data["evidence"] = {"dir": str(workdir / "evidence"), "max_mb": 50}
    next(r for r in data["cameras"]["street"]["safety"] if r["name"] == "person_down")["unreviewed_after_s"] = 4
    data["escalation"] = {
        "base_url": server.base_url, "model": "test-vision", "api_key": {"env": "TEST_WEB_LLM_KEY"}, "timeout_s": 10,
        "max_retries": 1, "price_input_per_1m": 0.0, "price_output_per_1m": 0.0, "price_per_image": 0.01, "daily_budget": 1.0,
    }
    data["cameras"]["street"]["escalation"] = {
        "max_per_hour": 5, "audit_every_s": None,
        "thresholds": {"grey_classes": ["Fall"], "stretch_s": 1.0, "cooldown_s": 600},
    }
    return data


@pytest.fixture(scope="module")
def site(tmp_path_factory, clip, person_model):
    workdir = tmp_path_factory.mktemp("web")
    os.environ["TEST_WEB_LLM_KEY"] = LLM_KEY
    broker = Broker(workdir).start()
    answer = Answer(totals={"person": 5}, zones={"path": {"person": 4}, "lawn": {"person": 1}}, events_real=True, note=MODEL_NOTE)
    server = FakeOpenAI(api_key=LLM_KEY, default=answer).start()
    subscriber = Subscriber(broker.port, ["monitor/street/#"])
    data = monitor_config(workdir, clip, broker, server, free_port())
    config_path = write_config(workdir, data)
    monitor = Monitor(load_config(config_path))
    base = f"http://127.0.0.1:{data['web']['port']}/"
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        try:
            monitor.start()
            frames_seen = watch_the_overview(page, base, monitor)
            monitor.wait(threading.Event())
            final_seq = monitor.loops["street"].topics.sequence.current()[1]
            assert wait_until(lambda: any(c["seq"] == final_seq for c in subscriber.json_on("monitor/street/counts")), WAIT_S), "the last counts"
            shots = tmp_path_factory.mktemp("screenshots")
            yield SimpleNamespace(
                base=base, page=page, monitor=monitor, subscriber=subscriber, server=server, data=data, workdir=workdir,
                frames_seen=frames_seen, requests=requests, shots=shots,
            )
        finally:
            browser.close()
            monitor.stop()
            subscriber.close()
            server.stop()
            broker.stop()
            os.environ.pop("TEST_WEB_LLM_KEY", None)


def watch_the_overview(page, base: str, monitor: Monitor) -> list[str]:
    """Open the page while the clip plays; the frame numbers its image showed, in order (no reload in between)."""
    page.goto(base)
    page.evaluate("window.sameDocument = true")
    seen: list[str] = []
    image = page.locator('.camera[data-camera="street"] img.frame')

    def three_frames_shown() -> bool:
        frame = image.get_attribute("data-frame")
        if frame and (not seen or seen[-1] != frame):
            seen.append(frame)
        return len(seen) >= 3 or monitor.loops["street"].finished

    assert wait_until(three_frames_shown, WAIT_S), "the overview to show new frames"
    assert page.evaluate("window.sameDocument") is True
    return seen


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def screenshot(site, name: str) -> None:
    """Into the run's temporary folder; also into docs/ (small, 128-colour PNG) when UPDATE_SCREENSHOTS=1."""
    from PIL import Image

    path = site.shots / f"web-{name}.png"
    site.page.set_viewport_size({"width": 1280, "height": 300})  # full_page: as tall as the content, no more
    site.page.screenshot(path=str(path), full_page=True)
    site.page.set_viewport_size(VIEWPORT)
    small = Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(exist_ok=True)
        shutil.copyfile(path, SHOTS / path.name)


# --- overview ------------------------------------------------------------------------------------------------


def test_the_overview_updates_without_reloading(site):
    print(f"frames the overview showed while the clip played: {site.frames_seen}")
    assert len(site.frames_seen) >= 3, site.frames_seen
    assert [int(f) for f in site.frames_seen] == sorted(int(f) for f in site.frames_seen)
    assert site.page.evaluate("window.sameDocument") is True


def test_the_overview_shows_the_last_counts_mqtt_carried(site):
    page = site.page
    page.goto(site.base + "#overview")
    page.evaluate("window.sameDocument = true")
    last = max(site.subscriber.json_on("monitor/street/counts"), key=lambda c: c["seq"])
    card = page.locator('.camera[data-camera="street"]')
    assert wait_until(lambda: card.get_attribute("data-seq") == str(last["seq"]), WAIT_S), "the page to show the last seq"
    shown = {}
    for cell in card.locator("td[data-zone]").all():
        shown.setdefault(cell.get_attribute("data-zone"), {})[cell.get_attribute("data-label")] = int(cell.inner_text())
    assert shown == {**last["zones"], ALL_ZONES: last["totals"]}
    fact = lambda key: card.locator(f'[data-fact="{key}"]').inner_text()  # noqa: E731
    assert fact("ts") == last["ts"] and fact("seq") == str(last["seq"])
    assert fact("source") == last["source"] == "detector"
    assert fact("state") == "ended"  # the segment was played once
    assert fact("fps").endswith("fps"), fact("fps")
    crossing = last["lines"]["crossing"]
    assert card.locator('[data-line="crossing"]').inner_text() == f"line crossing: in {crossing['in']}, out {crossing['out']}"
    image = card.locator("img.frame")
    assert image.evaluate("img => img.naturalWidth") == 768
    drawn = cv2.imdecode(np.frombuffer(get(image.evaluate("img => img.src")), np.uint8), cv2.IMREAD_COLOR)
    # the annotated frame: the lawn's outline runs from (768, 495) to (330, 290), drawn in the lawn's colour
    patch = drawn[391:394, 548:551].astype(int)
    assert np.abs(patch - np.array(zone_colour("lawn"))).max(axis=2).min() < 60
    screenshot(site, "overview")


def test_the_api_answers_are_what_mqtt_carried(site):
    counts = json.loads(get(site.base + "api/counts"))
    last = max(site.subscriber.json_on("monitor/street/counts"), key=lambda c: c["seq"])
    assert counts == {"street": last}
    cameras = json.loads(get(site.base + "api/cameras"))["cameras"]
    assert [c["name"] for c in cameras] == ["street"] and cameras[0]["counts"] == last
    assert cameras[0]["state"] == "ended" and cameras[0]["resolution"] == [768, 576]


# --- events and escalations ----------------------------------------------------------------------------------


def mqtt_events(site, rule: str) -> list[dict]:
    return [e for e in site.subscriber.json_on("monitor/street/events") if e["rule"] == rule]


def test_the_intrusion_on_the_clip_is_listed_with_its_snapshot(site):
    starts = [e for e in mqtt_events(site, "kerb_intrusion") if e["type"] == "start"]
    assert len(starts) == 1, mqtt_events(site, "kerb_intrusion")
    event_id = starts[0]["id"]
    page = site.page
    page.goto(site.base + "#events")
    row = page.locator(f'tr[data-event="{event_id}"]')
    row.wait_for()
    cells = [cell.inner_text() for cell in row.locator(":scope > td").all()]
    end = next(e for e in mqtt_events(site, "kerb_intrusion") if e["type"] == "end")
    assert cells[1].split("\n")[0] == "kerb_intrusion" and cells[2] == "kerb" and cells[3] == end["start"]
    assert float(cells[4].removesuffix(" s")) == pytest.approx(end["duration_s"], abs=0.051)
    assert cells[5] == end["verdict"] and cells[6] == end["end_reason"]
    snapshot = row.locator("img.evidence")
    assert wait_until(lambda: snapshot.evaluate("img => img.complete && img.naturalWidth"), WAIT_S), "the snapshot to load"
    assert snapshot.evaluate("img => img.naturalWidth") == 768
    served = get(site.base + snapshot.get_attribute("src"))
    assert served == (site.workdir / "evidence" / f"{event_id}.jpg").read_bytes()
    assert served == Path(starts[0]["snapshot"]).read_bytes()


def test_the_model_review_is_shown_on_its_event(site):
    escalations = site.subscriber.json_on("monitor/street/escalations")
    reviewed = [(e, v) for e in escalations for v in e["events"] if v["rule"] == "person_down"]
    assert reviewed, escalations
    escalation, verdict = reviewed[0]
    row = site.page.locator(f'tr[data-event="{verdict["id"]}"]')
    site.page.goto(site.base + "#events")
    row.wait_for()
    assert row.locator("td.verdict").inner_text() == "confirmed"
    review = row.locator("li.review").first.inner_text()
    assert MODEL_NOTE in review and "real (test-vision)" in review
    assert f"latency {escalation['latency_s']:.1f} s" in review and f"cost {escalation['cost_estimated']:.4f}" in review
    screenshot(site, "events")


def test_the_escalations_list_and_the_days_cost(site):
    escalations = site.subscriber.json_on("monitor/street/escalations")
    page = site.page
    page.goto(site.base + "#escalations")
    rows = page.locator("#escalation-table tbody tr[data-camera]")
    assert wait_until(lambda: rows.count() == len(escalations), WAIT_S), "every escalation listed"
    spent = sum(e["cost_estimated"] for e in escalations)
    assert page.locator("#budget").inner_text() == (
        f"Cost today {spent:.4f} of a daily budget of 1.0000 ({1.0 - spent:.4f} left)"
    )
    first = rows.first.locator("table.side tr").first.locator("td").all_inner_texts()
    newest = max(escalations, key=lambda e: e["ts"])
    assert first == [f"person={newest['detector']['totals']['person']}", "person=5"]
    assert site.server.problems == []
    screenshot(site, "escalations")


# --- zone editor -----------------------------------------------------------------------------------------


def corners_around_some_people(result) -> list[tuple[int, int]]:
    """A rectangle (image pixels) holding the anchors of the left half of the counted people, and nobody else."""
    anchors = anchor_points(result.objects.xyxy, "bottom_center")
    xs = np.sort(anchors[:, 0])
    assert len(xs) >= 2, "the last frame should show at least two people"
    split = int((xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2)
    top, bottom = int(anchors[:, 1].min()) - 20, int(anchors[:, 1].max()) + 20
    return [(5, max(top, 5)), (split, max(top, 5)), (split, min(bottom, 570)), (5, min(bottom, 570))]


def on_screen(page, x: float, y: float) -> tuple[float, float]:
    """Where image pixel (x, y) of the 768x576 frame is on the page."""
    box = page.locator("#editor-svg").bounding_box()
    return box["x"] + x * box["width"] / 768, box["y"] + y * box["height"] / 576


def daemon_zone_count(site, config_path: Path, zone: str, result) -> int:
    """The zone's count for this frame's objects by the daemon's own code, with the pasted config."""
    camera = load_config(config_path).cameras["street"]
    labels = [result.labels[c] for c in result.objects.class_id.tolist()]
    zones = ZoneMap(camera).assign(result.objects, labels)
    counted = zone_labels(camera, site.monitor.detectors["person"].label_set)
    return sum(raw_counts(result.objects, zones, labels, counted)[zone].values())


def test_the_editor_uses_the_daemons_point_in_polygon_rule(site):
    site.page.goto(site.base + "#zones")
    points = np.random.default_rng(0).uniform((0, 0), (768, 576), (1000, 2)).round(1)
    for zone in site.data["cameras"]["street"]["zones"].values():  # concave outlines among them
        polygon = np.array(zone["polygon"], float)
        tested = np.vstack([points, polygon, (polygon + np.roll(polygon, -1, axis=0)) / 2])  # corners, edge middles
        in_page = site.page.evaluate("([points, polygon]) => points.map((p) => inside(p, polygon))", [tested.tolist(), polygon.tolist()])
        assert in_page == points_in_polygon(tested, polygon).tolist()


def test_a_zone_clicked_on_the_frame_gives_a_snippet_that_checks_and_counts_the_same(site):
    result = site.monitor.loops["street"].last_result  # the stream ended: this is the frame the editor gets
    page = site.page
    page.goto(site.base + "#zones")
    assert wait_until(lambda: page.locator("#editor-frame").get_attribute("data-frame") == str(result.frame.index), WAIT_S), "the editor's frame"
    page.fill("#editor-name", "queue")
    corners = corners_around_some_people(result)
    for corner in corners:
        page.mouse.click(*on_screen(page, *corner))
    snippet = page.locator("#editor-yaml").inner_text()
    zone = yaml.safe_load(snippet)
    assert zone == {"queue": {"polygon": [list(corner) for corner in corners]}}, snippet
    shown = int(page.locator("#editor-count").get_attribute("data-count"))
    assert page.locator("#editor-problems li").count() == 0
    screenshot(site, "zone-editor")

    # move a corner by dragging it: the snippet follows
    x0, y0 = corners[0]
    page.mouse.move(*on_screen(page, x0, y0))
    page.mouse.down()
    page.mouse.move(*on_screen(page, x0 + 10, y0 + 15), steps=4)
    page.mouse.up()
    moved = yaml.safe_load(page.locator("#editor-yaml").inner_text())["queue"]["polygon"]
    assert moved[0] == [x0 + 10, y0 + 15] and moved[1:] == [list(c) for c in corners[1:]]
    shown_after_move = int(page.locator("#editor-count").get_attribute("data-count"))

    # and a counting line
    page.select_option("#editor-kind", "line")
    page.locator("#editor-clear").click()
    page.fill("#editor-name", "queue_line")
    for point in [(100, 300), (600, 250)]:
        page.mouse.click(*on_screen(page, *point))
    line = yaml.safe_load(page.locator("#editor-yaml").inner_text())
    assert line == {"queue_line": {"points": [[100, 300], [600, 250]]}}

    # pasted into the config, both pass `monitor check` and the zone counts what the page showed
    for polygon, expected in ((zone["queue"]["polygon"], shown), (moved, shown_after_move)):
        pasted = json.loads(json.dumps(site.data))
        pasted["cameras"]["street"]["zones"]["queue"] = {"polygon": polygon}
        pasted["cameras"]["street"]["lines"].update(line)
        config_path = write_config(site.workdir, pasted, name="pasted.yaml")
        assert daemon_zone_count(site, config_path, "queue", result) == expected
    print(f"zone editor: frame {result.frame.index}, {len(result.objects)} objects, drawn zone holds {shown}, "
          f"{shown_after_move} after the move; the daemon's code agrees")
    assert 1 <= shown < len(result.objects)
    checked = subprocess.run(
        [sys.executable, "-m", "monitor", "check", "--config", str(config_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    assert checked.returncode == 0, checked.stderr
    assert "OK (1 cameras" in checked.stdout


# --- safe by default -----------------------------------------------------------------------------------------


def test_the_page_fetches_nothing_from_elsewhere_and_shows_no_secret(site):
    assert site.requests and all(url.startswith(site.base) for url in site.requests), [
        url for url in site.requests if not url.startswith(site.base)
    ]
    answers = [get(site.base + path) for path in ("", "static/app.js", "api/cameras", "api/counts", "api/events", "api/escalations",
                                                   "api/cameras/street/frame")]
    assert not [a for a in answers if LLM_KEY.encode() in a]
    assert LLM_KEY not in site.page.content()
