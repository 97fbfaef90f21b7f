"""The shared leaf: the UTC time format and the names the topics reserve."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from monitor.common import ALL_ZONES, RESERVED_TOPIC_NAMES, TOTAL_ZONE_TOPIC, TOTALS_TOPIC, iso_utc


def test_iso_utc_has_milliseconds_and_a_z():
    assert iso_utc(1_700_000_000.0) == "2023-11-14T22:13:20.000Z"
    assert iso_utc(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"  # truncated to the millisecond
    assert iso_utc(0.0) == "1970-01-01T00:00:00.000Z"


def test_iso_utc_parses_back_to_the_same_instant():
    text = iso_utc(1_764_000_000.5)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo == timezone.utc and parsed.timestamp() == 1_764_000_000.5


def test_the_totals_topic_is_reserved_and_the_all_zones_key_is_not_a_topic_word():
    assert TOTALS_TOPIC in RESERVED_TOPIC_NAMES and TOTAL_ZONE_TOPIC in RESERVED_TOPIC_NAMES
    assert ALL_ZONES not in RESERVED_TOPIC_NAMES and ALL_ZONES not in (TOTALS_TOPIC, TOTAL_ZONE_TOPIC)
    assert RESERVED_TOPIC_NAMES == {"counts", "events", "escalations", "status", "totals", "_total"}
    assert isinstance(RESERVED_TOPIC_NAMES, frozenset)
