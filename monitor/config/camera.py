"""Camera settings: the source, zones, lines, smoothing, reconnects, motion gating, escalation and safety rules."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from monitor.common import ALL_ZONES, RESERVED_TOPIC_NAMES
from monitor.config.base import DAY_S, ConfigError, LocatedError, Name, Point, SecretSource, Strict
from monitor.config.rules import SafetyRule

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")

def _check_polygon(points: list[Point]) -> list[Point]:
    if len(points) < 3:
        raise ValueError("needs at least 3 points")
    if len(set(points)) < 3:
        raise ValueError("needs at least 3 distinct points")
    crossing = _crossing_edges(points)
    if crossing:
        raise ValueError(f"edges {crossing[0]} and {crossing[1]} cross (the outline must not intersect itself)")
    if _polygon_area(points) == 0:
        raise ValueError("points are collinear (zero area)")
    return points


def _crossing_edges(points: list[Point]) -> tuple[int, int] | None:
    """The first two non-adjacent edges (edge i runs from point i to i+1) that properly cross, if any."""
    edges = list(zip(points, points[1:] + points[:1]))
    for i in range(len(edges)):
        for j in range(i + 2, len(edges)):
            if i == 0 and j == len(edges) - 1:
                continue  # the last edge and the first share point 0
            if _segments_cross(*edges[i], *edges[j]):
                return i, j
    return None


def _segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    def side(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


def _polygon_area(points: list[Point]) -> float:
    twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))
    return abs(twice) / 2


class ZoneConfig(Strict):
    polygon: list[Point]
    classes: list[str] | None = Field(None, description="labels counted here; default: the camera's")
    description: str = Field("", description="what the zone is, for people and for the escalation prompt")

    _polygon = field_validator("polygon")(classmethod(lambda cls, v: _check_polygon(v)))


class LineConfig(Strict):
    points: tuple[Point, Point]
    classes: list[str] | None = None

    @field_validator("points")
    @classmethod
    def _distinct(cls, value: tuple[Point, Point]) -> tuple[Point, Point]:
        if value[0] == value[1]:
            raise ValueError("the two points must differ")
        return value


class SmoothingConfig(Strict):
    method: Literal["median", "hysteresis", "none"] = "median"
    window: int = Field(5, ge=1, le=300, description="frames (median window or hold frames)")


class ReconnectConfig(Strict):
    initial_s: float = Field(0.5, gt=0, le=DAY_S)
    max_s: float = Field(30.0, gt=0, le=DAY_S)
    stall_s: float = Field(10.0, gt=0, le=DAY_S, description="no frame for this long counts as a drop")

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self


class MotionConfig(Strict):
    enabled: bool = False
    threshold: float = Field(0.002, ge=0, le=1, description="fraction of changed pixels that counts as motion")
    keepalive_s: float = Field(2.0, gt=0, le=DAY_S, description="re-check a still scene at least this often")
    scale_width: int = Field(160, ge=16, le=1920)


class EscalationThresholds(Strict):
    grey_margin: float = Field(0.15, gt=0, le=1, description="a detection this close to its class threshold is unsure")
    grey_classes: list[str] | None = Field(None, description="model classes whose unsure detections count; default: all")
    flicker_window: int = Field(10, ge=2, le=1000, description="frames over which raw count changes are counted")
    flicker_changes: int = Field(4, ge=1, le=1000, description="raw count changes in the window that make a frame fully ambiguous")
    trigger: float = Field(0.5, gt=0, le=1, description="ambiguity score (0-1) at which a stretch starts")
    stretch_s: float = Field(2.0, ge=0, le=DAY_S, description="send the best frame of a stretch after at most this long")
    cooldown_s: float = Field(60.0, ge=0, le=DAY_S, description="quiet time after an ambiguity escalation of this camera")


class CameraEscalationConfig(Strict):
    enabled: bool = True
    off_site: bool = Field(True, description="frames of this camera may leave the site (false: on-site endpoints only)")
    max_per_hour: int = Field(30, ge=0, le=1_000_000)
    audit_every_s: float | None = Field(3600.0, gt=0, le=30 * DAY_S, description="escalate a frame this often even when all is clear")
    thresholds: EscalationThresholds = EscalationThresholds()
    blur_people: bool = Field(False, description="blur the detector's person boxes before the frame leaves the host")
    person_labels: list[str] = Field(["person"], description="labels whose boxes blur_people blurs")
    draw_zones: bool = Field(True, description="outline and name the zones on the image sent")
    policy: Literal["report_only", "override_until_change"] = "report_only"
    override_max_s: float = Field(600.0, gt=0, le=DAY_S, description="an override ends after this long even if nothing changed")
    pixels_per_object: float = Field(
        400.0, ge=1, le=1e7, description="plausibility of the model's counts: at most one object per this many pixels of a zone"
    )



class StreamSource(Strict):
    """A network camera whose login is kept out of the URL: the password comes from a file (a systemd
    credential), an environment variable or, in a config only the monitor can read, the value itself."""

    url: str = Field(description="rtsp://host:554/path and the like, without user or password")
    username: str | None = None
    password: SecretSource | None = None

    @field_validator("url")
    @classmethod
    def _stream_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in STREAM_SCHEMES or not parts.hostname:
            raise ValueError(f"expected a stream URL ({', '.join(STREAM_SCHEMES)}://host/...), got {value!r}")
        if parts.username or parts.password:
            raise ValueError("give the login as username and password, not inside the URL")
        return value

    @model_validator(mode="after")
    def _password_needs_a_user(self) -> StreamSource:
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        return self

    def with_login(self) -> str:
        """The URL to open, with the login inserted (URL-quoted); the password is read now, at every (re)connect."""
        if self.username is None:
            return self.url
        login = quote(self.username, safe="")
        if self.password is not None:
            login += ":" + quote(self.password.reveal(), safe="")
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=f"{login}@{parts.netloc}"))

    def __str__(self) -> str:
        """For logs: the URL with the login masked, the way a password inside a URL is masked."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=f"***@{parts.netloc}")) if self.username else self.url


