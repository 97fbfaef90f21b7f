"""Which detector a model gets: a local model file (``Detector``) or a model served by Triton (``TritonDetector``)."""

from __future__ import annotations

from monitor.config import ConfigError, ModelConfig
from monitor.detection.detector import Detector, ModelLoadError
from monitor.detection.triton import TritonDetector


def build_detector(name: str, config: ModelConfig) -> Detector:
    return TritonDetector(name, config) if config.triton else Detector(name, config)


def load_detectors(models: dict[str, ModelConfig], used: set[str]) -> dict[str, Detector]:
    """Load every model a camera uses; all load errors are reported together."""
    detectors, problems = {}, []
    for name in sorted(used):
        try:
            detectors[name] = build_detector(name, models[name])
        except ModelLoadError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(problems)
    return detectors
