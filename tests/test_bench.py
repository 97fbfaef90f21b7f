"""The benchmark scripts: each one imports, and the stage breakdown runs end to end on a tiny setting."""

from __future__ import annotations

import importlib
import json

import pytest

import bench.report
import bench.stages


@pytest.mark.parametrize("name", ["run", "motion", "soak", "escalation", "stages"])
def test_every_benchmark_imports(name):
    assert callable(importlib.import_module(f"bench.{name}").main)


def test_stage_breakdown_measures_every_batch_on_720p(tmp_path, monkeypatch, person_model, clip, capsys):
    monkeypatch.setattr(bench.report, "RESULTS", tmp_path)
    monkeypatch.setattr(bench.stages, "CLIP_720P", tmp_path / "720p.mp4")
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
