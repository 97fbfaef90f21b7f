"""The README's core sections stay true to the code: the two set-up commands, every config key, every metric."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel

from conftest import ROOT
from monitor.config import CameraConfig, LoggingConfig, MetricsConfig, ModelConfig, MqttConfig
from monitor.metrics import Metrics

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_readme_starts_with_title_description_and_quick_start():
    assert README.startswith("# ")
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings[0] == "Quick start"


def test_quick_start_has_exactly_the_two_set_up_commands():
    blocks = re.findall(r"```sh\n(.*?)```", section("Quick start"), re.S)
    assert blocks[0].split("\n")[:-1] == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert len([b for b in blocks if "bash " in b]) == 1


def keys(model: type[BaseModel]) -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        found.add(name)
        annotation = field.annotation
        prefix = f"{name}.<name>" if typing.get_origin(annotation) is dict else name
        for kind in typing.get_args(annotation) or (annotation,):
            if isinstance(kind, type) and issubclass(kind, BaseModel) and kind.__name__ not in {"SecretSource", "TlsConfig"}:
                found |= {f"{prefix}.{key}" for key in keys(kind)}
    return found


def test_every_core_config_key_is_in_the_reference():
    reference = section("Configuration reference")
    documented = set(re.findall(r"`([a-z_.<>]+)`", reference))
    own_sections = {"escalation", "safety", "outbox"}  # documented in their features' sections
    for model in (MqttConfig, MetricsConfig, LoggingConfig, ModelConfig, CameraConfig):
        all_keys = keys(model)
        leaves = {key for key in all_keys if not any(other.startswith(key + ".") for other in all_keys)}
        for key in leaves:
            if key.split(".")[0] in own_sections:
                continue
            assert key in documented or key.replace(".<name>", "") in documented, f"{model.__name__}: {key}"


def test_every_metric_is_listed():
    listed = section("Metrics")
    for collector in Metrics().registry._collector_to_names:
        name = collector._name
        suffix = "_total" if collector._type == "counter" else ""
        assert f"`{name}{suffix}`" in listed or f"`{name}`" in listed, name
