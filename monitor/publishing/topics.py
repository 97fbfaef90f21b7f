"""A camera's topics and count messages: the retained ``counts`` JSON (with ``epoch`` and ``seq``) and the bare
integer topics.

Bare values, ``count`` layout (the default): ``<prefix>/<camera>/count/<zone>/<class>`` and
``<prefix>/<camera>/count/_total/<class>``, so the one filter ``<prefix>/+/count/+/+`` selects every bare value of
every camera and nothing else (not ``events/active``, not ``status``), whatever ``/`` the prefix holds. The
``legacy`` layout (``<prefix>/<camera>/<zone>/<class>``, ``<prefix>/<camera>/totals/<class>``) stays for one release.
"""

from __future__ import annotations

import json
import logging

from monitor.common import ALL_ZONES, TOTAL_ZONE_TOPIC, TOTALS_TOPIC, iso_utc
from monitor.config import MqttConfig
from monitor.frame import FrameResult
from monitor.publishing.message import Message
from monitor.publishing.sequence import COUNTS, Sequence, new_sequence, stream_name

log = logging.getLogger(__name__)

COUNT_TOPIC = "count"
ONLINE, OFFLINE = "online", "offline"


def camera_topic(prefix: str, camera: str) -> str:
    return f"{prefix}/{camera}"


def status_topic(prefix: str, camera: str | None = None) -> str:
    """``<prefix>/status`` (the monitor), or ``<prefix>/<camera>/status`` (one camera): retained online/offline."""
    return f"{camera_topic(prefix, camera)}/status" if camera else f"{prefix}/status"


def bare_topic(config: MqttConfig, camera: str, zone: str, label: str) -> str:
    """The bare integer topic of one count; ``zone`` is ``ALL_ZONES`` for the whole image."""
    base = camera_topic(config.prefix, camera)
    if config.bare_layout == "legacy":
        return f"{base}/{TOTALS_TOPIC if zone == ALL_ZONES else zone}/{label}"
    return f"{base}/{COUNT_TOPIC}/{TOTAL_ZONE_TOPIC if zone == ALL_ZONES else zone}/{label}"


def bare_filter(prefix: str) -> str:
    """The one subscription that selects every bare value (``count`` layout) and nothing else."""
    return f"{prefix}/+/{COUNT_TOPIC}/+/+"


def warn_if_legacy_layout(config: MqttConfig) -> None:
    if config.bare_topics and config.bare_layout == "legacy":
        log.warning(
            "mqtt.bare_layout: legacy is deprecated and goes in the next release: bare values on "
            "%s/<camera>/<zone>/<class> share the filter %s/+/+/+ with events/active; switch to the default "
            "layout, %s/<camera>/count/<zone>/<class> (one filter: %s)",
            config.prefix, config.prefix, config.prefix, bare_filter(config.prefix),
        )


class CountsTopics:
    """Builds a camera's count messages; tracks seq and which bare values changed."""

    def __init__(self, config: MqttConfig, camera: str, sequence: Sequence | None = None):
        self.config = config
        self.camera = camera
        self.sequence = sequence or new_sequence(stream_name(camera, COUNTS))  # kept across restarts by Sequences
        self._last_bare: dict[str, int] = {}

    def messages(self, result: FrameResult, extra: dict | None = None, force_bare: bool = False) -> list[Message]:
        epoch, seq = self.sequence.next()
        zones = {zone: dict(per_label) for zone, per_label in result.counts.items() if zone != ALL_ZONES}
        totals = dict(result.counts.get(ALL_ZONES, {}))
        payload = {
            "camera": self.camera,
            "ts": iso_utc(result.frame.wall_time),
            "epoch": epoch,
            "seq": seq,
            "zones": zones,
            "totals": totals,
        }
        if result.line_totals:
            payload["lines"] = result.line_totals
        payload.update(extra or {})
        topic = f"{camera_topic(self.config.prefix, self.camera)}/counts"
        out = [Message(topic, json.dumps(payload, separators=(",", ":")), self.config.qos, True)]
        if self.config.bare_topics:
            out += self._bare_messages({**zones, ALL_ZONES: totals}, force_bare)
        return out

    def _bare_messages(self, counts: dict, force: bool) -> list[Message]:
        values = {
            bare_topic(self.config, self.camera, zone, label): n for zone, per_label in counts.items() for label, n in per_label.items()
        }
        changed = {topic: n for topic, n in values.items() if force or self._last_bare.get(topic) != n}
        self._last_bare.update(changed)
        return [Message(topic, str(n), self.config.qos, True) for topic, n in changed.items()]
