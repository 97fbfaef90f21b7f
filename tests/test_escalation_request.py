"""An escalation request: built from a chosen frame with copies of what may change later, and its events."""

from __future__ import annotations

import numpy as np
from escalation_support import JACKET_DETECTIONS, PEOPLE, app_config, camera_escalation, frame_result

from monitor.common import ALL_ZONES
from monitor.escalation import Ambiguity, Candidate, build_request
from monitor.metrics import Metrics
from monitor.safety.events import OpenEvent

DOWN = OpenEvent("ev-down", "person_down", "person_down", "lawn", (3,), True, "candidate", "pending", ())
CROWD = OpenEvent("ev-crowd", "crowding", "occupancy", "path", (1, 2), False, "active", "auto", ())


def request_of(street_image, events=(), score=0.73456):
    brief = camera_escalation(app_config(), Metrics())[0].brief
    result = frame_result(street_image, index=17, detections=JACKET_DETECTIONS, objects=PEOPLE)
    replies = []
    request = build_request(brief, Candidate.of(Ambiguity(score, "grey_band", [{"class": "Fall"}]), result, list(events)), replies.append)
    return request, result, replies


def test_the_request_carries_the_frame_and_the_reason(street_image):
    request, result, _ = request_of(street_image)
    assert request.camera == "street" and request.reason == "grey_band" and request.score == 0.735
    assert request.evidence == [{"class": "Fall"}]
    assert request.frame_index == 17 and request.wall_time == result.frame.wall_time
    assert request.objects is result.objects and request.detections is result.detections
    assert request.object_labels == ["person", "person"]
    assert request.detector_counts[ALL_ZONES] == {"person": 2}


def test_image_and_counts_are_copies_the_camera_may_change_afterwards(street_image):
    image = street_image.copy()
    request, result, _ = request_of(image)
    result.frame.image[:] = 0
    result.counts[ALL_ZONES]["person"] = 9
    assert np.array_equal(request.image, street_image)
    assert request.detector_counts[ALL_ZONES] == {"person": 2}


def test_event_ids_and_the_rule_of_an_event(street_image):
    request, _, _ = request_of(street_image, [DOWN, CROWD])
    assert request.event_ids == ["ev-down", "ev-crowd"]
    assert request.rule_of("ev-crowd") == "crowding" and request.rule_of("ev-down") == "person_down"
    assert request.rule_of("ev-other") is None
    assert request_of(street_image)[0].event_ids == []


def test_reply_reaches_the_camera_callback(street_image):
    request, _, replies = request_of(street_image)
    request.reply("done")
    assert replies == ["done"]
