"""A camera's count messages: the retained ``counts`` JSON (with ``epoch`` and ``seq``) and the bare integer topics."""

from __future__ import annotations

import json

from monitor.common import ALL_ZONES, TOTALS_TOPIC, iso_utc
from monitor.config import MqttConfig
from monitor.frame import FrameResult
from monitor.publishing.message import Message
from monitor.publishing.sequence import COUNTS, Sequence, new_sequence, stream_name


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
        prefix = f"{self.config.prefix}/{self.camera}"
        out = [Message(f"{prefix}/counts", json.dumps(payload, separators=(",", ":")), self.config.qos, True)]
        if self.config.bare_topics:
            out += self._bare_messages(prefix, zones, totals, force_bare)
        return out

    def _bare_messages(self, prefix: str, zones: dict, totals: dict, force: bool) -> list[Message]:
        values = {f"{prefix}/{zone}/{label}": n for zone, per_label in zones.items() for label, n in per_label.items()}
        values.update({f"{prefix}/{TOTALS_TOPIC}/{label}": n for label, n in totals.items()})
        changed = {topic: n for topic, n in values.items() if force or self._last_bare.get(topic) != n}
        self._last_bare.update(changed)
        return [Message(topic, str(n), self.config.qos, True) for topic, n in changed.items()]
