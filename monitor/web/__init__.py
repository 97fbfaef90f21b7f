"""The operator's page: live counts, events with their evidence, escalations, camera health and a zone editor.

``recorder`` (what MQTT carried), ``frames`` (each camera's latest frames, drawn on demand), ``api`` (the JSON
answers), ``server`` (HTTP: read-only, bounded, token off loopback) and ``static/`` (the page: plain HTML,
CSS and JavaScript, shipped in the package, nothing fetched from elsewhere).
"""

from __future__ import annotations

from typing import Protocol

from monitor.config import AppConfig
from monitor.escalation.limits import Budget
from monitor.web.api import CameraLoopView, CameraPanel, RateMeter, WebApi
from monitor.web.frames import FrameSource
from monitor.web.recorder import Recorder
from monitor.web.server import EvidenceReader, NoEvidence, Site, WebServer


class FrameCounter(Protocol):
    def processed_frames(self, camera: str) -> float: ...


def build_web(
    config: AppConfig,
    loops: dict[str, CameraLoopView],
    frames_counter: FrameCounter,
    recorder: Recorder,
    evidence: EvidenceReader | None = None,
    budget: Budget | None = None,
) -> WebServer:
    """The page over the camera loops and the recorder; reads the token now (ConfigError naming ``web.token``)."""
    panels = {
        name: CameraPanel(
            name,
            camera,
            loops[name],
            FrameSource(name, camera, lambda loop=loops[name]: loop.last_result, loops[name].zone_labels),
            RateMeter(lambda name=name: frames_counter.processed_frames(name)),
        )
        for name, camera in config.cameras.items()
    }
    api = WebApi(config.web, panels, recorder, budget)
    site = Site(config.web, api, evidence or NoEvidence(), config.web.reveal_token())
    return WebServer(config.web, site)


__all__ = ["Recorder", "WebServer", "build_web"]
