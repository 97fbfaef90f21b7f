"""The answer's JSON schema (strict mode: everything required, no extra keys) and its validation. The model's
answer is hostile input: bounded in size, inside the schema, counts that are true integers and plausible for
the frame (at most one object per ``pixels_per_object`` of a zone's area), each event reviewed at most once,
free text cut to length and stripped of control characters; anything else is rejected and never used."""

from __future__ import annotations

import json
from dataclasses import dataclass

import jsonschema

from monitor.common import ALL_ZONES, clean_text
from monitor.frame import Counts
from monitor.geometry import area_in_image

MAX_SANE_COUNT = 10000
MAX_ANSWER_CHARS = 100_000  # a schema-shaped answer is a few kB; more is an endpoint out of bounds
DESCRIPTION_CHARS = 500
NOTE_CHARS = 300


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
        self.kind = kind  # "malformed" (not JSON) or "invalid" (JSON outside the schema, or implausible)
        super().__init__(clean_text(detail, 300))  # it may quote the answer


@dataclass(frozen=True)
class ModelAnswer:
    counts: Counts  # zone -> label -> n, with ALL_ZONES for the totals
    events: list[dict]  # {"id", "real", "note"}
    description: str


def count_limits(zones: dict[str, list], width: int, height: int, pixels_per_object: float) -> dict[str, int]:
    """The most objects that can plausibly be counted per zone (and ``ALL_ZONES``) of a ``width`` x ``height`` frame."""
    limits = {zone: int(area_in_image(polygon, width, height) // pixels_per_object) for zone, polygon in zones.items()}
    limits[ALL_ZONES] = int(width * height // pixels_per_object)
    return {zone: max(1, min(MAX_SANE_COUNT, n)) for zone, n in limits.items()}


def parse_answer(content: str | None, schema: dict, event_ids: set[str], limits: dict[str, int] | None = None) -> ModelAnswer:
    """Parse and validate the model's message; anything outside the schema or implausible is rejected, never trusted."""
    if not content or not content.strip():
        raise AnswerRejected("malformed", "empty answer")
    if len(content) > MAX_ANSWER_CHARS:
        raise AnswerRejected("malformed", f"answer of {len(content)} characters (at most {MAX_ANSWER_CHARS})")
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
    check_counts(counts, limits or {})
    events = [e for e in data["events"] if e["id"] in event_ids]
    if len({e["id"] for e in events}) != len(events):
        raise AnswerRejected("invalid", "an event answered twice")
    events = [{"id": e["id"], "real": e["real"], "note": clean_text(e["note"], NOTE_CHARS)} for e in events]
    return ModelAnswer(counts, events, clean_text(data["description"], DESCRIPTION_CHARS))


def check_counts(counts: Counts, limits: dict[str, int]) -> None:
    """True integers (JSON ``2.0`` passes jsonschema's "integer"), and no more than fit in the zone."""
    for zone, per_label in counts.items():
        where = "totals" if zone == ALL_ZONES else f"zones/{zone}"
        limit = limits.get(zone, MAX_SANE_COUNT)
        for label, n in per_label.items():
            if type(n) is not int:
                raise AnswerRejected("invalid", f"{where}/{label}: {n!r} is not an integer")
            if n > limit:
                raise AnswerRejected("invalid", f"{where}/{label}: {n} is implausible (at most {limit} fit)")
