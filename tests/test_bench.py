"""The benchmark scripts: each one imports, and the stage breakdown runs end to end on a tiny setting."""

from __future__ import annotations

import importlib
import json

import pytest

import bench.report
import bench.run
import bench.stages


@pytest.mark.parametrize("name", ["run", "motion", "soak", "escalation", "stages", "events", "defaults"])
def test_every_benchmark_imports(name):
    assert callable(importlib.import_module(f"bench.{name}").main)


@pytest.fixture(scope="module")
def clip_720p(tmp_path_factory, clip):
    return bench.run.make_720p_clip(clip, tmp_path_factory.mktemp("clips") / "720p.mp4")


def test_stage_breakdown_measures_every_batch_on_720p(tmp_path, monkeypatch, person_model, clip, clip_720p, capsys):
    monkeypatch.setattr(bench.report, "RESULTS", tmp_path)
    monkeypatch.setattr(bench.run, "CLIP_720P", clip_720p)
    argv = ["--batches", "1,3", "--imgsz", "160", "--frames", "6", "--repeats", "1", "--device", "cpu",
            "--model", str(person_model), "--clip", str(clip)]  # fmt: skip
    assert bench.stages.main(argv) == 0
    report = json.loads((tmp_path / "stages-latest.json").read_text())
    assert report["host"]["decode"]["frames"] == 6 and report["host"]["decode"]["shape"] == [720, 1280, 3]
    assert report["device"] == "cpu" and report["pinned_host_buffers"] is False
    rows = report["batches"]
    assert [row["batch"] for row in rows] == [1, 3]
    for row in rows:
        assert row["input_shape"] == [96, 160]  # 16:9 into 160: the minimum rectangle, not the square
        assert row["monitor_fps"] == pytest.approx(row["batch"] * 1000 / row["monitor_ms"])
        assert row["streams_by_inference"] == pytest.approx(row["monitor_fps"] / 10)
        assert 0 < row["model_ms"] < row["monitor_ms"] * 3
    assert "| batch | input" in capsys.readouterr().out


def test_realtime_run_reports_whether_each_camera_is_kept_up_with(tmp_path, monkeypatch, clip_720p):
    monkeypatch.setattr(bench.run, "RESULTS", tmp_path)
    argv = ["--clip", str(clip_720p), "--realtime", "--cameras", "2", "--modes", "predict", "--frames", "10",
            "--imgsz", "160", "--repeats", "1"]  # fmt: skip
    assert bench.run.main(argv) == 0
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["settings"]["realtime"] is True
    run = next(r for r in report["runs"] if r["mode"] == "monitor-2")
    assert run["source_fps"] == pytest.approx(10.0)
    assert run["fps_per_camera"] == pytest.approx(run["fps"] / 2, abs=0.01)
    assert run["kept_up"] == (run["fps_per_camera"] >= 9.5)
    assert report["summary"]["monitor-2"]["kept_up"] is run["kept_up"]
    # the demo's figure: the share of the captured frames that a newer frame replaced before the model took them
    assert run["captured"] >= run["frames"] and run["dropped_share"] == round(run["dropped"] / run["captured"], 4)
    assert run["engine"] == "openvino" and report["summary"]["predict"]["fps_vs_fastest"] <= 1.0


def test_motion_benchmark_gates_a_frozen_stretch_with_the_same_counts(tmp_path, monkeypatch):
    import bench.motion

    monkeypatch.setattr(bench.report, "RESULTS", tmp_path)
    assert bench.motion.main(["--busy", "4", "--still", "24", "--imgsz", "160", "--clips", "frozen"]) == 0
    (row,) = json.loads((tmp_path / "motion-latest.json").read_text())["clips"]
    assert row["frames"] == 24 and row["calls_without_gate"] == 24
    assert row["calls_with_gate"] == 2  # the first frame, then the keep-alive after 2 s (20 frames) of stillness
    assert row["counts_identical"] is True


def test_events_benchmark_counts_the_starts_of_an_intrusion_rule(tmp_path, monkeypatch):
    import bench.events

    monkeypatch.setattr(bench.report, "RESULTS", tmp_path)
    assert bench.events.main(["--zones", "path", "--every", "1,2", "--frames", "40", "--imgsz", "320"]) == 0
    runs = json.loads((tmp_path / "events-latest.json").read_text())["runs"]
    assert [run["every"] for run in runs] == [1, 2] and runs[0]["video_s"] == pytest.approx(4.0)
    for run in runs:  # people walk on the path from the first frame on
        assert run["starts"] >= 1 and run["starts_per_min"] == pytest.approx(run["starts"] / run["video_s"] * 60, abs=0.1)
        assert 0 <= run["untracked_starts"] <= run["starts"] and run["median_duration_s"] > 0

