"""The model.py of a Triton Python-backend model that `monitor triton-repo --backend python` writes.

It runs inside Triton's Python-backend stub (in the server's Python environment, which needs numpy and
onnxruntime), never in the monitor: ``model.onnx`` beside it, run by ONNX Runtime on the CPU. Triton's
dynamic batcher hands ``execute`` several requests at once; their frames run as one batch (per image
size) and each request gets its own rows back.

Parameters from config.pbtxt: ``intra_op_thread_count`` (ONNX Runtime threads; 0 or absent: its default)
and ``delay_ms`` (added time per batch, to rehearse a slow server).
"""

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_thread_count", "0"))
        options.inter_op_num_threads = 1
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]
        self.delay_s = float(parameters.get("delay_ms", "0")) / 1000

    def execute(self, requests):
        frames = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        by_shape = {}
        for index, batch in enumerate(frames):
            by_shape.setdefault(batch.shape[1:], []).append(index)
        outputs = [None] * len(requests)
        for indices in by_shape.values():
            joined = np.concatenate([frames[i] for i in indices])
            rows = self.session.run([self.output], {self.input: joined})[0]
            for index, part in zip(indices, np.split(rows, np.cumsum([len(frames[i]) for i in indices])[:-1])):
                outputs[index] = part
        if self.delay_s:
            time.sleep(self.delay_s)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(self.output, out)]) for out in outputs]
