"""The typed result object that flows through the stages of one camera's frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Counts = dict[str, dict[str, int]]  # zone -> label -> n


@dataclass(frozen=True, slots=True)
class Boxes:
    """Objects in one frame as parallel arrays (N rows)."""

    xyxy: np.ndarray  # (N, 4) float32, image pixels
    conf: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int32, the model's class index
    track_id: np.ndarray  # (N,) int64, -1 when untracked

    @staticmethod
    def empty() -> Boxes:
        return Boxes(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, np.int64)
        )

    def __len__(self) -> int:
        return len(self.conf)

    def select(self, mask: np.ndarray) -> Boxes:
        return Boxes(self.xyxy[mask], self.conf[mask], self.class_id[mask], self.track_id[mask])

    def concat(self, other: Boxes) -> Boxes:
        return Boxes(
            np.concatenate([self.xyxy, other.xyxy]),
            np.concatenate([self.conf, other.conf]),
            np.concatenate([self.class_id, other.class_id]),
            np.concatenate([self.track_id, other.track_id]),
        )


@dataclass(slots=True)
class CapturedFrame:
    """What the capture stage hands on: the newest decoded image of a camera."""

    camera: str
    index: int  # per camera, increasing
    image: np.ndarray  # BGR uint8
    wall_time: float  # time.time() at capture
    mono_time: float  # time.monotonic() at capture
    # seconds of the stream: a file's position (frame / fps), a live camera's seconds since its reader started
    media_time: float | None = None

    @property
    def stream_time(self) -> float:
        """The clock rules and timers run on (events' ``start_s``): video time for files, the same events at any
        playback speed; for live cameras the seconds since the monitor started reading them."""
        return self.media_time if self.media_time is not None else self.mono_time


@dataclass(slots=True)
class FrameResult:
    """One frame's journey: each stage fills its part."""

    frame: CapturedFrame
    labels: list[str]  # model class index -> reported label (after aliases)
    detections: Boxes = field(default_factory=Boxes.empty)  # every prediction above the floor confidence
    objects: Boxes = field(default_factory=Boxes.empty)  # what is counted: tracked (or thresholded) objects
    inferred: bool = True  # False when the motion gate reused the previous frame's objects
    object_zones: list[tuple[str, ...]] = field(default_factory=list)  # per object, the zones it is in
    raw_counts: Counts = field(default_factory=dict)
    counts: Counts = field(default_factory=dict)  # smoothed; what is published
    line_totals: dict[str, dict[str, int]] = field(default_factory=dict)  # line -> {"in": n, "out": n}
    counts_changed: bool = False

    @property
    def camera(self) -> str:
        return self.frame.camera

    def label_of(self, row: int, boxes: Boxes | None = None) -> str:
        boxes = self.objects if boxes is None else boxes
        return self.labels[int(boxes.class_id[row])]
