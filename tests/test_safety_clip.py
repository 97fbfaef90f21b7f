"""Safety events on real material: the real pipeline (YOLO, ByteTrack, Mosquitto, Prometheus) over vtest.avi.

Checked by eye (frames written out enlarged and looked at): a man walks along the road, steps onto the
kerbside strip in front of the tape at about frame 597, walks left along it in front of the cones (his legs
hide the middle cone at frames 604-608, his body hides the tape at 648: he never goes behind it) and is back
on the road at frame 650-655. Nobody in the clip goes behind the tape, so the bundled ``lot`` (drawn behind
it) raises nothing; the test adds a ``kerb`` zone on the strip, where the man raises exactly one intrusion.
Others walk on the road just in front of the strip (the woman in red along the kerb at frames 640-670) and
must not raise anything. The yellow jacket on the lawn (x 50-170, y 490-555) is seen as ``Fall`` at 0.36-0.58:
below the model's Fall threshold (0.6), inside the person_down rule's grey band.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.config import load_config
from monitor.pipeline import Monitor
from conftest import Broker, Subscriber, add_kerb_intrusion, cut_clip, free_port, street_config, write_config

SEGMENT = (575, 680)  # clip frames [start, end): the lot intrusion and the jacket; 10.5 s at 10 fps
FPS = 10
ENTERS_BY_EYE, LEAVES_BY_EYE = 597, 653  # clip frames: onto the kerbside strip, back on the road
EVENTS = "monitor/street/events"


def cut(clip: Path, folder: Path, frames: tuple[int, int]) -> Path:
    """A lossless (FFV1) copy of clip frames [start, end): the same pixels the pipeline decodes from the clip."""
    return cut_clip(clip, folder / f"street-{frames[0]}-{frames[1]}.avi", frames[0], frames[1] - frames[0], FPS)


def clip_frame(seconds: float) -> float:
    return SEGMENT[0] + seconds * FPS


def rule(data: dict, name: str) -> dict:
    return next(r for r in data["cameras"]["street"]["safety"] if r["name"] == name)


class Run:
    """One pass of the Monitor over the segment, with what MQTT, Prometheus and the engine showed."""

    def __init__(self, folder: Path, clip: Path):
        self.folder = folder
        self.broker = Broker(folder).start()
        self.metrics_port = free_port()
        data = street_config(self.broker.port, self.metrics_port, source=str(cut(clip, folder, SEGMENT)))
        rule(data, "person_down")["unreviewed_after_s"] = 4  # the bundled 20 s is longer than the segment
        add_kerb_intrusion(data)
        data["evidence"] = {"dir": str(folder / "evidence"), "max_mb": 50}
        self.monitor = Monitor(load_config(write_config(folder, data)))
        self.engine = self.monitor.loops["street"].safety
        self.subscriber = Subscriber(self.broker.port, [f"{EVENTS}", f"{EVENTS}/active"])
        self.candidates: dict[str, dict] = {}  # open events seen by polling, as the escalation stage sees them
        self.reviewed: list[str] = []
        self.metrics_text = ""

    def go(self) -> Run:
        self.monitor.start()
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(done,), daemon=True)
        watcher.start()
        try:
            self.monitor.wait(threading.Event())
            self.metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        finally:
            done.set()
            watcher.join(5)
            self.monitor.stop()
            self.subscriber.wait_for(lambda s: any(json.loads(p)["count"] == 0 for p in s.on(f"{EVENTS}/active")[-1:]), 10)
            self.subscriber.close()
            self.broker.stop()
        return self

    def _watch(self, done: threading.Event) -> None:
        """Poll open_events like the escalation stage; dismiss the jacket once it is published unconfirmed."""
        while not done.wait(0.05):
            for event in self.engine.open_events():
                seen = self.candidates.setdefault(event.id, {"rule": event.rule, "states": []})
                state = (event.status, event.verdict, event.ambiguous)
                if state not in seen["states"]:
                    seen["states"].append(state)
            for start in self.events("start"):
                if start["rule"] == "person_down" and start["id"] not in self.reviewed:
                    self.reviewed.append(start["id"])
                    messages = self.engine.review(start["id"], real=False, note="a yellow jacket on the grass", source="test")
                    self.monitor.publisher.publish_all(messages)

    def events(self, kind: str | None = None, rule: str | None = None) -> list[dict]:
        found = self.subscriber.json_on(EVENTS)
        return [e for e in found if (kind is None or e["type"] == kind) and (rule is None or e["rule"] == rule)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, clip, person_model) -> Run:
    return Run(tmp_path_factory.mktemp("safety-clip"), clip).go()


def test_the_man_on_the_kerb_raises_exactly_one_intrusion_at_the_right_times(run):
    starts, ends = run.events("start", "kerb_intrusion"), run.events("end", "kerb_intrusion")
    assert len(starts) == 1 and len(ends) == 1, run.events(rule="kerb_intrusion")
    start, end = starts[0], ends[0]
    assert start["id"] == end["id"] and start["zone"] == "kerb" and start["verdict"] == "auto"
    assert len(end["track_ids"]) == 1  # one man, one track: nobody else on the strip
    entered, left = clip_frame(start["start_s"]), clip_frame(end["end_s"])
    print(f"intrusion: clip frames {entered:.0f}-{left:.0f} (by eye {ENTERS_BY_EYE}-{LEAVES_BY_EYE})")
    assert abs(entered - ENTERS_BY_EYE) <= 6
    assert abs(left - LEAVES_BY_EYE) <= 8
    assert end["end_reason"] == "cleared" and end["duration_s"] == pytest.approx(end["end_s"] - start["start_s"], abs=0.01)


def test_no_one_else_raises_an_intrusion_and_nobody_is_behind_the_tape(run):
    assert len({e["id"] for e in run.events(rule="kerb_intrusion")}) == 1
    assert len([c for c in run.candidates.values() if c["rule"] == "kerb_intrusion"]) == 1  # nobody else on the strip
    assert run.events(rule="lot_intrusion") == []  # the bundled lot, behind the tape: not even a candidate
    assert [c for c in run.candidates.values() if c["rule"] == "lot_intrusion"] == []


def test_intrusion_snapshot_is_an_annotated_frame_of_the_street(run):
    (start,) = run.events("start", "kerb_intrusion")
    path = Path(start["snapshot"])
    assert path.parent == run.folder / "evidence" and path.exists()
    image = cv2.imread(str(path))
    assert image.shape == (576, 768, 3)
    red = (image[:, :, 2] > 200) & (image[:, :, 1] < 60) & (image[:, :, 0] < 60)
    assert red[130:220, 0:620].sum() > 500  # the kerb outline and the intruder's box are drawn in red


def test_the_jacket_is_never_a_confirmed_person_down(run):
    down = run.events(rule="person_down")
    assert down, "the jacket should at least be published as unconfirmed after unreviewed_after_s"
    assert all(e["verdict"] in ("unconfirmed", "dismissed") and e["ambiguous"] for e in down)
    start = next(e for e in down if e["type"] == "start")
    assert start["verdict"] == "unconfirmed" and 0.3 <= start["confidence"] < 0.6
    assert start["start_s"] == pytest.approx(0.0, abs=0.3)  # lying there from the segment's first frame
    assert start["detail"] == {"cues": ["fall_class"]} and start["track_ids"] == []  # too weak to start a track


def test_the_jacket_waits_as_an_ambiguous_candidate_before_it_is_published(run):
    (jacket,) = [c for c in run.candidates.values() if c["rule"] == "person_down"]
    assert jacket["states"][0] == ("candidate", "auto", True)
    assert ("candidate", "pending", True) in jacket["states"]  # due, waiting for a review
    assert all(state[1] != "confirmed" for state in jacket["states"])


def test_dismissing_the_jacket_ends_it_and_it_stays_quiet(run):
    down = run.events(rule="person_down")
    assert [(e["type"], e["verdict"]) for e in down] == [("start", "unconfirmed"), ("update", "dismissed"), ("end", "dismissed")]
    assert down[-1]["end_reason"] == "dismissed" and down[-1]["reviews"][0]["note"] == "a yellow jacket on the grass"


def test_active_set_and_metrics(run):
    actives = run.subscriber.json_on(f"{EVENTS}/active")
    assert any(a["count"] >= 1 and "kerb_intrusion" in {e["rule"] for e in a["events"]} for a in actives)
    assert actives[-1]["count"] == 0  # all ended (cleared, dismissed or at the end of the file)
    assert 'monitor_safety_events_total{camera="street",rule="kerb_intrusion"} 1.0' in run.metrics_text
    assert 'monitor_safety_events_total{camera="street",rule="lot_intrusion"} 0.0' in run.metrics_text
    assert 'monitor_safety_events_total{camera="street",rule="person_down"} 1.0' in run.metrics_text
    assert 'monitor_safety_events_active{camera="street",rule="camera_stale"} 0.0' in run.metrics_text
    assert not run.events(rule="camera_stale")


# --- stale camera through the real pipeline --------------------------------------------------------


def stale_only_config(broker_port: int, folder: Path, **street) -> Path:
    data = street_config(broker_port, **street)
    data["cameras"]["street"]["safety"] = [{"name": "camera_stale", "rule": "stale_camera", "no_frame_s": 1.5, "min_seconds": 2, "clear_seconds": 1}]
    data["evidence"] = {"dir": str(folder / "evidence")}
    return write_config(folder, data)


def run_until(monitor: Monitor, subscriber: Subscriber, predicate, timeout: float) -> bool:
    monitor.start()
    try:
        return subscriber.wait_for(predicate, timeout)
    finally:
        monitor.stop()


def test_a_black_stream_raises_stale_camera(tmp_path, person_model):
    path = tmp_path / "black.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), FPS, (768, 576))
    rng = np.random.default_rng(0)
    for _ in range(35):  # 3.5 s of a covered lens: sensor noise on black
        writer.write(rng.integers(0, 5, (576, 768, 3), dtype=np.uint8))
    writer.release()
    broker = Broker(tmp_path).start()
    try:
        monitor = Monitor(load_config(stale_only_config(broker.port, tmp_path, source=str(path))))
        subscriber = Subscriber(broker.port, [EVENTS])
        monitor.start()
        monitor.wait(threading.Event())
        monitor.stop()
        assert subscriber.wait_for(lambda s: len(s.on(EVENTS)) >= 2, 10)
        start, end = subscriber.json_on(EVENTS)[:2]
        subscriber.close()
    finally:
        broker.stop()
    assert start["type"] == "start" and start["rule"] == "camera_stale" and start["detail"]["reason"] == "black"
    assert start["start_s"] == pytest.approx(0.0) and end["type"] == "end" and end["end_reason"] == "stream_end"


def test_a_dead_stream_raises_stale_camera(tmp_path, person_model):
    broker = Broker(tmp_path).start()
    try:
        dead = f"rtsp://127.0.0.1:{free_port()}/cam"  # nothing listens: every connect fails
        monitor = Monitor(load_config(stale_only_config(broker.port, tmp_path, source=dead, realtime=True)))
        subscriber = Subscriber(broker.port, [EVENTS])
        started = time.monotonic()
        assert run_until(monitor, subscriber, lambda s: s.on(EVENTS), 20)
        waited = time.monotonic() - started
        start = subscriber.json_on(EVENTS)[0]
        subscriber.close()
    finally:
        broker.stop()
    assert start["type"] == "start" and start["detail"]["reason"] == "no_frame" and start["detail"]["silent_s"] >= 1.5
    assert waited >= 1.5
