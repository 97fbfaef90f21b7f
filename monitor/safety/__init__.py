"""Safety: rules over a camera's tracked detections (``rules``) raised as events with a start, updates and
an end (``events``) by a per-camera engine that debounces, reviews and publishes them (``engine``)."""

from monitor.safety.engine import SafetyEngine
from monitor.safety.events import OpenEvent, SafetyEvent
from monitor.safety.rules import FrameView, Observation, build_rule

__all__ = ["FrameView", "Observation", "OpenEvent", "SafetyEngine", "SafetyEvent", "build_rule"]