class CameraConfig(Strict):
    source: str | int | StreamSource
    model: Name
    description: str = ""
    fps: float | None = Field(None, gt=0, le=240, description="target processing rate; default: source rate")
    realtime: bool = Field(True, description="play files at their native rate (False: as fast as possible)")
    loop: bool = False
    classes: list[str] | None = Field(None, description="labels to count; default: all")
    tracker: Literal["bytetrack", "botsort", "none"] = "bytetrack"
    anchor: Literal["bottom_center", "center"] = "bottom_center"
    smoothing: SmoothingConfig = SmoothingConfig()
    zones: dict[Name, ZoneConfig] = {}
    lines: dict[Name, LineConfig] = {}
    reconnect: ReconnectConfig = ReconnectConfig()
    motion: MotionConfig = MotionConfig()
    escalation: CameraEscalationConfig = CameraEscalationConfig()
    safety: list[SafetyRule] = Field([], description="safety rules (monitor/safety.py)")

    @model_validator(mode="after")
    def _safety_rules_fit(self) -> CameraConfig:
        names: set[str] = set()
        for i, rule in enumerate(self.safety):
            if rule.key in names:
                raise LocatedError(("safety", i, "name"), f"duplicate rule name {rule.key!r} (give each rule its own name)")
            names.add(rule.key)
            for zone in rule.zones or []:
                if zone not in self.zones:
                    raise LocatedError(("safety", i, "zones"), f"unknown zone {zone!r} (defined: {', '.join(self.zones) or 'none'})")
        return self

    @model_validator(mode="after")
    def _names_fit_topics(self) -> CameraConfig:
        reserved = RESERVED_TOPIC_NAMES | {ALL_ZONES}
        for kind, names in (("zones", self.zones), ("lines", self.lines)):
            for name in names:
                if name in reserved:
                    raise LocatedError(
                        (kind, name), f"{name!r} is reserved for MQTT topics (reserved: {', '.join(sorted(reserved))})"
                    )
        return self

    def open_target(self, where: str = "source") -> str | int:
        """What OpenCV opens: the source as given, or a stream's URL with its login (ConfigError naming ``where``
        when the password cannot be read)."""
        if not isinstance(self.source, StreamSource):
            return self.source
        try:
            return self.source.with_login()
        except ConfigError as error:
            raise ConfigError([f"{where}.password: {problem}" for problem in error.problems]) from None

    @field_validator("source")
    @classmethod
    def _source_kind(cls, value: str | int | StreamSource) -> str | int | StreamSource:
        if isinstance(value, StreamSource):
            return value
        if isinstance(value, int):
            if value < 0:
                raise ValueError("a device index must be >= 0")
            return value
        if not value.strip():
            raise ValueError("must not be empty")
        if re.match(r"^[a-z][a-z0-9+.-]*://", value) and not re.match(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|file)://", value):
            raise ValueError(f"unsupported URL scheme in {value!r} (rtsp, http(s), rtmp, udp, tcp, file)")
        return value

