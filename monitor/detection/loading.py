"""Which detector a model gets: a local model file (``Detector``) or a model served by Triton (``TritonDetector``)."""

from __future__ import annotations

from pathlib import Path

from monitor.config import ConfigError, ModelConfig
from monitor.detection.detector import Detector, ModelLoadError
from monitor.detection.triton import TritonDetector


def build_detector(name: str, config: ModelConfig, cache_dir: Path | None = None, cameras: int = 1) -> Detector:
    return TritonDetector(name, config) if config.triton else Detector(name, config, cache_dir, cameras)


def load_detectors(models: dict[str, ModelConfig], cameras_per_model: dict[str, int], cache_dir: Path | None) -> dict[str, Detector]:
    """Load every model a camera uses; all load errors are reported together."""
    detectors, problems = {}, []
    for name in sorted(cameras_per_model):
        try:
            detectors[name] = build_detector(name, models[name], cache_dir, cameras_per_model[name])
        except ModelLoadError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(problems)
    return detectors
