"""Configuration: config.yaml validated once at start-up into typed, frozen objects.

Every error names the key path and what was expected, e.g.
``cameras.dock.zones.cart.polygon: needs at least 3 points``. The modules: ``base`` (errors, the
frozen base model, secrets), ``rules`` (safety rules), ``camera`` (a camera and its zones), ``app``
(everything else, and the whole ``AppConfig``), ``loading`` (YAML, paths, checks against the models).
"""

from monitor.config.app import (
    AppConfig,
    CircuitBreakerConfig,
    DatasetConfig,
    EscalationConfig,
    EvidenceConfig,
    HomeAssistantConfig,
    LoggingConfig,
    MetricsConfig,
    ModelConfig,
    MqttConfig,
    OutboxConfig,
    ServiceConfig,
    TlsConfig,
    TritonConfig,
    default_state_dir,
    systemd_cache_dir,
)
from monitor.config.base import ConfigError, LocatedError, SecretSource, Strict
from monitor.config.camera import (
    CameraConfig,
    CameraEscalationConfig,
    EscalationThresholds,
    LineConfig,
    MotionConfig,
    ReconnectConfig,
    SmoothingConfig,
    StreamSource,
    ZoneConfig,
)
from monitor.config.loading import check_model_classes, is_file_path, load_config, model_labels, parse_config
from monitor.config.rules import (
    DwellRule,
    IntrusionRule,
    OccupancyRule,
    PersonDownRule,
    SafetyRule,
    SafetyRuleBase,
    StaleCameraRule,
)
from monitor.config.web import WebConfig

__all__ = [
    "AppConfig", "CameraConfig", "CameraEscalationConfig", "CircuitBreakerConfig", "ConfigError", "DatasetConfig",
    "DwellRule", "EscalationConfig", "EscalationThresholds", "EvidenceConfig", "HomeAssistantConfig", "IntrusionRule",
    "LineConfig", "LocatedError", "LoggingConfig", "MetricsConfig", "ModelConfig", "MotionConfig",
    "MqttConfig", "OccupancyRule", "OutboxConfig", "PersonDownRule", "ReconnectConfig", "SafetyRule", "SafetyRuleBase",
    "SecretSource", "ServiceConfig", "SmoothingConfig", "StaleCameraRule", "StreamSource", "Strict", "TlsConfig",
    "TritonConfig", "WebConfig", "ZoneConfig",
    "check_model_classes", "default_state_dir", "is_file_path", "load_config", "model_labels", "parse_config",
    "systemd_cache_dir",
]
