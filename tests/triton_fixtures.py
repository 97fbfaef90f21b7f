"""Shared by the Triton tests: a Python-backend model repository made by the real `monitor triton-repo`, the
PyPI Triton server serving it, and a monitor config whose model is served by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.triton import TritonNotInstalled, TritonServer
from monitor.cli import main as monitor_main

EXPORT_IMGSZ = 640  # the export the benchmarks and the repository share (cached next to the model); the graph takes any size
CLIENT_IMGSZ = 320  # what the tests' monitors ask for: small, these tests check behaviour
MAX_BATCH = 16


def write_python_repository(out: Path, model: Path, name: str, *extra: str) -> Path:
    """A model folder for the PyPI server (ONNX Runtime in the Python backend), written by the real command."""
    code = monitor_main([
        "triton-repo", "--model", str(model), "--out", str(out), "--name", name, "--backend", "python",
        "--imgsz", str(EXPORT_IMGSZ), "--max-batch", str(MAX_BATCH), "--threads", "1", *extra,
    ])  # fmt: skip
    assert code == 0
    return out / name


def start_server(repository: Path, workdir: Path) -> TritonServer:
    try:
        return TritonServer(repository, workdir).start()
    except TritonNotInstalled as exc:
        pytest.fail(str(exc))


def triton_model(url: str, model: str = "person-fall", **triton) -> dict:
    """A ``models.person`` entry served by Triton, with the bundled thresholds and aliases."""
    return {
        "triton": {"url": url, "model": model, **triton},
        "imgsz": CLIENT_IMGSZ,
        "conf": 0.35,
        "class_conf": {"Fall": 0.6},
        "aliases": {"Normal": "person", "Fall": "person"},
    }
