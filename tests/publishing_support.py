"""Shared by the publishing tests: an events object that records what the outbox and the publisher report."""

from __future__ import annotations

import json


class RecordingEvents:
    def __init__(self):
        self.dropped: dict[str, int] = {}
        self.full: list[bool] = []
        self.errors = 0
        self.messages: dict[str, int] = {}
        self.connected: list[bool] = []

    def outbox_dropped(self, kind, n):
        self.dropped[kind] = self.dropped.get(kind, 0) + n

    def outbox_error(self):
        self.errors += 1

    def outbox_full(self, full):
        self.full.append(full)

    def mqtt_state(self, connected):
        self.connected.append(connected)

    def mqtt_message(self, result):
        self.messages[result] = self.messages.get(result, 0) + 1

    def outbox_state(self, messages, oldest_s):
        pass


def counts_payload(camera: str, seq: int) -> str:
    return json.dumps({"camera": camera, "seq": seq, "ts": "2026-01-01T00:00:00.000Z", "zones": {}, "totals": {}})
