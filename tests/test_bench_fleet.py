"""`python -m bench.run --fleet`: K monitor processes against their own models and against one Triton server, end to
end on a tiny setting; the figures are there and the wire carries uint8 frames."""

from __future__ import annotations

import json

import bench.run


def test_fleet_mode_compares_local_models_with_one_triton_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.run, "RESULTS", tmp_path)
    assert bench.run.main(["--fleet", "1x2", "--frames", "6", "--imgsz", "160", "--repeats", "1"]) == 0
    report = json.loads((tmp_path / "latest.json").read_text())
    assert [run["mode"] for run in report["runs"]] == ["local-1x2", "triton-1x2"]  # --fleet alone: nothing else
    local, triton = (report["summary"][mode] for mode in ("local-1x2", "triton-1x2"))
    for row in (local, triton):
        assert row["hosts"] == 1 and row["frames"] >= 12 and row["fps"] > 0 and row["cpu_s_per_frame"] > 0
        assert row["latency_p99_ms"] >= row["latency_p50_ms"] > 0
    assert triton["fps_vs_local"] > 0 and triton["server_cpu_s_per_frame"] > 0 and triton["triton_batch_mean"] >= 1
    # 768x576 into 160: a 160x128 letterbox, 61,440 bytes of uint8 in; about 10 KB of predictions back
    assert 60 <= triton["wire_kb_per_frame"] < 90  # float32 frames alone would be 240 KB
    assert "wire KB/frame" in capsys.readouterr().out
