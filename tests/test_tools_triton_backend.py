"""The model.py that `monitor triton-repo --backend python` writes (monitor/tools/triton_backend.py), on its own:
the requests Triton's dynamic batcher hands it run as one batch per image size, and each request gets its own
rows back. Triton's ``triton_python_backend_utils`` exists only inside the server, so a stand-in provides its three
calls here; the ONNX graph is real and run by ONNX Runtime. (The whole path, in the real server: test_detection_triton.py.)"""

from __future__ import annotations

import importlib
import json
import sys
import types

import numpy as np
import pytest


class Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class InferenceResponse:
    def __init__(self, tensors: list[Tensor]):
        self.tensors = tensors


@pytest.fixture
def backend(monkeypatch):
    utils = types.SimpleNamespace(
        Tensor=Tensor, InferenceResponse=InferenceResponse,
        get_input_tensor_by_name=lambda request, name: request[name],
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    monkeypatch.delitem(sys.modules, "monitor.tools.triton_backend", raising=False)
    return importlib.import_module("monitor.tools.triton_backend")


def mean_per_frame_model(path) -> None:
    """A real ONNX graph with the served models' interface: uint8 NHWC ``images`` in, one float row per frame out."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["as_float"], ["output0"], axes=[1, 2, 3], keepdims=0)],
        "mean", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", "h", "w", 3])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch"])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_requests_of_two_image_sizes_each_get_their_own_rows(backend, tmp_path):
    (tmp_path / "1").mkdir()
    mean_per_frame_model(tmp_path / "1" / "model.onnx")
    config = {"input": [{"name": "images"}], "output": [{"name": "output0"}],
              "parameters": {"intra_op_thread_count": {"string_value": "1"}}}  # fmt: skip
    model = backend.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1"})
    assert model.session.get_session_options().intra_op_num_threads == 1 and model.delay_s == 0
    frames = [np.full((2, 4, 5, 3), 10, np.uint8), np.full((1, 6, 5, 3), 20, np.uint8), np.full((3, 4, 5, 3), 30, np.uint8)]
    frames[2][1] = 31
    responses = model.execute([{"images": Tensor("images", f)} for f in frames])
    rows = [response.tensors[0].as_numpy() for response in responses]
    assert [r.tolist() for r in rows] == [[10, 10], [20], [30, 31, 30]]
    assert all(response.tensors[0].name == "output0" for response in responses)
