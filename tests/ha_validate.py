"""Runs in Home Assistant's own virtual environment (.venv-ha, homeassistant 2024.3.3; see scripts/ha-venv.sh), not
the monitor's: checks what the monitor publishes with Home Assistant's own code.

Input (stdin, JSON): ``{"discovery": {topic: payload}, "states": {topic: payload}, "automation_file": path}``.
Output (stdout, JSON): per discovery topic the problems found (empty: accepted as Home Assistant would), the values
its templates render from the retained state of its topics, and the problems of the example automation package.

- discovery: the topic's component (``sensor``, ``binary_sensor``) and its platform's ``DISCOVERY_SCHEMA``
  (``homeassistant.components.mqtt.<component>``), plus ``MQTT_ORIGIN_INFO_SCHEMA`` for ``origin``; a key that the
  schema drops (it removes keys it does not know) is reported too;
- templates: ``value_template`` and ``json_attributes_template`` rendered by Home Assistant's template engine
  against the payload on their state topic, as the MQTT integration does (``value`` and ``value_json``);
- the automation package: ``rest_command.CONFIG_SCHEMA`` and ``automation.config.async_validate_config_item``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile

import voluptuous as vol
import yaml
from homeassistant.core import HomeAssistant  # first: homeassistant.loader and .core import each other

from homeassistant import loader
from homeassistant.components import rest_command
from homeassistant.components.automation.config import async_validate_config_item
from homeassistant.components.mqtt import binary_sensor, sensor
from homeassistant.components.mqtt.discovery import MQTT_ORIGIN_INFO_SCHEMA
from homeassistant.helpers import device_registry, entity_registry
from homeassistant.helpers.template import Template
from homeassistant.util import slugify

SCHEMAS = {"sensor": sensor.DISCOVERY_SCHEMA, "binary_sensor": binary_sensor.DISCOVERY_SCHEMA}
TEMPLATES = {"value_template": "state_topic", "json_attributes_template": "json_attributes_topic"}


def check_discovery(topic: str, payload: dict) -> list[str]:
    component = topic.split("/")[1]
    if component not in SCHEMAS:
        return [f"component {component!r} is not checked here"]
    problems = []
    try:
        if "origin" in payload:  # as Home Assistant's discovery does
            MQTT_ORIGIN_INFO_SCHEMA(payload["origin"])
        validated = SCHEMAS[component](dict(payload))
    except vol.Invalid as error:
        return [f"rejected: {error}"]
    dropped = sorted(set(payload) - set(validated))
    if dropped:
        problems.append(f"keys Home Assistant ignores: {dropped}")
    return problems


def entity_id(topic: str, payload: dict) -> str:
    """What Home Assistant names an MQTT entity with a device: ``<component>.<slug of device name + name>``."""
    return f"{topic.split('/')[1]}.{slugify(payload['device']['name'] + ' ' + payload['name'])}"


def render_templates(hass: HomeAssistant, payload: dict, states: dict[str, str]) -> dict[str, object]:
    rendered = {}
    for key, topic_key in TEMPLATES.items():
        if key in payload and payload.get(topic_key) in states:
            template = Template(payload[key], hass)
            rendered[key] = template.async_render_with_possible_json_value(states[payload[topic_key]], None)
    return rendered


async def check_automation_file(hass: HomeAssistant, path: str) -> list[str]:
    package = yaml.safe_load(open(path))
    problems = []
    try:
        rest_command.CONFIG_SCHEMA({"rest_command": package["rest_command"]})
    except vol.Invalid as error:
        problems.append(f"rest_command: {error}")
    for automation in package["automation"]:
        try:
            await async_validate_config_item(hass, automation.get("id", "?"), automation)
        except (vol.Invalid, Exception) as error:  # noqa: BLE001 (Home Assistant raises its own error types too)
            problems.append(f"automation {automation.get('id')}: {error}")
    return problems


async def main() -> dict:
    given = json.load(sys.stdin)
    hass = HomeAssistant(tempfile.mkdtemp())
    loader.async_setup(hass)
    await device_registry.async_load(hass)
    await entity_registry.async_load(hass)
    try:
        result = {"discovery": {}, "automation": []}
        for topic, text in given["discovery"].items():
            payload = json.loads(text)
            result["discovery"][topic] = {
                "problems": check_discovery(topic, payload),
                "rendered": render_templates(hass, payload, given.get("states", {})),
                "entity_id": entity_id(topic, payload),
            }
        if given.get("automation_file"):
            result["automation"] = await check_automation_file(hass, given["automation_file"])
        return result
    finally:
        await hass.async_stop(force=True)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), default=str))
