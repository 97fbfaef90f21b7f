"""``monitor dataset export``: the saved escalated frames as a YOLO dataset that Ultralytics loads and trains on,
with labels that follow the model's answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import street_config, write_config
from escalation_support import brief, save_frame

from monitor.cli import main
from monitor.common import ALL_ZONES
from monitor.config import DatasetConfig
from monitor.escalation.records import DatasetWriter
from monitor.tools.dataset import frame_labels


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


def test_export_without_a_dataset_dir_is_a_config_error(tmp_path, capsys):
    config_path = write_config(tmp_path, street_config(1883))
    assert main(["dataset", "export", "--config", str(config_path), "--out", str(tmp_path / "x")]) == 2
    assert "escalation.dataset.dir: not set" in capsys.readouterr().err
