"""`monitor triton-repo`: the repository for NVIDIA's Triton container. Its config.pbtxt parses as Triton's own
ModelConfig protobuf and matches the ONNX graph, and the graph on uint8 NHWC BGR frames gives exactly what the
exported model gives on the float input the monitor builds locally."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from triton_fixtures import EXPORT_IMGSZ, MAX_BATCH

from monitor.cli import main as monitor_main
from monitor.detection.engines import cached_path


@pytest.fixture(scope="module")
def repository(tmp_path_factory, person_model):
    out = tmp_path_factory.mktemp("repository")
    argv = ["triton-repo", "--model", str(person_model), "--out", str(out), "--imgsz", str(EXPORT_IMGSZ), "--max-batch", str(MAX_BATCH)]
    assert monitor_main(argv) == 0
    assert monitor_main(argv + ["--name", "person-trt", "--tensorrt", "--instances", "2"]) == 0
    return out


def parsed_config(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2  # Triton's model_config.proto, compiled

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def onnx_dims(value_info) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def test_config_parses_as_tritons_model_config_and_matches_the_onnx_graph(repository):
    import onnx
    from tritonclient.grpc import model_config_pb2 as pb

    folder = repository / "person-fall"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == ["1/model.onnx", "config.pbtxt"]
    config = parsed_config(folder / "config.pbtxt")
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    assert config.name == "person-fall" and config.backend == "onnxruntime" and config.max_batch_size == MAX_BATCH
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 2000
    (source,), (output,) = config.input, config.output
    (onnx_source,), (onnx_output,) = graph.input, graph.output
    assert (source.name, source.data_type) == (onnx_source.name, pb.TYPE_UINT8)
    assert onnx_source.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert list(source.dims) == onnx_dims(onnx_source)[1:] == [-1, -1, 3]  # NHWC, any size, batch dimension apart
    assert (output.name, output.data_type) == (onnx_output.name, pb.TYPE_FP32)
    assert onnx_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert list(output.dims) == onnx_dims(onnx_output)[1:]
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, pb.ModelInstanceGroup.KIND_GPU)]
    assert json.loads(config.parameters["names"].string_value) == ["Normal", "Fall"]
    assert config.parameters["stride"].string_value == "32"


def test_tensorrt_option_asks_onnxruntime_for_the_tensorrt_accelerator(repository):
    config = parsed_config(repository / "person-trt" / "config.pbtxt")
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert config.instance_group[0].count == 2


def test_the_graph_does_colour_layout_and_scaling_itself(repository, person_model, session_cache_dir, clip):
    import onnxruntime

    capture = cv2.VideoCapture(str(clip))
    frames = np.stack([cv2.resize(capture.read()[1], (320, 256)) for _ in range(2)])  # letterbox-sized BGR uint8
    capture.release()
    served = onnxruntime.InferenceSession(str(repository / "person-fall" / "1" / "model.onnx"))
    exported = onnxruntime.InferenceSession(str(cached_path(session_cache_dir, person_model, "onnx", "any", EXPORT_IMGSZ, MAX_BATCH, False)))
    as_the_monitor_uploads = frames[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255  # RGB, NCHW, 0-1
    (from_uint8,) = served.run(None, {"images": frames})
    (from_float,) = exported.run(None, {"images": np.ascontiguousarray(as_the_monitor_uploads)})
    assert from_uint8.shape == (2, 6, 1680)  # 4 box values and 2 class scores for each anchor of strides 8, 16, 32
    np.testing.assert_array_equal(from_uint8, from_float)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--model", "nope.pt"], "triton-repo: --model: no such file: nope.pt"),
        (["--backend", "python", "--tensorrt"], "triton-repo: --tensorrt: needs --backend onnxruntime and --kind gpu"),
    ],
)
def test_bad_arguments_are_named(tmp_path, capsys, person_model, extra, expected):
    argv = ["triton-repo", "--model", str(person_model), "--out", str(tmp_path), *extra]
    assert monitor_main(argv) == 2
    assert expected in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
