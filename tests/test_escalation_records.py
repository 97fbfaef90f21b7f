"""The learning loop's records: escalated frames saved with real detector boxes and the model's answer, bounded on
disk."""

from __future__ import annotations

import json

import cv2
from escalation_support import JACKET_DETECTIONS, PEOPLE, app_config, brief, camera_escalation, frame_result, save_frame

from monitor.common import ALL_ZONES
from monitor.config import DatasetConfig
from monitor.escalation import Ambiguity, Candidate, EscalationOutcome, ModelAnswer, build_request
from monitor.escalation.records import DatasetWriter
from monitor.metrics import Metrics
from monitor.safety.events import OpenEvent


def test_the_saved_frames_stay_within_max_mb(detected, tmp_path):
    app, detector, frames = detected
    writer = DatasetWriter(DatasetConfig(dir=tmp_path / "escalated", max_mb=0.25))
    b = brief(app, detector)
    saved = [save_frame(writer, detector, b, index, image, boxes) for index, image, boxes in frames]
    kept = sorted((tmp_path / "escalated" / "street").glob("*.jpg"))
    on_disk = sum(f.stat().st_size for f in (tmp_path / "escalated").rglob("*") if f.is_file())
    assert on_disk <= 0.25 * 1024 * 1024 and writer.size_bytes == on_disk
    assert 1 <= len(kept) < len(saved) and kept == sorted(saved)[-len(kept):]  # the newest are kept
    assert all(f.with_suffix(".json").exists() for f in kept)
    # a restarted writer finds what is there and keeps the bound
    again = DatasetWriter(DatasetConfig(dir=tmp_path / "escalated", max_mb=0.25))
    assert again.size_bytes == on_disk


def test_a_saved_frame_has_its_record_beside_it(street_image, tmp_path):
    brief = camera_escalation(app_config(), Metrics())[0].brief
    result = frame_result(street_image, index=42, detections=JACKET_DETECTIONS, objects=PEOPLE)
    result.frame.wall_time = 1_700_000_000.5
    event = OpenEvent("ev1", "person_down", "person_down", "lawn", (3,), True, "candidate", "pending", ((70.0, 490.0, 160.0, 530.0),))
    request = build_request(brief, Candidate.of(Ambiguity(0.8, "grey_band"), result, [event]), lambda outcome: None)
    answer = ModelAnswer({ALL_ZONES: {"person": 3}}, [{"id": "ev1", "real": False, "note": "a jacket"}], "three people")
    jpg = DatasetWriter(DatasetConfig(dir=tmp_path, max_mb=10)).save(request, street_image, EscalationOutcome(request, "ok", answer))
    assert jpg == tmp_path / "street" / "20231114T221320_500000_00000042_grey_band.jpg"
    assert cv2.imread(str(jpg)).shape == street_image.shape
    record = json.loads(jpg.with_suffix(".json").read_text())
    assert record["version"] == 2 and record["camera"] == "street" and record["frame"] == 42 and record["reason"] == "grey_band"
    assert record["ts"] == "2023-11-14T22:13:20.500000+00:00"
    assert (record["width"], record["height"]) == (768, 576)
    assert record["class_names"] == ["Normal", "Fall"] and record["class_labels"] == ["person", "person"]
    assert record["objects"][0] == {"xyxy": [400.0, 200.0, 430.0, 290.0], "conf": 0.9, "class_id": 0, "track_id": 1}
    assert record["detections"][0] == {"xyxy": [70.0, 490.0, 160.0, 530.0], "conf": 0.5, "class_id": 1, "track_id": -1}
    assert record["detector_counts"][ALL_ZONES] == {"person": 2}
    assert record["events"] == [{"id": "ev1", "rule": "person_down", "zone": "lawn", "track_ids": [3], "ambiguous": True,
                                 "boxes": [[70.0, 490.0, 160.0, 530.0]]}]  # what the export drops when the model dismisses it
    assert set(record["zones"]) == {"lot", "path", "lawn"} and record["zones"]["lawn"][0] == [0, 238]
    assert record["anchor"] == "bottom_center"  # with the zones: where the model's per-zone counts apply
    assert record["answer"] == {"counts": {ALL_ZONES: {"person": 3}}, "events": [{"id": "ev1", "real": False, "note": "a jacket"}],
                                "description": "three people"}


def test_a_failed_call_is_recorded_without_an_answer(street_image, tmp_path):
    brief = camera_escalation(app_config(), Metrics())[0].brief
    request = build_request(brief, Candidate.of(Ambiguity(0.8, "flicker"), frame_result(street_image), []), lambda outcome: None)
    jpg = DatasetWriter(DatasetConfig(dir=tmp_path, max_mb=10)).save(request, street_image, EscalationOutcome(request, "timeout"))
    record = json.loads(jpg.with_suffix(".json").read_text())
    assert record["answer"] is None and record["events"] == [] and record["objects"] == []
