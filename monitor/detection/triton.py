"""A model served by NVIDIA Triton Inference Server (``models.<name>.triton``) instead of a local file.

The camera threads letterbox their frames as for a local model; the inference worker sends each batch as
one uint8 NHWC tensor (a quarter of float32's bytes), the model in the repository that ``monitor
triton-repo`` writes converts colour, layout and scale itself, and the raw predictions come back through
the monitor's own NMS and box mapping (``Detector.nms``, ``Detector.read_back``): the same boxes as a
local run of the same model. Triton batches the requests of every camera host (dynamic batching).

Start-up checks the server and the model and reads the class names and stride from the model's config
(``parameters``); any problem is an error naming the URL and model, or with ``wait_at_start`` a wait.
At run time a failed request is a ``TritonError``: the worker counts it and the cameras of the model
go stale until requests succeed again (gRPC reconnects by itself; its backoff is capped at a few seconds).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from monitor.config import ModelConfig, TritonConfig
from monitor.detection.detector import Detector, ModelLoadError
from monitor.detection.engines import EngineChoice
from monitor.detection.preprocess import LetterboxSpec, PreparedImage
from monitor.frame import Boxes

log = logging.getLogger(__name__)

WAIT_RETRY_S = 2.0
WAIT_LOG_EVERY_S = 30.0


class TritonError(Exception):
    """The server cannot be reached, or the model cannot be used; the message names the URL and model."""


@dataclass(frozen=True)
class ServedModel:
    """What the server says about the model: its tensors, the largest batch, and the YOLO facts the monitor needs."""

    input_name: str
    output_name: str
    max_batch_size: int
    class_names: list[str]
    stride: int


class TritonDetector(Detector):
    """A Detector whose model runs on a Triton server: the letterbox, NMS and box mapping stay on this host.

    Nothing is loaded here, so ``Detector.__init__`` is not called; the rest of the Detector (prepare,
    predict, infer by input shape, nms, read_back) is shared. Several batches may be in flight (one per
    camera, at most ``parallel_batches``): Triton queues and batches them with the other hosts' requests.
    """

    parallel_batches = 32

    def __init__(self, name: str, config: ModelConfig):
        self.name = name
        self.config = config
        self.device, self.half, self.is_pytorch, self.model = "triton", False, False, None
        self.server = TritonModel(name, config)
        self.engine = EngineChoice("triton", "configured", f"served by Triton at {self.server.where}")
        self.model_path, self.threads = None, None
        self._know_classes(self.server.served.class_names)
        self.input = LetterboxSpec(config.imgsz, self.server.served.stride, rectangular=True)

    def use_cpu(self) -> None:
        """A CUDA error in a served model is the server's to handle."""

    def _end2end(self) -> bool:
        return False

    def _infer_batch(self, prepared: list[PreparedImage]) -> list[Boxes]:
        import torch

        raw = self.server.infer(np.stack([item.pixels for item in prepared]))
        with torch.inference_mode():
            return self.read_back(self.nms(torch.from_numpy(raw)), prepared)


class TritonModel:
    """One model on one Triton server: checked at start, then a batch of frames in, raw predictions out."""

    def __init__(self, name: str, config: ModelConfig):
        self.key = f"models.{name}.triton"
        self.settings: TritonConfig = config.triton
        self.where = f"{self.settings.url} model {self.settings.model!r}" + (
            f" version {self.settings.version}" if self.settings.version else ""
        )
        try:
            self.calls = protocol_calls(self.settings)
        except ImportError:
            raise ModelLoadError(f"{self.key}: needs the tritonclient package (pip install 'camera-monitor[triton]')") from None
        self.sent_bytes = self.received_bytes = 0  # tensor bytes of the requests and answers
        self._lock = threading.Lock()
        self.served = self._served_when_ready()
        if config.max_batch > self.served.max_batch_size:
            raise ModelLoadError(
                f"models.{name}.max_batch: {config.max_batch} is more than the max_batch_size "
                f"{self.served.max_batch_size} of {self.where}"
            )

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """(n, h, w, 3) uint8 letterboxed BGR frames -> the model's raw output for each."""
        try:
            raw = self.calls.infer(self.served.input_name, pixels, self.served.output_name)
        except Exception as exc:  # the client raises many kinds: refused, deadline, unknown model, server errors
            raise TritonError(f"{self.where}: {exc}") from exc
        with self._lock:
            self.sent_bytes += pixels.nbytes
            self.received_bytes += raw.nbytes
        return raw

    def _served_when_ready(self) -> ServedModel:
        started = next_log = time.monotonic()
        while True:
            try:
                return self._served()
            except TritonError as exc:
                if not self.settings.wait_at_start:
                    raise ModelLoadError(f"{self.key}: {exc}") from None
                now = time.monotonic()
                if now >= next_log:
                    log.warning("%s: waiting for Triton (%.0f s so far): %s", self.key, now - started, exc)
                    next_log = now + WAIT_LOG_EVERY_S
                time.sleep(WAIT_RETRY_S)

    def _served(self) -> ServedModel:
        """The model's description, after checking that the server answers and the model is ready."""
        try:
            live = self.calls.live()
        except Exception as exc:
            raise TritonError(f"no Triton server answers at {self.settings.url} (for model {self.settings.model!r}): {exc}") from None
        if not live:
            raise TritonError(f"the Triton server at {self.settings.url} is not live (for model {self.settings.model!r})")
        try:
            ready = self.calls.model_ready()
            if not ready:
                raise TritonError(f"{self.where} is not ready; {self._repository_states()}")
            return describe(self.calls.metadata(), self.calls.model_config(), self.where)
        except TritonError:
            raise
        except Exception as exc:
            raise TritonError(f"{self.where}: {exc}") from None

    def _repository_states(self) -> str:
        try:
            models = self.calls.repository_index()
        except Exception:  # the index is only a hint for the error message
            return "the server did not list its models"
        listed = [f"{m.get('name')} {m.get('version', '')} {m.get('state', '')} {m.get('reason', '')}".strip() for m in models]
        return "the server has: " + ("; ".join(listed) if listed else "no models")


