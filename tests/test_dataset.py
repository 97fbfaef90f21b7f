"""The learning loop: escalated frames saved with real detector boxes and the model's answer, bounded on disk,
exported by ``monitor dataset export`` as a YOLO dataset that Ultralytics loads and trains on."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from monitor.cli import main
from monitor.config import DatasetConfig, parse_config
from monitor.common import ALL_ZONES
from monitor.detection import Detector
from monitor.escalation import Ambiguity, CameraBrief, Candidate, EscalationOutcome, ModelAnswer, build_request
from monitor.escalation.records import DatasetWriter
from monitor.tools.dataset import frame_labels
from monitor.frame import CapturedFrame, FrameResult
from conftest import street_config, write_config

FRAMES = (0, 40, 80, 120, 160, 200)


@pytest.fixture(scope="module")
def detected(clip, person_model):
    """Six clip frames with the real detector's boxes."""
    import torch

    torch.set_num_threads(1)
    data = street_config(1883)
    data["models"]["person"].update(warmup=False)
    app = parse_config(data)
    detector = Detector("person", app.models["person"])
    capture = cv2.VideoCapture(str(clip))
    out = []
    for index in range(max(FRAMES) + 1):
        ok, image = capture.read()
        assert ok
        if index in FRAMES:
            out.append((index, image, detector.predict([image])[0]))
    capture.release()
    return app, detector, out


def brief(app, detector) -> CameraBrief:
    camera = app.cameras["street"]
    zones = {name: {"polygon": z.polygon, "description": "", "labels": ["person"]} for name, z in camera.zones.items()}
    return CameraBrief("street", camera.description, zones, ["person"], {"person": ["Normal", "Fall"]}, detector.class_names, camera.escalation)


def save_frame(writer, detector, brief_, index, image, boxes, totals_delta=0, events=None, verdicts=None):
    passing = detector.thresholds.passing(boxes)
    objects = boxes.select(passing)
    result = FrameResult(CapturedFrame("street", index, image, time.time() + index, time.monotonic()), detector.labels)
    result.detections, result.objects = boxes, objects
    result.counts = {ALL_ZONES: {"person": len(objects)}}
    request = build_request(brief_, Candidate.of(Ambiguity(0.7, "grey_band"), result, events or []), lambda outcome: None)
    answer = ModelAnswer({ALL_ZONES: {"person": len(objects) + totals_delta}}, verdicts or [], "people on a street")
    return writer.save(request, image, EscalationOutcome(request, "ok", answer))


def test_saved_frames_export_as_a_yolo_dataset_that_ultralytics_loads_and_trains(detected, tmp_path, monkeypatch):
    app, detector, frames = detected
    source = tmp_path / "escalated"
    writer = DatasetWriter(DatasetConfig(dir=source, max_mb=50))
    b = brief(app, detector)
    for index, image, boxes in frames[:4]:
        save_frame(writer, detector, b, index, image, boxes)  # the model agrees with the detector
    index, image, boxes = frames[4]
    save_frame(writer, detector, b, index, image, boxes, totals_delta=1)  # the model sees one more: promote a weak box
    index, image, boxes = frames[5]
    save_frame(writer, detector, b, index, image, boxes, totals_delta=9)  # far off: left for a person to review
    assert len(list(source.glob("street/*.jpg"))) == 6

    data = street_config(1883)
    data["escalation"] = {"base_url": "http://127.0.0.1:9/v1", "dataset": {"dir": "escalated"}}
    config_path = write_config(tmp_path, data)
    out = tmp_path / "export"
    assert main(["dataset", "export", "--config", str(config_path), "--out", str(out), "--val-fraction", "0.25"]) == 0

    spec = yaml.safe_load((out / "data.yaml").read_text())
    assert spec["names"] == {0: "Normal", 1: "Fall"} and spec["train"] == "images/train" and spec["val"] == "images/val"
    train = sorted((out / "images" / "train").glob("*.jpg"))
    val = sorted((out / "images" / "val").glob("*.jpg"))
    assert len(train) + len(val) == 5 and len(val) >= 1
    assert len((out / "review.txt").read_text().splitlines()) == 1
    # labels: one line per box, class and a normalised centre/size inside the image
    first = frames[0]
    objects = first[2].select(detector.thresholds.passing(first[2]))
    label_file = next((out / "labels").glob(f"*/street_*_{first[0]:08d}_grey_band.txt"))
    rows = np.array([list(map(float, line.split())) for line in label_file.read_text().splitlines()])
    assert len(rows) == len(objects) >= 1
    assert set(rows[:, 0].astype(int)) <= {0, 1} and ((rows[:, 1:] > 0) & (rows[:, 1:] <= 1)).all()
    expected_cx = sorted(((objects.xyxy[:, 0] + objects.xyxy[:, 2]) / 2 / 768).round(4))
    assert sorted(rows[:, 1].round(4)) == pytest.approx(expected_cx, abs=1e-4)

    from ultralytics.data.utils import check_det_dataset

    checked = check_det_dataset(str(out / "data.yaml"))
    assert checked["nc"] == 2 and checked["names"] == {0: "Normal", 1: "Fall"}
    assert Path(checked["train"]).is_dir() and Path(checked["val"]).is_dir()

    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)
    model = YOLO("yolov8n.yaml", task="detect")  # built from its definition: nothing to download
    model.train(
        data=str(out / "data.yaml"), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", amp=False, plots=False,
        pretrained=False, val=True, project=str(tmp_path / "runs"), name="tiny", exist_ok=True, verbose=False,
    )
    assert (tmp_path / "runs" / "tiny" / "weights" / "last.pt").stat().st_size > 0


def test_labels_follow_the_model_answer(detected):
    app, detector, frames = detected
    index, image, boxes = frames[0]
    objects = boxes.select(detector.thresholds.passing(boxes))
    record = {
        "class_labels": detector.labels,
        "objects": [
            {"xyxy": [float(v) for v in xyxy], "conf": float(c), "class_id": int(k), "track_id": i + 1}
            for i, (xyxy, c, k) in enumerate(zip(objects.xyxy, objects.conf, objects.class_id))
        ],
        "detections": [{"xyxy": [70.0, 490.0, 160.0, 530.0], "conf": 0.5, "class_id": 1, "track_id": -1}],
        "events": [{"id": "ev1", "rule": "person_down", "zone": "lawn", "track_ids": [1], "ambiguous": True}],
        "answer": {"counts": {ALL_ZONES: {"person": len(objects) - 1}}, "events": [{"id": "ev1", "real": False, "note": ""}]},
    }
    labels, agrees = frame_labels(record)  # the dismissed event's track is not a person
    assert agrees and [b["track_id"] for b in labels] == list(range(2, len(objects) + 1))
    record["answer"]["events"] = []
    record["answer"]["counts"][ALL_ZONES]["person"] = len(objects) + 1
    labels, agrees = frame_labels(record)  # one more person: the weak detection is promoted
    assert agrees and labels[-1]["xyxy"] == [70.0, 490.0, 160.0, 530.0]
    record["answer"]["counts"][ALL_ZONES]["person"] = len(objects) + 2
    assert frame_labels(record)[1] is False


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


def test_export_without_a_dataset_dir_is_a_config_error(tmp_path, capsys):
    config_path = write_config(tmp_path, street_config(1883))
    assert main(["dataset", "export", "--config", str(config_path), "--out", str(tmp_path / "x")]) == 2
    assert "escalation.dataset.dir: not set" in capsys.readouterr().err
