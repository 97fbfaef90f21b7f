"""A site's own model: `monitor dataset import` of labelled frames, `monitor train` (a one-epoch fine-tune of
the bundled bag model on CPU), `monitor evaluate`; and a fine-tune from frames that the running pipeline
escalated (to a real HTTP server speaking the OpenAI API) and `monitor dataset export` wrote."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import ROOT, Broker, wait_until, write_config
from fake_openai import FakeOpenAI
from test_ice_model import no_network, one_thread  # noqa: F401  (fixtures)

from monitor.tools import icegen
from monitor.cli import main
from monitor.config import load_config
from monitor.pipeline import Monitor

MODEL = ROOT / "models" / "ice-bags.pt"
EXAMPLE = ROOT / "examples" / "ice-store.yaml"


def write_frame(folder: Path, stem: str, seed: int, labels: Path | None = None) -> list[str]:
    """A generated 320x240 frame and its exact YOLO labels (beside it, or in ``labels``)."""
    image, bags = icegen.render_frame(np.random.default_rng([seed, 9]), 640, 480)
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{stem}.jpg"), cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA))
    lines = icegen.yolo_label_lines(bags, 640, 480)
    (labels or folder).mkdir(parents=True, exist_ok=True)
    ((labels or folder) / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return lines


@pytest.fixture(scope="module")
def site_frames(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """site/images + site/labels side by side (8 frames), site/mixed with labels beside the images (4),
    one image without labels and one with a bad label line."""
    site = tmp_path_factory.mktemp("site")
    expected = {}
    for i in range(8):
        expected[f"images_cam1_{i}"] = write_frame(site / "images", f"cam1_{i}", i, site / "labels")
    for i in range(4):
        expected[f"mixed_cam2_{i}"] = write_frame(site / "mixed", f"cam2_{i}", 100 + i)
    write_frame(site / "mixed", "unlabelled", 50)
    (site / "mixed" / "unlabelled.txt").unlink()
    write_frame(site / "mixed", "broken", 51)
    (site / "mixed" / "broken.txt").write_text("0 0.5 0.5 0.2\n")
    return site, expected


def test_import_writes_a_split_dataset_with_the_same_labels(site_frames, tmp_path, capsys):
    site, expected = site_frames
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--images", str(site), "--names", "ice_bag", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "10 train and 2 val images" in printed.out
    assert "broken.txt:1: expected 'class x_centre y_centre width height'" in printed.err
    assert "1 images without a label file" in printed.err and "unlabelled.jpg" in printed.err
    spec = yaml.safe_load((out / "data.yaml").read_text())
    assert spec == {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": {0: "ice_bag"}}
    written = {p.stem: p.read_text().splitlines() for p in (out / "labels").glob("*/*.txt")}
    assert written == expected
    assert {p.stem for p in (out / "images").glob("*/*.jpg")} == set(expected)


def test_import_with_a_separate_labels_folder_and_bad_classes(tmp_path, capsys):
    frames, labels = tmp_path / "frames", tmp_path / "labels"
    good = write_frame(frames, "a", 1, labels)
    write_frame(frames, "b", 2, labels)
    (labels / "b.txt").write_text("3 0.5 0.5 0.2 0.2\n")  # only class 0 exists
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--images", str(frames), "--labels", str(labels), "--names", "ice_bag", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "b.txt:1: class 3 out of range" in err and "a train and a val split need at least 2 labelled images" in err
    assert (out / "labels" / "train" / "a.txt").read_text().splitlines() == good
    assert not (out / "labels" / "val" / "a.txt").exists()  # a val split that repeats a train frame measures nothing
    other = write_frame(frames, "c", 3, labels)
    assert main(["dataset", "import", "--images", str(frames), "--labels", str(labels), "--names", "ice_bag", "--out", str(tmp_path / "ds2")]) == 0
    assert (tmp_path / "ds2" / "labels" / "train" / "a.txt").read_text().splitlines() == good
    assert (tmp_path / "ds2" / "labels" / "val" / "c.txt").read_text().splitlines() == other
    assert main(["dataset", "import", "--images", str(tmp_path / "none"), "--names", "ice_bag", "--out", str(out)]) == 2


def test_train_defaults_to_the_model_s_own_imgsz_and_warns_about_another(caplog):
    from ultralytics import YOLO

    from monitor.tools.training import train_imgsz, trained_imgsz

    trained = trained_imgsz(YOLO(str(MODEL)))
    assert trained == 320  # the bundled bag model
    assert train_imgsz(None, trained, "models/ice-bags.pt") == 320 and caplog.records == []
    assert train_imgsz(640, trained, "models/ice-bags.pt") == 640
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("train: --imgsz 640 differs from the 320 that models/ice-bags.pt was trained at")
    assert train_imgsz(None, None, "yolo11n.yaml") == 640  # an architecture without weights: Ultralytics' default


@pytest.mark.usefixtures("no_network")
def test_train_refuses_missing_files_without_downloading(tmp_path, capsys):
    data = tmp_path / "data.yaml"
    assert main(["train", "--data", str(data), "--model", str(MODEL), "--out", str(tmp_path / "x.pt")]) == 2
    assert f"--data {data}: no such file" in capsys.readouterr().err
    data.write_text("names: {0: ice_bag}\n")
    assert main(["train", "--data", str(data), "--model", "yolo11n.pt", "--out", str(tmp_path / "x.pt")]) == 2
    assert "--model yolo11n.pt: no such file (nothing is downloaded" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread", "no_network")
def test_one_epoch_fine_tune_then_evaluate(site_frames, tmp_path, capsys):
    site, _ = site_frames
    data = tmp_path / "ds" / "data.yaml"
    assert main(["dataset", "import", "--images", str(site), "--names", "ice_bag", "--out", str(data.parent)]) == 0
    out = tmp_path / "models" / "site.pt"
    assert main(["train", "--data", str(data), "--model", str(MODEL), "--out", str(out), "--epochs", "1",
                 "--imgsz", "160", "--batch", "8", "--device", "cpu", "--runs", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "mAP50 " in printed
    from ultralytics import YOLO

    tuned = YOLO(str(out))
    assert tuned.names == {0: "ice_bag"}
    metrics = json.loads((tmp_path / "models" / "site.metrics.json").read_text())
    assert metrics["training"]["epochs"] == 1 and metrics["training"]["device"] == "cpu"
    assert 0.0 <= metrics["detection"]["map50"] <= 1.0 and metrics["detection"]["images"] == 2
    assert main(["evaluate", "--model", str(out), "--data", str(data), "--json", str(tmp_path / "eval.json")]) == 0
    printed = capsys.readouterr().out
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["imgsz"] == 160  # the size it was trained at
    assert f"mAP50 {evaluated['map50']:.3f}" in printed
    assert evaluated["map50"] == pytest.approx(metrics["detection"]["map50"], abs=1e-3)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_fine_tune_from_escalated_frames_exported_by_dataset_export(tmp_path, capsys, monkeypatch):
    """The learning loop on the example: unsure frames escalate to an OpenAI-compatible server, are saved,
    exported as a YOLO dataset, and the bundled model fine-tunes on them."""
    clip = tmp_path / "clip.avi"
    icegen.write_clip(clip, seed=4243, n_frames=40)
    server = FakeOpenAI(api_key="ice-key").start()
    broker = Broker(tmp_path).start()
    monkeypatch.setenv("ICE_LLM_API_KEY", "ice-key")
    try:
        data = yaml.safe_load(EXAMPLE.read_text())
        data.update(state_dir=str(tmp_path / "state"))
        data["escalation"].update(base_url=server.base_url, api_key={"env": "ICE_LLM_API_KEY"},
                                  dataset={"dir": str(tmp_path / "escalated")})
        data["mqtt"].update(port=broker.port, client_id="ice-export-test")
        data["metrics"].update(enabled=False)
        data["models"]["bags"].update(path=str(MODEL), threads=1)
        data["cameras"]["store"].update(source=str(clip), realtime=False)
        data["cameras"]["store"]["escalation"]["thresholds"].update(stretch_s=0, cooldown_s=2)  # seconds of video: escalate often
        config_path = write_config(tmp_path, data)
        monitor = Monitor(load_config(config_path))
        monitor.start()
        try:
            monitor.wait(threading.Event())
            saved = tmp_path / "escalated" / "store"
            wait_until(lambda: saved.is_dir() and any(saved.glob("*.json")), timeout=30)  # answers arrive after the clip
        finally:
            monitor.stop()
    finally:
        broker.stop()
        server.stop()
    assert server.received and not server.problems
    assert list((tmp_path / "escalated" / "store").glob("*.jpg"))
    out = tmp_path / "export"
    assert main(["dataset", "export", "--config", str(config_path), "--out", str(out), "--include-disagreements"]) == 0
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "ice_bag"}
    tuned = tmp_path / "tuned.pt"
    assert main(["train", "--data", str(out / "data.yaml"), "--model", str(MODEL), "--out", str(tuned), "--epochs", "1",
                 "--imgsz", "160", "--batch", "4", "--device", "cpu", "--runs", str(tmp_path / "runs")]) == 0
    assert "mAP50 " in capsys.readouterr().out
    from ultralytics import YOLO

    assert YOLO(str(tuned)).names == {0: "ice_bag"}
