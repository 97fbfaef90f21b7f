"""The prompt and the image sent with it: what the model is told about the camera, zones, unsure boxes and
open events; blurring, downscaling, zone outlines, JPEG; and the token and money estimate of a call."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from monitor.config import EscalationConfig
from monitor.escalation.request import EscalationRequest
from monitor.frame import Boxes

SYSTEM_PROMPT = (
    "You check the automatic object counts and safety alerts of a fixed camera. Look at the image carefully, "
    "count only what you can see, and answer with JSON that matches the given schema exactly."
)


def build_prompt(request: EscalationRequest, width: int, height: int) -> str:
    brief = request.brief
    src_h, src_w = request.image.shape[:2]
    lines = [
        f"Camera: {brief.description or brief.camera}.",
        f"The image is {width}x{height} pixels.",
        "Count every clearly visible object of these classes:",
    ]
    for label in brief.labels:
        classes = brief.label_classes.get(label, [label])
        also = f" (the detector's classes {', '.join(classes)})" if classes != [label] else ""
        lines.append(f"- {label}{also}")
    if brief.zones:
        drawn = " They are outlined and named on the image." if brief.config.draw_zones else ""
        lines.append(f"Zones (an object is in a zone when the bottom centre of its box is inside it).{drawn}")
        for name, zone in brief.zones.items():
            xs = [p[0] for p in zone["polygon"]]
            ys = [p[1] for p in zone["polygon"]]
            where = (
                f"x {100 * min(xs) / src_w:.0f}-{100 * max(xs) / src_w:.0f}%, "
                f"y {100 * min(ys) / src_h:.0f}-{100 * max(ys) / src_h:.0f}% of the image"
            )
            about = f": {zone['description']}" if zone["description"] else ""
            lines.append(f"- zone {name}{about}; spans {where}; counts {', '.join(zone['labels'])}")
    unsure = [e for e in request.evidence if "box" in e]
    if unsure:
        lines.append("The automatic detector is unsure about these boxes (x1, y1, x2, y2 in source pixels):")
        lines += [f"- {e['class']} at {e['box']} (confidence {e['conf']})" for e in unsure]
    if request.events:
        lines.append("Candidate safety events; for each, say whether it is real and why in a few words:")
        for event in request.events:
            zone = f" in zone {event.zone}" if event.zone else ""
            lines.append(f"- event id {event.id}: {event.rule}{zone}")
    lines.append("Answer only with JSON matching the schema: totals (whole image), zones, events, and a one-sentence description.")
    return "\n".join(lines)


def blur_boxes(image: np.ndarray, boxes: Boxes, labels: list[str], blurred_labels: list[str]) -> np.ndarray:
    """Pixelate the boxes whose label is one of ``blurred_labels`` (a copy; the input is left as is)."""
    out = image.copy()
    h, w = out.shape[:2]
    for row, label in enumerate(labels):
        if label not in blurred_labels:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in boxes.xyxy[row])
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        roi = out[y1:y2, x1:x2]
        block = max(6, max(x2 - x1, y2 - y1) // 6)
        small = cv2.resize(roi, (max(1, (x2 - x1) // block), max(1, (y2 - y1) // block)), interpolation=cv2.INTER_AREA)
        out[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    return out


def fit_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is ``long_side`` (never upscale); returns the image and the scale."""
    h, w = image.shape[:2]
    scale = min(1.0, long_side / max(h, w))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def draw_zones(image: np.ndarray, zones: dict[str, dict], scale: float) -> np.ndarray:
    out = image.copy()
    for name, zone in zones.items():
        points = (np.array(zone["polygon"], np.float32) * scale).round().astype(np.int32)
        cv2.polylines(out, [points], True, (0, 255, 255), 1, cv2.LINE_AA)
        x, y = points.min(axis=0)
        cv2.putText(out, name, (int(x) + 3, int(y) + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1, cv2.LINE_AA)
    return out


@dataclass
class EncodedImage:
    jpeg: bytes
    width: int
    height: int
    private: np.ndarray  # the full-size frame after blurring, for the dataset


def encode_image(request: EscalationRequest, config: EscalationConfig) -> EncodedImage:
    cam = request.brief.config
    private = request.image
    if cam.blur_people:
        private = blur_boxes(private, request.objects, request.object_labels, cam.person_labels)
    sent, scale = fit_long_side(private, config.image_long_side)
    if cam.draw_zones and request.brief.zones:
        sent = draw_zones(sent, request.brief.zones, scale)
    ok, jpeg = cv2.imencode(".jpg", sent, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return EncodedImage(jpeg.tobytes(), sent.shape[1], sent.shape[0], private)


def image_tokens(width: int, height: int) -> int:
    """OpenAI's high-detail estimate: fit in 2048x2048, shortest side at most 768, 170 tokens per 512 tile + 85."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def money(config: EscalationConfig, input_tokens: int, output_tokens: int) -> float:
    return (
        input_tokens * config.price_input_per_1m / 1e6 + output_tokens * config.price_output_per_1m / 1e6 + config.price_per_image
    )
