"""The answer's JSON schema (strict mode: everything required, no extra keys) and its validation. The model's
answer is hostile input: anything outside the schema is rejected and never used."""

from __future__ import annotations

import json
from dataclasses import dataclass

import jsonschema

from monitor.common import ALL_ZONES
from monitor.frame import Counts

MAX_SANE_COUNT = 10000
DESCRIPTION_CHARS = 500


def answer_schema(labels: list[str], zone_labels: dict[str, list[str]], event_ids: list[str]) -> dict:
    """The schema of the answer for one request: counts of ``labels`` in the whole image and of each zone's
    labels per zone, a verdict per open event, and a description."""

    def counts_of(labels: list[str]) -> dict:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": list(labels),
            "properties": {label: {"type": "integer", "minimum": 0} for label in labels},
        }

    event_id: dict = {"type": "string", "enum": list(event_ids)} if event_ids else {"type": "string"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["totals", "zones", "events", "description"],
        "properties": {
            "totals": counts_of(labels),
            "zones": {
                "type": "object",
                "additionalProperties": False,
                "required": list(zone_labels),
                "properties": {name: counts_of(zone) for name, zone in zone_labels.items()},
            },
            "events": {
                "type": "array",
                "maxItems": len(event_ids),
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "real", "note"],
                    "properties": {"id": event_id, "real": {"type": "boolean"}, "note": {"type": "string"}},
                },
            },
            "description": {"type": "string"},
        },
    }


class AnswerRejected(Exception):
    def __init__(self, kind: str, detail: str):
        self.kind = kind  # "malformed" (not JSON) or "invalid" (JSON outside the schema)
        super().__init__(detail)


@dataclass(frozen=True)
class ModelAnswer:
    counts: Counts  # zone -> label -> n, with ALL_ZONES for the totals
    events: list[dict]  # {"id", "real", "note"}
    description: str


def parse_answer(content: str | None, schema: dict, event_ids: set[str]) -> ModelAnswer:
    """Parse and validate the model's message; anything outside the schema is rejected, never trusted."""
    if not content or not content.strip():
        raise AnswerRejected("malformed", "empty answer")
    text = content.strip()
    if text.startswith("```"):  # some local servers wrap JSON in a code fence despite the schema
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerRejected("malformed", f"not JSON: {exc}") from None
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise AnswerRejected("invalid", f"{where}: {exc.message}") from None
    counts: Counts = {ALL_ZONES: data["totals"], **data["zones"]}
    if any(n > MAX_SANE_COUNT for per_label in counts.values() for n in per_label.values()):
        raise AnswerRejected("invalid", f"a count above {MAX_SANE_COUNT}")
    events = [e for e in data["events"] if e["id"] in event_ids]
    if len({e["id"] for e in events}) != len(events):
        raise AnswerRejected("invalid", "an event answered twice")
    return ModelAnswer(counts, events, data["description"][:DESCRIPTION_CHARS])
