"""``monitor dataset export``: the saved escalated frames as a YOLO dataset that Ultralytics loads and trains on,
with labels that follow the model's answer."""

from __future__ import annotations

import json
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
from monitor.tools.dataset import assign_splits, frame_labels


def test_saved_frames_export_as_a_yolo_dataset_that_ultralytics_loads_and_trains(detected, tmp_path, monkeypatch):
    app, detector, frames = detected
    source = tmp_path / "state" / "escalated"  # a relative dataset.dir is under state_dir (the conftest's)
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
    assert not {p.name for p in train} & {p.name for p in val}  # val is never a copy of a train frame
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


# --- the learning loop must not teach the model its own mistakes ------------------------------------------------

STREET_ZONES = {
    "lot": [[0, 150], [120, 158], [350, 172], [375, 162], [480, 140], [600, 128], [612, 138], [470, 195], [300, 213], [170, 214], [0, 203]],
    "path": [[0, 203], [170, 214], [300, 213], [470, 195], [612, 138], [768, 100], [768, 495], [330, 290], [0, 238]],
    "lawn": [[0, 238], [330, 290], [768, 495], [768, 576], [0, 576]],
}
WALKER_1, WALKER_2 = [400.0, 200.0, 430.0, 290.0], [500.0, 220.0, 530.0, 310.0]  # feet on the path
JACKET = [70.0, 490.0, 160.0, 530.0]  # on the lawn
FAR_WALKER = [600.0, 150.0, 615.0, 190.0]  # feet on the path, far away: a weak detection


def box(xyxy, conf, class_id=0, track_id=-1) -> dict:
    return {"xyxy": xyxy, "conf": conf, "class_id": class_id, "track_id": track_id}


def street_record(objects, detections, counts, events=(), verdicts=()) -> dict:
    return {
        "version": 2, "camera": "street", "width": 768, "height": 576,
        "class_names": ["Normal", "Fall"], "class_labels": ["person", "person"],
        "objects": list(objects), "detections": list(detections),
        "zones": STREET_ZONES, "anchor": "bottom_center", "events": list(events),
        "answer": {"counts": counts, "events": list(verdicts), "description": ""},
    }


def test_the_box_of_a_dismissed_untracked_event_is_not_taught():
    """The jacket: an untracked Fall box (no track id to drop it by) that the model said is not a person."""
    jacket_event = {"id": "ev1", "rule": "person_down", "zone": "lawn", "track_ids": [], "ambiguous": True, "boxes": [JACKET]}
    record = street_record(
        [box(WALKER_1, 0.9, track_id=1), box(WALKER_2, 0.8, track_id=2), box(JACKET, 0.62, class_id=1)],
        [box(WALKER_1, 0.9), box(WALKER_2, 0.8), box(JACKET, 0.62, class_id=1)],
        {ALL_ZONES: {"person": 2}, "path": {"person": 2}, "lawn": {"person": 0}},
        [jacket_event], [{"id": "ev1", "real": False, "note": "a yellow jacket"}],
    )
    labels, agrees = frame_labels(record)
    assert [b["xyxy"] for b in labels] == [WALKER_1, WALKER_2] and agrees
    record["objects"] = record["objects"][:2]  # the jacket only weak: never promoted, even if the model counts 3 people
    record["answer"]["counts"] = {ALL_ZONES: {"person": 3}}
    labels, agrees = frame_labels(record)
    assert [b["xyxy"] for b in labels] == [WALKER_1, WALKER_2] and not agrees


def test_weak_detections_are_promoted_only_where_the_model_counted_more():
    record = street_record(
        [box(WALKER_1, 0.9, track_id=1), box(WALKER_2, 0.8, track_id=2)],
        [box(JACKET, 0.5, class_id=1), box(FAR_WALKER, 0.3)],  # the stronger one is on the lawn
        {ALL_ZONES: {"person": 3}, "path": {"person": 3}, "lawn": {"person": 0}},
    )
    labels, agrees = frame_labels(record)
    assert [b["xyxy"] for b in labels] == [WALKER_1, WALKER_2, FAR_WALKER] and agrees
    record["answer"]["counts"]["path"]["person"] = 2  # the model's third person is nowhere a weak box is
    labels, agrees = frame_labels(record)
    assert len(labels) == 2 and not agrees
    record["detections"].append(box([601.0, 151.0, 616.0, 191.0], 0.25))  # the far walker's second, weaker box
    record["answer"]["counts"] = {ALL_ZONES: {"person": 4}, "path": {"person": 4}, "lawn": {"person": 0}}
    labels, agrees = frame_labels(record)
    assert [b["xyxy"] for b in labels] == [WALKER_1, WALKER_2, FAR_WALKER] and not agrees  # one object, promoted once


def test_no_frame_is_both_a_train_and_a_val_frame():
    assert assign_splits(1, 0.2) == ["train"]  # not a copy of itself as val
    for count in range(2, 12):
        splits = assign_splits(count, 0.2)
        assert len(splits) == count and "val" in splits and "train" in splits
    assert assign_splits(10, 0.2).count("val") == 2 and assign_splits(5, 0.0) == ["train"] * 5


def write_saved(folder: Path, stem: str, record: dict) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{stem}.jpg"), np.zeros((576, 768, 3), np.uint8))
    (folder / f"{stem}.json").write_text(json.dumps(record))


def export(tmp_path: Path, *extra: str) -> int:
    data = street_config(1883)
    data["escalation"] = {"base_url": "http://127.0.0.1:9/v1", "dataset": {"dir": "escalations"}}
    return main(["dataset", "export", "--config", str(write_config(tmp_path, data)), "--out", str(tmp_path / "ds"), *extra])


def test_an_empty_export_says_why(tmp_path, capsys):
    saved = tmp_path / "state" / "escalations"
    assert export(tmp_path) == 1
    assert capsys.readouterr().err.strip().endswith(f"nothing to train on: no saved frames in {saved} "
                                                    "(the monitor saves answered escalations there while it runs)")
    disagreeing = street_record([box(WALKER_1, 0.9, track_id=1)], [], {ALL_ZONES: {"person": 4}})
    for i in range(3):
        write_saved(saved / "street", f"frame{i}", disagreeing)
    write_saved(saved / "street", "failed", {**disagreeing, "answer": None})
    assert export(tmp_path) == 1
    err = capsys.readouterr().err
    assert "nothing to train on: of 4 saved frames, 1 have no answer (the call failed) and 3 disagree with the " \
           "model's counts (listed in review.txt; label them, or export them as they are with --include-disagreements)" in err
    assert len((tmp_path / "ds" / "review.txt").read_text().splitlines()) == 3


def test_a_single_agreeing_frame_is_not_a_dataset(tmp_path, capsys):
    saved = tmp_path / "state" / "escalations"
    write_saved(saved / "street", "only", street_record([box(WALKER_1, 0.9, track_id=1)], [], {ALL_ZONES: {"person": 1}}))
    assert export(tmp_path) == 1
    assert "1 frame(s) cannot make both a train and a val split: at least 2 are needed" in capsys.readouterr().err
    assert list((tmp_path / "ds" / "images" / "val").iterdir()) == []

