"""The whole configuration: MQTT, metrics, models, evidence, escalation, service, and the cameras."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator

from monitor.config.base import DAY_S, MAX_MB, LocatedError, Name, SecretSource, Strict, has_control_characters, topic_prefix
from monitor.config.camera import CameraConfig
from monitor.config.web import WebConfig

# --- MQTT and metrics -----------------------------------------------------------------------


class TlsConfig(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip hostname verification (testing only)")

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class OutboxConfig(Strict):
    """The durable store-and-forward outbox (monitor/outbox.py has the size policy)."""

    enabled: bool = True
    path: Path | None = Field(None, description="default: <state_dir>/outbox-<client_id>.sqlite")
    max_messages: int = Field(100_000, ge=100, le=100_000_000, description="hard limit; then count history, then the oldest events go")
    count_history: int = Field(1000, ge=1, le=1_000_000, description="unsent counts messages kept per topic")
    inflight: int = Field(100, ge=1, le=65535, description="messages handed to the broker before their PUBACK")
    synchronous: Literal["full", "normal"] = Field("full", description="full: survives power cuts")


class MqttConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "monitor"
    client_id: str = Field("monitor", max_length=128, description="also names the outbox file in state_dir")
    username: str | None = None
    password: SecretSource | None = None
    tls: TlsConfig | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(30, ge=5, le=3600)
    heartbeat_s: float = Field(30.0, gt=0, le=DAY_S)
    bare_topics: bool = Field(True, description="also publish each count as a bare integer on its own topic")
    bare_layout: Literal["count", "legacy"] = Field(
        "count",
        description="count: <prefix>/<camera>/count/<zone>/<class> (one filter, <prefix>/+/count/+/+, selects them all);"
        " legacy: <prefix>/<camera>/<zone>/<class>, deprecated, removed in the next release",
    )
    queue_size: int = Field(10000, ge=10, le=10_000_000)
    outbox: OutboxConfig = OutboxConfig()

    _prefix = field_validator("prefix")(classmethod(lambda cls, value: topic_prefix(value)))
    _host = field_validator("host")(classmethod(lambda cls, value: host_name(value)))

    @field_validator("client_id")
    @classmethod
    def _file_name_safe(cls, value: str) -> str:
        if not value or value in (".", "..") or any(c in value for c in "/\\") or has_control_characters(value):
            raise ValueError(f"{value!r}: expected a name without '/', '\\' or control characters (it names the outbox file in state_dir)")
        return value


def host_name(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value) or has_control_characters(value):
        raise ValueError(f"{value!r}: expected a host name or address")
    return value


class MetricsConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)

    _host = field_validator("host")(classmethod(lambda cls, value: host_name(value)))


# --- models ---------------------------------------------------------------------------------


class TritonConfig(Strict):
    """A model served by an NVIDIA Triton Inference Server (monitor/detection/triton.py), instead of a local file."""

    url: str = Field(description="grpc://host:8001 or http://host:8000")
    model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the model's name in Triton's repository")
    version: int | None = Field(None, ge=1, description="default: the version the server's policy picks")
    timeout_s: float = Field(5.0, gt=0, le=60, description="one request's deadline (also for reaching the server)")
    wait_at_start: bool = Field(False, description="server or model not ready at start: wait for it (default: an error)")

    @field_validator("url")
    @classmethod
    def _grpc_or_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("grpc", "http") or not parts.hostname or parts.path.strip("/") or parts.query:
            raise ValueError(f"expected grpc://host:port or http://host:port, got {value!r}")
        try:
            parts.port
        except ValueError:
            raise ValueError(f"bad port in {value!r}") from None
        return value


class ModelConfig(Strict):
    path: Path | None = Field(None, description="a local model file; or triton")
    triton: TritonConfig | None = Field(None, description="a model on a Triton Inference Server; or path")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|\d+|mps)$")
    half: bool | None = Field(None, description="FP16 inference; default: on for CUDA, off for CPU")
    imgsz: int = Field(640, ge=32, le=4096)
    conf: float = Field(0.25, ge=0, le=1, description="default confidence threshold per class")
    class_conf: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    iou: float = Field(0.5, gt=0, le=1)
    agnostic_nms: bool = Field(True, description="one box per object even when two classes overlap")
    aliases: dict[str, Name] = Field({}, description="report model class X as label Y")
    max_batch: int = Field(8, ge=1, le=256)
    batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    warmup: bool = True
    on_gpu_failure: Literal["cpu", "exit"] = Field("cpu", description="after a CUDA error: go on on the CPU, or exit for systemd")
    engine: Literal["auto", "pytorch", "none", "onnx", "openvino", "tensorrt"] = Field(
        "auto",
        description="auto: PyTorch (FP16) on CUDA, the OpenVINO export on a CPU when its runtime is installed, else PyTorch;"
        " pytorch (or none): the file as given; onnx, openvino, tensorrt: that export, built once in cache_dir",
    )
    threads: int | None = Field(
        None, ge=1, le=256,
        description="CPU inference threads (OpenVINO's, or torch's process-wide); default: OpenVINO the cores that decoding"
        " leaves, PyTorch Ultralytics' (cores - 1, at most 8)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_place(self) -> ModelConfig:
        if self.path is None and self.triton is None:
            raise LocatedError(("path",), "required key is missing (a model file, or triton: a model on a Triton server)")
        if self.path is not None and self.triton is not None:
            raise LocatedError(("triton",), "give path (a local model) or triton (a served one), not both")
        return self

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32, got {value}")
        return value


class EvidenceConfig(Strict):
    """Where event snapshots go; the oldest are deleted beyond either bound, so the disk never fills."""

    enabled: bool = True
    dir: Path | None = Field(None, description="default: <state_dir>/evidence; relative: to the config file's folder")
    max_mb: float = Field(500.0, gt=0, le=MAX_MB)
    max_age_days: float = Field(30.0, gt=0, le=36_500)
    min_free_mb: float = Field(200.0, ge=0, le=MAX_MB, description="skip a snapshot when the disk has less free space than this")
    jpeg_quality: int = Field(85, ge=10, le=100)


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    interval_s: float = Field(10.0, gt=0, le=DAY_S, description="one line per camera per interval")


class HomeAssistantConfig(Strict):
    enabled: bool = Field(False, description="publish retained MQTT discovery messages for Home Assistant")
    discovery_prefix: str = "homeassistant"

    _prefix = field_validator("discovery_prefix")(classmethod(lambda cls, value: topic_prefix(value)))


class CircuitBreakerConfig(Strict):
    failures: int = Field(5, ge=1, le=10_000, description="consecutive failed calls that open the circuit")
    cooldown_s: float = Field(120.0, gt=0, le=DAY_S, description="how long an open circuit refuses calls before one trial")


class DatasetConfig(Strict):
    dir: Path | None = Field(None, description="save escalated frames here (none: do not save)")
    max_mb: float = Field(500.0, gt=0, le=MAX_MB, description="oldest saved frames are deleted beyond this size")


class EscalationConfig(Strict):
    """The multimodal model endpoint (any OpenAI-compatible API) and the global limits."""

    enabled: bool = True
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; default: api.openai.com")
    model: str = Field("gpt-4o-mini", min_length=1)
    api: Literal["chat", "responses"] = Field("chat", description="Chat Completions (everywhere) or the Responses API")
    api_key: SecretSource | None = Field(None, description="{env: VAR} | {file: path} | {value: ...}; none for local servers")
    on_site: bool | None = Field(None, description="the endpoint is on this site; default: true for loopback/private hosts")
    timeout_s: float = Field(30.0, gt=0, le=3600)
    max_retries: int = Field(2, ge=0, le=10, description="retries on 429/5xx/timeouts, honouring Retry-After")
    image_long_side: int = Field(768, ge=64, le=4096)
    jpeg_quality: int = Field(85, ge=10, le=100)
    max_output_tokens: int = Field(600, ge=50, le=1_000_000)
    temperature: float | None = Field(0.0, ge=0, le=2, description="null: the provider's default (reasoning models)")
    price_input_per_1m: float = Field(0.15, ge=0, le=1e6, description="money per 1M input tokens")
    price_output_per_1m: float = Field(0.60, ge=0, le=1e6, description="money per 1M output tokens")
    price_per_image: float = Field(0.0, ge=0, le=1e6, description="flat money per request image, if the provider bills so")
    daily_budget: float = Field(1.0, ge=0, le=1e9, description="estimated money per UTC day, all cameras together")
    queue_size: int = Field(8, ge=1, le=1000)
    workers: int = Field(1, ge=1, le=16)
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    dataset: DatasetConfig = DatasetConfig()


def default_state_dir() -> Path:
    """systemd's StateDirectory= (the first, if several), else ./state next to the config file."""
    given = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(given) if given else Path("state")


