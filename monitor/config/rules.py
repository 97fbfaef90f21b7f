"""Safety rule settings (the rules themselves run in ``monitor.safety``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from monitor.config.base import DAY_S, Name, Strict

class SafetyRuleBase(Strict):
    """What every safety rule has; times are seconds of the camera's stream (video time for files)."""

    name: Name | None = Field(None, description="unique per camera; default: the rule kind")
    classes: list[str] | None = Field(None, description="labels or raw model classes the rule watches; default: all")
    zones: list[Name] | None = Field(None, description="zones the rule watches; default: the whole image")
    min_seconds: float = Field(1.0, ge=0, le=DAY_S, description="the condition must hold this long before an event starts")
    clear_seconds: float = Field(2.0, ge=0, le=DAY_S, description="and be absent this long before it ends")
    cooldown_s: float = Field(30.0, ge=0, le=DAY_S, description="no new event for the same object/zone this long after one ends")
    ambiguous_conf: tuple[float, float] | None = Field(None, description="[lo, hi): detections scoring here are unsure")
    unreviewed_after_s: float | None = Field(
        30.0, ge=0, le=DAY_S, description="an ambiguous event waits this long for a review, then starts unconfirmed (null: forever)"
    )

    @field_validator("ambiguous_conf")
    @classmethod
    def _band(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 <= value[0] < value[1] <= 1:
            raise ValueError("needs 0 <= lo < hi <= 1")
        return value

    @property
    def key(self) -> str:
        return self.name or self.rule


class IntrusionRule(SafetyRuleBase):
    rule: Literal["intrusion"]
    zones: list[Name] = Field(min_length=1, description="the restricted zones")
    per: Literal["object", "zone"] = Field(
        "object", description="one event per tracked object, or one per zone while anyone is in it (survives id switches)"
    )


class PersonDownRule(SafetyRuleBase):
    rule: Literal["person_down"]
    fall_classes: list[str] = Field(["Fall"], description="raw model classes that mean a fallen person")
    wide_ratio: float | None = Field(1.3, gt=0, le=100, description="a tracked box this much wider than tall is down (null: off)")
    tall_ratio: float = Field(1.5, gt=0, le=100, description="...if it was this much taller than wide before")
    tall_within_s: float = Field(5.0, gt=0, le=DAY_S, description="...within this many seconds before it turned wide")
    min_seconds: float = Field(3.0, ge=0, le=DAY_S)
    ambiguous_conf: tuple[float, float] | None = (0.3, 0.6)


class OccupancyRule(SafetyRuleBase):
    rule: Literal["occupancy"]
    above: int | None = Field(None, ge=0, le=1_000_000, description="an event while more than this many are in the zone")
    below: int | None = Field(None, ge=1, le=1_000_000, description="an event while fewer than this many are in the zone")

    @model_validator(mode="after")
    def _one_bound(self) -> OccupancyRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above, below")
        return self


class DwellRule(SafetyRuleBase):
    rule: Literal["dwell"]
    max_seconds: float = Field(gt=0, le=30 * DAY_S, description="an event when a tracked object stays in a zone longer than this")
    min_seconds: float = Field(0.0, ge=0, le=DAY_S)


class StaleCameraRule(SafetyRuleBase):
    rule: Literal["stale_camera"]
    no_frame_s: float = Field(10.0, gt=0, le=DAY_S, description="no frame for this long (checked on the wall clock)")
    black_level: float | None = Field(12.0, ge=0, le=255, description="mean brightness below this is black (null: off)")
    frozen_diff: float | None = Field(0.2, ge=0, le=255, description="mean pixel change below this is frozen (null: off)")
    min_seconds: float = Field(10.0, ge=0, le=DAY_S, description="black or frozen this long")
    cooldown_s: float = Field(0.0, ge=0, le=DAY_S)


SafetyRule = Annotated[IntrusionRule | PersonDownRule | OccupancyRule | DwellRule | StaleCameraRule, Field(discriminator="rule")]
