"""The command line: every command's arguments, how errors are reported, and the exit codes (2: bad input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest
from conftest import ROOT, street_config, write_config

from monitor import __version__
from monitor.cli import EXIT_CONFIG, build_parser, describe_engines
from monitor.cli import main as cli_main

PARSED = [
    (["run"], {"command": "run", "config": "config.yaml", "log_level": None}),
    (["run", "-c", "site.yaml", "--log-level", "DEBUG"], {"command": "run", "config": "site.yaml", "log_level": "DEBUG"}),
    (["check"], {"command": "check", "config": "config.yaml", "no_models": False}),
    (["check", "--config", "site.yaml", "--no-models"], {"command": "check", "config": "site.yaml", "no_models": True}),
    (
        ["snapshot", "--camera", "street"],
        {"command": "snapshot", "config": "config.yaml", "camera": "street", "out": None, "skip": 0, "grid": 0},
    ),
    (
        ["snapshot", "-c", "s.yaml", "--camera", "door", "-o", "d.jpg", "--skip", "25", "--grid", "50"],
        {"command": "snapshot", "config": "s.yaml", "camera": "door", "out": "d.jpg", "skip": 25, "grid": 50},
    ),
    (
        ["dataset", "export", "--out", "ds"],
        {"command": "dataset", "dataset_command": "export", "config": "config.yaml", "out": "ds", "val_fraction": 0.2,
         "include_disagreements": False},
    ),
    (
        ["dataset", "export", "-c", "s.yaml", "-o", "ds", "--val-fraction", "0.1", "--include-disagreements"],
        {"command": "dataset", "dataset_command": "export", "config": "s.yaml", "out": "ds", "val_fraction": 0.1,
         "include_disagreements": True},
    ),
    (
        ["dataset", "import", "--images", "frames", "--names", "ice_bag", "--names", "cart,box", "-o", "ds"],
        {"command": "dataset", "dataset_command": "import", "images": "frames", "labels": None, "names": ["ice_bag", "cart,box"],
         "out": "ds", "val_fraction": 0.2},
    ),
    (
        ["train", "--data", "d.yaml", "--model", "m.pt", "--out", "site.pt"],
        {"command": "train", "data": "d.yaml", "model": "m.pt", "out": "site.pt", "epochs": 30, "imgsz": None, "workers": 0,
         "patience": 50, "amp": False, "runs": "runs", "device": "auto", "batch": 16, "threads": None},
    ),
    (
        ["train", "--data", "d.yaml", "--model", "m.yaml", "-o", "s.pt", "--epochs", "1", "--imgsz", "160", "--workers", "2",
         "--patience", "5", "--amp", "--runs", "r", "--device", "cpu", "--batch", "4", "--threads", "1"],
        {"command": "train", "data": "d.yaml", "model": "m.yaml", "out": "s.pt", "epochs": 1, "imgsz": 160, "workers": 2,
         "patience": 5, "amp": True, "runs": "r", "device": "cpu", "batch": 4, "threads": 1},
    ),
    (
        ["clear-retained", "--camera", "dock", "--camera", "gate", "--dry-run"],
        {"command": "clear-retained", "config": "config.yaml", "camera": ["dock", "gate"], "removed": False, "dry_run": True,
         "force": False},
    ),
    (
        ["clear-retained", "-c", "site.yaml", "--removed", "--force"],
        {"command": "clear-retained", "config": "site.yaml", "camera": None, "removed": True, "dry_run": False, "force": True},
    ),
    (
        ["evaluate", "--model", "m.pt", "--data", "d.yaml"],
        {"command": "evaluate", "model": "m.pt", "data": "d.yaml", "imgsz": None, "json": None, "device": "auto", "batch": 16,
         "threads": None},
    ),
    (
        ["generate", "dataset", "out"],
        {"command": "generate", "generate_command": "dataset", "out_dir": "out", "train": 1200, "val": 200, "seed": 0,
         "imgsz": 640, "width": 640, "height": 480},
    ),
    (
        ["generate", "clip", "c.avi", "--seed", "4", "--frames", "20", "--fps", "5", "--width", "320", "--height", "240"],
        {"command": "generate", "generate_command": "clip", "out": "c.avi", "seed": 4, "frames": 20, "fps": 5.0,
         "width": 320, "height": 240},
    ),
]


@pytest.mark.parametrize("argv, expected", PARSED, ids=[" ".join(argv[:2]) + f" {i}" for i, (argv, _) in enumerate(PARSED)])
def test_arguments_parse_to_the_expected_namespace(argv, expected):
    assert vars(build_parser().parse_args(argv)) == expected


@pytest.mark.parametrize(
    "argv",
    [[], ["snapshot"], ["dataset"], ["dataset", "import", "--images", "i", "--out", "o"], ["train", "--data", "d"],
     ["generate"], ["check", "--skip", "1"], ["snapshot", "--camera", "c", "--skip", "many"], ["clear-retained"],
     ["clear-retained", "--camera", "c", "--removed"]],
)
def test_bad_command_lines_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == EXIT_CONFIG == 2
    assert "usage: monitor" in capsys.readouterr().err


def test_version_through_python_m_monitor():
    result = subprocess.run([sys.executable, "-m", "monitor", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0 and result.stdout == f"monitor {__version__}\n"


def bad_config(tmp_path):
    data = street_config(1883)
    data["mqtt"]["port"] = 0
    data["cameras"]["street"]["fps"] = -1
    return write_config(tmp_path, data)


def test_check_on_a_bad_config_exits_2_and_prints_one_key_path_line_per_problem(tmp_path, capsys):
    path = bad_config(tmp_path)
    assert cli_main(["check", "--no-models", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and lines[0] == f"config error in {path}:"
    assert [line.split(":")[0] for line in lines[1:]] == ["  mqtt.port", "  cameras.street.fps"]
    assert all(line.startswith("  ") and ": " in line for line in lines[1:])


def test_check_of_a_good_config_without_models(tmp_path, capsys):
    path = write_config(tmp_path, street_config(1883))
    assert cli_main(["check", "--no-models", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (1 cameras, 1 models)\n"


def test_snapshot_of_an_unknown_camera_exits_2_naming_the_configured_ones(tmp_path, capsys):
    path = write_config(tmp_path, street_config(1883))
    assert cli_main(["snapshot", "--config", str(path), "--camera", "door", "--out", str(tmp_path / "x.jpg")]) == 2
    assert capsys.readouterr().err == "unknown camera 'door' (configured: street)\n"
    assert not (tmp_path / "x.jpg").exists()


def test_commands_report_a_bad_config_the_same_way(tmp_path, capsys):
    path = bad_config(tmp_path)
    for argv in (["run"], ["snapshot", "--camera", "street"], ["dataset", "export", "--out", str(tmp_path / "ds")],
                 ["clear-retained", "--camera", "street"]):
        assert cli_main([*argv, "--config", str(path)]) == 2, argv
        assert capsys.readouterr().err.startswith(f"config error in {path}:\n  mqtt.port: "), argv


@pytest.mark.parametrize(
    "make_args",
    [
        lambda tmp: ["--images", str(tmp / "missing"), "--names", "bag"],
        lambda tmp: ["--images", str(tmp), "--names", " , "],
        lambda tmp: ["--images", str(tmp), "--names", "bag", "--val-fraction", "1"],
    ],
    ids=["images-not-a-folder", "no-names", "val-fraction-1"],
)
def test_dataset_import_usage_errors_exit_2(make_args, tmp_path, capsys):
    assert cli_main(["dataset", "import", *make_args(tmp_path), "--out", str(tmp_path / "ds")]) == 2
    assert "dataset import: --images must be a folder, --names non-empty, --val-fraction in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_dataset_export_refuses_a_val_fraction_of_1(tmp_path, capsys):
    data = street_config(1883)
    data["escalation"] = {"base_url": "http://127.0.0.1:9/v1", "dataset": {"dir": "escalated"}}
    path = write_config(tmp_path, data)
    assert cli_main(["dataset", "export", "--config", str(path), "--out", str(tmp_path / "ds"), "--val-fraction", "1"]) == 2
    assert "--val-fraction must be in [0, 1)" in capsys.readouterr().err


def test_generate_clip_writes_a_small_video_and_its_ground_truth(tmp_path, capsys):
    clip = tmp_path / "clips" / "ice.avi"
    assert cli_main(["generate", "clip", str(clip), "--frames", "6", "--fps", "5", "--width", "160", "--height", "120"]) == 0
    assert capsys.readouterr().out == f"{clip.with_suffix('.json')}\n"
    capture = cv2.VideoCapture(str(clip))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    assert len(frames) == 6 and frames[0].shape == (120, 160, 3)
    truth = json.loads(clip.with_suffix(".json").read_text())
    assert (truth["video"], truth["fps"], truth["width"], truth["height"]) == ("ice.avi", 5.0, 160, 120)
    assert [f["frame"] for f in truth["frames"]] == list(range(6))


def test_cli_writes_dataset_and_clip(tmp_path):
    assert cli_main(["generate", "dataset", str(tmp_path / "ds"), "--train", "2", "--val", "1", "--imgsz", "160"]) == 0
    assert (tmp_path / "ds" / "data.yaml").exists()
    assert len(list((tmp_path / "ds" / "images" / "train").glob("*.jpg"))) == 2
    assert cli_main(["generate", "clip", str(tmp_path / "c.avi"), "--frames", "4", "--seed", "3"]) == 0
    assert len(json.loads((tmp_path / "c.json").read_text())["frames"]) == 4


def test_check_names_an_export_only_where_one_was_built():
    def detector(engine: str, why: str, given: str, loaded: str | None):
        config = SimpleNamespace(path=Path(given))
        return SimpleNamespace(engine=SimpleNamespace(engine=engine, why=why), device="cpu", config=config,
                               model_path=None if loaded is None else Path(loaded))

    monitor = SimpleNamespace(detectors={
        "built": detector("openvino", "auto", "m.pt", "/cache/engines/m-1_openvino_model"),
        "given": detector("openvino", "auto: the file is already an export", "m_openvino_model", "m_openvino_model"),
        "plain": detector("pytorch", "configured", "m.pt", "m.pt"),
        "served": detector("triton", "served by Triton", "", None),
    })
    assert describe_engines(monitor) == [
        "model built: engine openvino on cpu (auto); export ready in /cache/engines/m-1_openvino_model",
        "model given: engine openvino on cpu (auto: the file is already an export)",
        "model plain: engine pytorch on cpu (configured)",
        "model served: engine triton on cpu (served by Triton)",
    ]