def systemd_cache_dir() -> Path | None:
    """systemd's CacheDirectory= (the first, if several); None outside systemd (then: <state_dir>/cache)."""
    given = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(given) if given else None


class ServiceConfig(Strict):
    watchdog_stall_s: float = Field(120.0, gt=0, le=DAY_S, description="a camera loop, inference or publisher stuck this long stops the keep-alive")
    secrets_in_readable_config: Literal["refuse", "warn"] = Field(
        "refuse", description="an inline secret in a config file that other users can read"
    )


class AppConfig(Strict):
    state_dir: Path = Field(default_factory=default_state_dir, description="outbox and other durable state")
    cache_dir: Path | None = Field(
        default_factory=systemd_cache_dir, description="model exports; default: $CACHE_DIRECTORY, else <state_dir>/cache"
    )
    service: ServiceConfig = ServiceConfig()
    mqtt: MqttConfig = MqttConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    web: WebConfig = Field(WebConfig(), validation_alias=AliasChoices("web", "live_view"))  # live_view: the old name
    models: dict[Name, ModelConfig]
    cameras: dict[Name, CameraConfig]
    escalation: EscalationConfig | None = Field(None, description="the multimodal model; none: never escalate")
    evidence: EvidenceConfig = EvidenceConfig()
    source_path: Path | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_web(cls, data: object) -> object:
        if isinstance(data, dict) and "web" in data and "live_view" in data:
            raise LocatedError(("live_view",), "the old name of web: give only web")
        return data

    @field_validator("models", "cameras")
    @classmethod
    def _not_empty(cls, value: dict) -> dict:
        if not value:
            raise ValueError("needs at least one entry")
        return value

    @model_validator(mode="after")
    def _models_exist(self) -> AppConfig:
        for name, camera in self.cameras.items():
            if camera.model not in self.models:
                raise LocatedError(
                    ("cameras", name, "model"),
                    f"unknown model {camera.model!r} (defined: {', '.join(self.models)})",
                )
        return self


