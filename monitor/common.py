"""Names and formats that several layers share. A leaf: it imports nothing from ``monitor``.

The counting stage keys the whole image as ``ALL_ZONES``; the MQTT topics use ``TOTALS_TOPIC`` for it
and reserve the other words below, so the configuration refuses zones and lines named like them.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone

ALL_ZONES = "_all"  # the whole image, the key of a camera's totals in every Counts
TOTALS_TOPIC = "totals"  # <prefix>/<camera>/totals/<class> (the deprecated legacy layout of the bare values)
TOTAL_ZONE_TOPIC = "_total"  # <prefix>/<camera>/count/_total/<class>
RESERVED_TOPIC_NAMES = frozenset({"counts", "events", "escalations", "status", TOTALS_TOPIC, TOTAL_ZONE_TOPIC})


def iso_utc(wall_time: float) -> str:
    """``time.time()`` as ISO 8601 UTC with milliseconds: ``2026-11-23T17:20:03.112Z``."""
    return datetime.fromtimestamp(wall_time, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_text(text: str, limit: int) -> str:
    """Free text from outside (a remote model's answer), made safe to log and publish: control characters
    (newlines, escapes, NUL) become spaces, surrounding space goes, and it is cut to ``limit`` characters."""
    cleaned = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text[: limit * 2])
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\u2026"
