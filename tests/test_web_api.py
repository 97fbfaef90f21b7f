"""The page's JSON answers: what the publisher was given, camera health, evidence as links, the model's reviews on
their events, the day's budget, sources without credentials, and the processed-frames rate."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from monitor.capture import CameraReader
from monitor.config import parse_config
from monitor.counting import zone_labels
from monitor.escalation.limits import Budget
from monitor.publishing.message import Message
from monitor.web.api import CameraPanel, RateMeter, WebApi, shown_source
from monitor.web.frames import FrameSource
from monitor.web.recorder import Recorder
from web_support import EVENT_ID, event_payload, synthetic_result, web_config


def api_over(tmp_path, budget: Budget | None = None, processed=lambda: 0.0) -> tuple[WebApi, Recorder]:
    config = parse_config(web_config(tmp_path))
    camera = config.cameras["street"]
    result = synthetic_result()
    loop = SimpleNamespace(reader=CameraReader("street", camera), zone_labels=zone_labels(camera, ["person"]), last_result=result)
    frames = FrameSource("street", camera, lambda: loop.last_result, loop.zone_labels)
    recorder = Recorder("monitor", ["street"])
    return WebApi(config.web, {"street": CameraPanel("street", camera, loop, frames, RateMeter(processed))}, recorder, budget), recorder


def publish(recorder: Recorder, suffix: str, payload: dict) -> None:
    recorder.message(Message(f"monitor/street/{suffix}", json.dumps(payload), 1, False))


def test_cameras_and_counts_are_what_mqtt_carried(tmp_path):
    api, recorder = api_over(tmp_path)
    assert api.counts() == {"street": None}
    counts = {"camera": "street", "ts": "2026-11-23T17:20:03.112Z", "seq": 14, "zones": {"lot": {"person": 1}},
              "totals": {"person": 2}, "source": "llm", "stale": True}
    publish(recorder, "counts", counts)
    publish(recorder, "events/active", {"camera": "street", "count": 1, "events": [event_payload(tmp_path / "x.jpg")]})
    assert api.counts() == {"street": counts}
    (camera,) = api.cameras()["cameras"]
    assert camera == {
        "name": "street", "description": "Street corner outside a campus building, seen from an upper floor",
        "source": "rtsp://***@10.0.0.5:554/Streaming/Channels/102", "state": "connecting", "stale": True, "fps": None,
        "target_fps": None, "resolution": None, "frame": 7, "image": "camera/street.jpg?frame=7", "count_source": "llm",
        "counts": counts, "active_events": 1,
    }
    assert api.cameras()["refresh_s"] == 2.0


def test_events_link_their_evidence_and_carry_the_models_reviews(tmp_path):
    api, recorder = api_over(tmp_path)
    started = event_payload(tmp_path / "evidence" / f"{EVENT_ID}.jpg")
    ended = {**started, "type": "end", "status": "ended", "end_reason": "cleared", "snapshot": None}
    other = {**started, "id": "street-crowding-1", "rule": "crowding", "snapshot": "/elsewhere/not-its-id.jpg"}
    publish(recorder, "events", started)
    publish(recorder, "events", other)
    publish(recorder, "events/active", {"camera": "street", "count": 1, "events": [other]})
    publish(recorder, "escalations", {"ts": "2026-11-23T17:02:12.000Z", "outcome": "ok", "decision": "agreed",
                                      "latency_s": 1.5, "cost_estimated": 0.002, "model_name": "vision",
                                      "events": [{"id": EVENT_ID, "real": True, "note": "a man in the lot", "rule": "lot_intrusion"}]})
    events = api.events()["cameras"]["street"]
    assert [e["id"] for e in events["active"]] == ["street-crowding-1"] and [e["id"] for e in events["recent"]] == [EVENT_ID]
    recent = events["recent"][0]
    assert recent["snapshot"] == f"evidence/{EVENT_ID}.jpg" and events["active"][0]["snapshot"] is None
    assert recent["model_reviews"] == [{"ts": "2026-11-23T17:02:12.000Z", "real": True, "note": "a man in the lot",
                                        "outcome": "ok", "decision": "agreed", "latency_s": 1.5, "cost_estimated": 0.002,
                                        "model_name": "vision"}]
    publish(recorder, "events", ended)
    assert api.events()["cameras"]["street"]["recent"][0]["snapshot"] is None


def test_escalations_newest_first_with_the_days_budget(tmp_path):
    budget = Budget(1.0)
    assert budget.try_reserve(0.25)
    api, recorder = api_over(tmp_path, budget)
    for ts in ("2026-11-23T17:00:02.000Z", "2026-11-23T17:00:09.000Z", "2026-11-23T17:00:05.000Z"):
        publish(recorder, "escalations", {"ts": ts, "camera": "street"})
    answer = api.escalations()
    assert [e["ts"][17:19] for e in answer["escalations"]] == ["09", "05", "02"]
    assert answer["budget"] == {"daily": 1.0, "spent_today": 0.25, "remaining": 0.75}
    assert api_over(tmp_path)[0].escalations() == {"budget": None, "escalations": []}


@pytest.mark.parametrize(
    "source, shown",
    [
        ("rtsp://admin:secret@10.0.0.21:554/Streaming/Channels/102", "rtsp://***@10.0.0.21:554/Streaming/Channels/102"),
        ("http://10.0.0.22/cgi-bin/mjpg?user=admin&pwd=secret", "http://10.0.0.22/cgi-bin/mjpg"),
        ("rtsp://u:p@cam/live#token=secret", "rtsp://***@cam/live"),
        (0, "0"),
        ("/dev/video0", "/dev/video0"),
    ],
)
def test_sources_are_shown_without_credentials(source, shown):
    assert shown_source(source) == shown


def test_the_rate_meter_reports_per_second_over_its_window():
    clock, counter = [100.0], [0.0]
    meter = RateMeter(lambda: counter[0], window_s=10.0, clock=lambda: clock[0])
    assert meter.rate() is None
    clock[0] += 8.0
    counter[0] += 40
    assert meter.rate() == pytest.approx(5.0)
    clock[0] += 60.0  # nobody asked for a minute: the old samples left the window
    assert meter.rate() is None
    clock[0] += 2.0
    counter[0] += 3
    assert meter.rate() == pytest.approx(1.5)