def describe(metadata: dict, config: dict, where: str) -> ServedModel:
    """Check that the model takes uint8 NHWC frames and gives float32 raw predictions; read names and stride."""
    inputs, outputs = metadata.get("inputs", []), metadata.get("outputs", [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise TritonError(f"{where}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    (source,), (output,) = inputs, outputs
    shape = [int(d) for d in source.get("shape", [])]
    if source.get("datatype") != "UINT8" or len(shape) != 4 or shape[-1] != 3:
        raise TritonError(
            f"{where}: its input {source.get('name')!r} is {source.get('datatype')} {shape}; the monitor sends uint8 "
            "NHWC frames [batch, height, width, 3] (make the repository with `monitor triton-repo`)"
        )
    if output.get("datatype") != "FP32" or len(output.get("shape", [])) != 3:
        raise TritonError(f"{where}: its output {output.get('name')!r} is {output.get('datatype')} {output.get('shape')}; "
                          "expected FP32 [batch, 4 + classes, anchors]")  # fmt: skip
    parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    try:
        names = json.loads(parameters["names"])
        stride = int(parameters.get("stride", "32"))
    except (KeyError, ValueError):
        raise TritonError(f"{where}: its config has no class names (parameters.names; made by `monitor triton-repo`)") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise TritonError(f"{where}: parameters.names must be a JSON list of class names, got {parameters['names']!r}")
    return ServedModel(source["name"], output["name"], int(config.get("max_batch_size", 0)), names, stride)


def protocol_calls(settings: TritonConfig):
    """The calls this module makes, over gRPC or HTTP (tritonclient's two clients differ in small ways)."""
    return GrpcCalls(settings) if urlsplit(settings.url).scheme == "grpc" else HttpCalls(settings)


def _address(settings: TritonConfig, default_port: int) -> str:
    parts = urlsplit(settings.url)
    return f"{parts.hostname}:{parts.port or default_port}"


class GrpcCalls:
    # reconnect within seconds after an outage (gRPC's own backoff grows to two minutes)
    CHANNEL_RETRY = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.min_reconnect_backoff_ms", 500),
                     ("grpc.max_reconnect_backoff_ms", 4000)]  # fmt: skip

    def __init__(self, settings: TritonConfig):
        import tritonclient.grpc as grpcclient

        self.module = grpcclient
        self.settings = settings
        self.version = str(settings.version or "")
        self.timeout = settings.timeout_s
        largest = 2**31 - 1  # giving channel arguments replaces the client's defaults, message sizes included
        self.client = grpcclient.InferenceServerClient(
            _address(settings, 8001),
            channel_args=[("grpc.max_send_message_length", largest), ("grpc.max_receive_message_length", largest),
                          ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                          *self.CHANNEL_RETRY],
        )  # fmt: skip

    def live(self) -> bool:
        return self.client.is_server_live(client_timeout=self.timeout)

    def model_ready(self) -> bool:
        return self.client.is_model_ready(self.settings.model, self.version, client_timeout=self.timeout)

    def metadata(self) -> dict:
        return self.client.get_model_metadata(self.settings.model, self.version, as_json=True, client_timeout=self.timeout)

    def model_config(self) -> dict:
        return self.client.get_model_config(self.settings.model, self.version, as_json=True, client_timeout=self.timeout)["config"]

    def repository_index(self) -> list[dict]:
        return self.client.get_model_repository_index(as_json=True, client_timeout=self.timeout).get("models", [])

    def infer(self, input_name: str, pixels: np.ndarray, output_name: str) -> np.ndarray:
        tensor = self.module.InferInput(input_name, list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        wanted = [self.module.InferRequestedOutput(output_name)]
        answer = self.client.infer(self.settings.model, [tensor], self.version, outputs=wanted, client_timeout=self.timeout)
        return answer.as_numpy(output_name).copy()  # a writable array: the view of the answer's buffer is read-only


class HttpCalls:
    """tritonclient.http is gevent-based: a client may only be used by the thread that made it, so one per thread."""

    def __init__(self, settings: TritonConfig):
        import tritonclient.http as httpclient

        self.module = httpclient
        self.settings = settings
        self.version = str(settings.version or "")
        self._per_thread = threading.local()

    @property
    def client(self):
        client = getattr(self._per_thread, "client", None)
        if client is None:
            timeout = self.settings.timeout_s
            client = self.module.InferenceServerClient(
                _address(self.settings, 8000), connection_timeout=timeout, network_timeout=timeout
            )
            self._per_thread.client = client
        return client

    def live(self) -> bool:
        return self.client.is_server_live()

    def model_ready(self) -> bool:
        return self.client.is_model_ready(self.settings.model, self.version)

    def metadata(self) -> dict:
        return self.client.get_model_metadata(self.settings.model, self.version)

    def model_config(self) -> dict:
        return self.client.get_model_config(self.settings.model, self.version)

    def repository_index(self) -> list[dict]:
        return self.client.get_model_repository_index()

    def infer(self, input_name: str, pixels: np.ndarray, output_name: str) -> np.ndarray:
        tensor = self.module.InferInput(input_name, list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels, binary_data=True)
        wanted = [self.module.InferRequestedOutput(output_name, binary_data=True)]
        answer = self.client.infer(self.settings.model, [tensor], self.version, outputs=wanted)
        return answer.as_numpy(output_name).copy()  # a writable array: the view of the answer's buffer is read-only
