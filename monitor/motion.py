"""Motion gating: a cheap per-camera check whether a frame needs the detector at all.

Each frame is shrunk to ``scale_width`` pixels wide, turned grey and blurred, then compared with the
frame the detector last saw (not with the previous frame: slow movement adds up until it counts).
When too few pixels changed and the keep-alive has not expired, the camera reuses its last
detections; a still scene is still re-checked every ``keepalive_s`` so counts never go stale.
"""

from __future__ import annotations

import cv2
import numpy as np

from monitor.config import MotionConfig

PIXEL_DELTA = 25  # grey levels; below this a pixel difference is sensor noise or compression
BLUR_KERNEL = (5, 5)


def shrink(image: np.ndarray, width: int) -> np.ndarray:
    """The image as a small blurred grey picture, ``width`` pixels wide (never enlarged)."""
    height, full_width = image.shape[:2]
    if full_width > width:
        size = (width, max(1, round(height * width / full_width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.GaussianBlur(grey, BLUR_KERNEL, 0)


def changed_fraction(reference: np.ndarray, current: np.ndarray) -> float:
    """Fraction of pixels whose grey level moved by more than PIXEL_DELTA."""
    if reference.shape != current.shape:
        return 1.0
    diff = cv2.absdiff(reference, current)
    return cv2.countNonZero(cv2.threshold(diff, PIXEL_DELTA, 255, cv2.THRESH_BINARY)[1]) / diff.size


class MotionGate:
    """Decides per frame whether to run the detector; one per camera (it holds that camera's reference)."""

    def __init__(self, config: MotionConfig):
        self.config = config
        self._reference: np.ndarray | None = None
        self._reference_time = 0.0
        self.last_change = 0.0  # changed fraction of the last checked frame, for tests and debugging

    def should_infer(self, image: np.ndarray, now: float) -> bool:
        """True when the frame must go to the detector; it then becomes the new reference."""
        if not self.config.enabled:
            return True
        small = shrink(image, self.config.scale_width)
        elapsed = now - self._reference_time  # negative when a looping file starts over
        if self._reference is None or not 0 <= elapsed < self.config.keepalive_s:
            self.last_change = 1.0
        else:
            self.last_change = changed_fraction(self._reference, small)
            if self.last_change <= self.config.threshold:
                return False
        self._reference, self._reference_time = small, now
        return True

    def reset(self) -> None:
        """Forget the reference (e.g. after a failed inference): the next frame is always inferred."""
        self._reference = None
