"""The README stays true to the code: the two set-up commands and the .venv they make, every config key, every metric,
every config snippet (it passes `monitor check`), and the service install steps (they work as pasted)."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from conftest import ROOT
from monitor.cli import main as cli_main
from monitor.config import AppConfig, CameraConfig, LoggingConfig, MetricsConfig, ModelConfig, MqttConfig, load_config
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


# --- the README's commands and snippets, as a first-time user pastes them ----------------------------------------

FENCE = re.compile(r"^( *)```(\w*)([^\n]*)\n(.*?)^\1```[ \t]*$", re.M | re.S)
ADD_TO_YOUR_CONFIG = "add to your config"  # the README's words for a fragment that goes into the bundled config.yaml
CONFIG_SECTIONS = set(AppConfig.model_fields) - {"source_path"}


@dataclasses.dataclass
class Snippet:
    line: int
    language: str
    info: str  # what follows the language on the fence line (a title marks a file that is not a monitor config)
    text: str
    lead_in: str  # the prose just before the block

    @property
    def is_fragment(self) -> bool:
        return ADD_TO_YOUR_CONFIG in " ".join(self.lead_in.lower().split())


def snippets(language: str) -> list[Snippet]:
    found = []
    for match in FENCE.finditer(README):
        if match.group(2) != language:
            continue
        indent = match.group(1)
        text = "\n".join(line[len(indent):] for line in match.group(4).splitlines())
        before = README[: match.start()]
        lead_in = before[max(before.rfind("```"), before.rfind("\n\n", 0, len(before.rstrip())), 0):]
        found.append(Snippet(README.count("\n", 0, match.start()) + 1, language, match.group(3).strip(), text, lead_in))
    return found


def monitor_config_snippets(found: list[Snippet] | None = None) -> list[Snippet]:
    """Every ```yaml block that is a monitor config: the rule for the ones that are not (a prometheus.yml, a Home
    Assistant automation, a compose file) is a title after the language (```yaml title="prometheus.yml"), or top-level
    keys none of which is a monitor config section."""
    chosen = []
    for snippet in snippets("yaml") if found is None else found:
        data = yaml.safe_load(snippet.text)
        if snippet.info or not isinstance(data, dict) or not set(data) & CONFIG_SECTIONS:
            continue
        chosen.append(snippet)
    return chosen


def merged(base: dict, fragment: dict, where: tuple = ()) -> dict:
    """The fragment added to the config: mappings merge key by key, anything else (lists too) replaces; so does a
    model (``models.<name>``: a local file or a served model, never half of each)."""
    out = dict(base)
    for key, value in fragment.items():
        merges = isinstance(value, dict) and isinstance(base.get(key), dict) and where != ("models",)
        out[key] = merged(base[key], value, (*where, key)) if merges else value
    return out


def secret_sources(data: object) -> list[dict]:
    if isinstance(data, dict):
        if set(data) in ({"file"}, {"env"}):
            return [data]
        return [found for value in data.values() for found in secret_sources(value)]
    if isinstance(data, list):
        return [found for value in data for found in secret_sources(value)]
    return []


def test_the_readme_has_monitor_config_snippets_and_knows_which_yaml_is_not_one():
    chosen = monitor_config_snippets()
    assert len(chosen) >= 5, [s.line for s in chosen]  # cameras, the operator's page, safety, escalation, ...
    assert any("safety:" in s.text for s in chosen) and any("escalation:" in s.text for s in chosen)
    not_configs = [Snippet(1, "yaml", 'title="prometheus.yml"', "global: {scrape_interval: 15s}\n", ""),
                   Snippet(2, "yaml", "", "automation:\n  - alias: reorder ice\n", ""),
                   Snippet(3, "yaml", "", "kerb:\n  polygon: [[5, 194], [331, 194], [331, 475]]\n", "")]
    fragment = Snippet(4, "yaml", "", "web: {enabled: true}\n", "For another config, add to\nyour config:\n\n")
    assert monitor_config_snippets([*not_configs, fragment]) == [fragment] and fragment.is_fragment


@pytest.mark.parametrize("snippet", monitor_config_snippets(), ids=lambda s: f"README.md:{s.line}")
def test_every_config_snippet_passes_monitor_check(snippet, tmp_path, monkeypatch, capsys):
    """Completed only where the README says to add it to your config (then into the bundled config.yaml, in a
    folder with the repository's models and data); the credentials and variables it names are provided, as the
    systemd unit or the shell would. A model on a Triton server is validated without being loaded."""
    fragment = yaml.safe_load(snippet.text)
    data = merged(yaml.safe_load((ROOT / "config.yaml").read_text()), fragment) if snippet.is_fragment else fragment
    for name in ("models", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "credentials").mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    for source in secret_sources(data):
        if "env" in source:
            monkeypatch.setenv(source["env"], "a-secret")
        elif not Path(source["file"]).is_absolute():
            (tmp_path / "credentials" / source["file"]).write_text("a-secret\n")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    served = any("triton" in model for model in data["models"].values())  # no Triton server here to load it from
    assert cli_main(["check", "--config", str(path), *(["--no-models"] if served else [])]) == 0, capsys.readouterr().err
    said = capsys.readouterr().out.splitlines()  # the engine of each model, then the verdict
    assert any(line.startswith(f"{path}: OK") for line in said), said


INSTALL_ROOTS = ("/opt/monitor", "/etc/monitor", "/etc/systemd/system", "/var/lib/monitor")
NEEDS_A_REAL_SYSTEM = ("apt-get ", "-m venv", "systemctl", "journalctl")  # the venv: the one the tests run in


def install_commands(scratch: Path) -> list[str]:
    """Every command of the README's install section as pasted, into a scratch root: sudo dropped, the absolute
    install paths prefixed; what needs a real system (apt, systemd) left out."""
    section_text = section("Running as a service")
    install = section_text[section_text.index("### Install") : section_text.index("\n### ", section_text.index("### Install") + 1)]
    commands = []
    for match in FENCE.finditer(install):
        if match.group(2) != "sh":
            continue
        for command in match.group(4).replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if not command or any(skip in command for skip in NEEDS_A_REAL_SYSTEM):
                continue
            for root in INSTALL_ROOTS:
                command = command.replace(root, f"{scratch}{root}")
            commands.append(re.sub(r"\bsudo ", "", command))
    return commands


def test_the_service_install_steps_work_as_pasted_into_a_scratch_root(tmp_path):
    scratch = tmp_path / "root"
    (scratch / "opt" / "monitor").mkdir(parents=True)
    (scratch / "opt" / "monitor" / "venv").symlink_to(sys.prefix)
    commands = install_commands(scratch)
    assert any("monitor check --config" in command for command in commands) and len(commands) >= 8, commands
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(scratch / "etc" / "monitor" / "credentials")}
    env.pop("STATE_DIRECTORY")  # a root shell has none: the installed config must say where the state is
    for command in commands:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    assert f"{scratch}/etc/monitor/config.yaml: OK" in done.stdout  # the last command: monitor check
    config = load_config(scratch / "etc" / "monitor" / "config.yaml")
    assert config.state_dir == scratch / "var" / "lib" / "monitor"
    assert config.models["person"].path == scratch / "opt" / "monitor" / "models" / "person-fall.pt"
    assert config.cameras["street"].source == str(scratch / "opt" / "monitor" / "data" / "vtest.avi")
    documentation = re.search(r"^Documentation=file://(\S+)$", (scratch / "etc/systemd/system/monitor.service").read_text(), re.M)
    assert (scratch / documentation.group(1).lstrip("/")).read_text() == README
    secret = scratch / "etc" / "monitor" / "credentials" / "mqtt-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert (scratch / "etc/systemd/system/monitor.service.d/credentials.conf").is_file()


def test_the_scripts_install_into_a_venv_made_by_the_system_python_and_say_how_to_use_it():
    """PEP 668: a stock Debian/Ubuntu refuses pip into its own Python, so nothing may install there."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    pips = [line.strip() for script in (ROOT / "scripts").glob("*.sh") for line in script.read_text().splitlines()
            if re.search(r"\bpip3? install\b", line) and not line.strip().startswith("#")]
    into_a_venv = re.compile(r'^(\$VPY -m pip|\.venv[\w-]*/bin/python -m pip|"\$VENV/bin/pip") install ')
    assert pips and [line for line in pips if not into_a_venv.match(line)] == [], pips
    assert 'VPY=.venv/bin/python' in setup and '"$PYTHON" -m venv .venv' in setup and "/usr/bin/python3" in setup
    for script in ("test.sh", "demo.sh"):
        assert ".venv/bin/" in (ROOT / "scripts" / script).read_text()
    quick_start = section("Quick start")
    assert "`.venv/bin/monitor`" in quick_start and "source .venv/bin/activate" in quick_start
