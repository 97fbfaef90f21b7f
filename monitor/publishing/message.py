"""What the stages hand to the publisher: one MQTT message."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: str
    qos: int
    retain: bool
    kind: str | None = None  # outbox size policy: "count", "state" or "event"; None: from the topic
