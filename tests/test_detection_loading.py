"""Which detector a model gets: a local file is loaded here, a ``triton`` entry goes to its server (nothing loaded
locally); every model's load problem is reported at once, each named by its key."""

from __future__ import annotations

import pytest
from conftest import free_port
from detection_support import model_config

from monitor.config import ConfigError, ModelConfig
from monitor.detection import Detector, ModelLoadError, build_detector, load_detectors
from monitor.detection.triton import TritonDetector


def unreachable() -> dict:
    return {"url": f"grpc://127.0.0.1:{free_port()}", "model": "person-fall", "timeout_s": 1}


def test_a_model_file_gets_the_local_detector(person_model):
    detector = build_detector("person", model_config(person_model))
    assert type(detector) is Detector and detector.device == "cpu" and detector.parallel_batches == 1


def test_a_triton_entry_goes_to_the_server_and_loads_nothing_here():
    triton = unreachable()
    with pytest.raises(ModelLoadError, match=rf"^models\.person\.triton: no Triton server answers at {triton['url']}"):
        build_detector("person", ModelConfig(triton=triton))
    assert TritonDetector.parallel_batches > 1  # one request per camera in flight: the server batches them


def test_every_models_problem_is_reported_together(tmp_path):
    triton = unreachable()
    models = {"local": ModelConfig(path=tmp_path / "missing.pt"), "served": ModelConfig(triton=triton), "unused": ModelConfig(path=tmp_path / "x.pt")}
    with pytest.raises(ConfigError) as error:
        load_detectors(models, {"local": 1, "served": 1}, tmp_path / "cache")
    local, served = error.value.problems
    assert local == f"models.local.path: file not found: {tmp_path / 'missing.pt'}"
    assert served.startswith(f"models.served.triton: no Triton server answers at {triton['url']} (for model 'person-fall')")
