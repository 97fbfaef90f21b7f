"""Shared by the detection tests: the person model's config at a small size, and comparing boxes."""

from __future__ import annotations

import numpy as np

from monitor.config import ModelConfig
from monitor.frame import Boxes

IMGSZ = 320  # small: these tests check behaviour, not accuracy


def model_config(path, **overrides) -> ModelConfig:
    # PyTorch unless asked: these tests compare the detector's boxes with Ultralytics' own predict on the .pt
    settings = dict(path=path, device="cpu", imgsz=IMGSZ, conf=0.35, class_conf={"Fall": 0.6}, warmup=False, engine="pytorch")
    return ModelConfig(**{**settings, **overrides})


def same_boxes(a: Boxes, b: Boxes, atol: float) -> bool:
    return (
        len(a) == len(b)
        and np.array_equal(a.class_id, b.class_id)
        and np.allclose(a.xyxy, b.xyxy, atol=atol)
        and np.allclose(a.conf, b.conf, atol=atol / 100)
    )
