"""The prompt and image: the token estimate of an image, people blurred before the frame leaves (checked on
what a real HTTP server received)."""

from __future__ import annotations

import cv2
import numpy as np
from escalation_support import app_config, boxes, camera_escalation, escalations, frame_result, run_until, value

from monitor.escalation.prompt import image_tokens
from monitor.metrics import Metrics


def test_image_token_estimate_follows_openai_tiles():
    assert image_tokens(512, 384) == 85 + 170 * 1
    assert image_tokens(768, 576) == 85 + 170 * 4
    assert image_tokens(4000, 3000) == 85 + 170 * 4  # scaled to 1024x768
    assert image_tokens(4096, 2048) == 85 + 170 * 6  # scaled to 1536x768


def test_people_are_blurred_before_the_frame_leaves(server, street_image):
    person = [300.0, 250.0, 380.0, 450.0]
    metrics = Metrics()
    app = app_config(server, blur_people=True, draw_zones=False, audit_every_s=0.01)
    escalation, service = camera_escalation(app, metrics)
    service.start()
    try:
        objects = boxes([(person, 0.9, 0, 1)])
        run_until(escalation, lambda i: frame_result(street_image, index=i, detections=objects, objects=objects), escalations)
    finally:
        service.stop()
    sent = server.received[0].image
    scale = 512 / 768
    x1, y1, x2, y2 = (int(v * scale) for v in person)
    original = cv2.resize(street_image, (512, 384), interpolation=cv2.INTER_AREA)

    def detail(image):  # high-frequency energy inside the box
        roi = cv2.cvtColor(image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2], cv2.COLOR_BGR2GRAY)
        return float(np.abs(cv2.Laplacian(roi, cv2.CV_64F)).mean())

    assert detail(sent) < 0.5 * detail(original)
    outside = (slice(20, 100), slice(20, 200))
    assert np.abs(sent[outside].astype(int) - original[outside].astype(int)).mean() < 8  # only JPEG noise elsewhere
    assert value(metrics, "monitor_escalations_total", camera="street", reason="audit", outcome="ok") >= 1
