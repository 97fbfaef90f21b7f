"""Ambiguity: grey-band, flicker, class-disagreement and weak-event scores; the stretch selector's best frame."""

from __future__ import annotations

import pytest
from escalation_support import CLASS_NAMES, JACKET, JACKET_DETECTIONS, PEOPLE, app_config, boxes, fake_detector, frame_result

from monitor.common import ALL_ZONES
from monitor.escalation.ambiguity import Ambiguity, AmbiguityScorer, StretchSelector
from monitor.safety.events import OpenEvent


def scorer(app, **thresholds):
    config = app.cameras["street"].escalation
    if thresholds:
        config = config.model_copy(update={"thresholds": config.thresholds.model_copy(update=thresholds)})
    return AmbiguityScorer(config, CLASS_NAMES, fake_detector(app).thresholds.by_class)


def test_grey_band_scores_a_detection_near_its_threshold(street_image):
    app = app_config()
    s = scorer(app)
    ambiguity = s.score(frame_result(street_image, detections=JACKET_DETECTIONS, objects=PEOPLE), [])
    # Fall at 0.5 against its 0.6 threshold, margin 0.15: 1 - 0.5 * 0.1 / 0.15
    assert ambiguity.reason == "grey_band"
    assert ambiguity.score == pytest.approx(1 - 0.5 * 0.1 / 0.15, abs=1e-3)
    assert ambiguity.evidence[0]["class"] == "Fall" and ambiguity.evidence[0]["box"] == JACKET
    assert s.score(frame_result(street_image, detections=PEOPLE, objects=PEOPLE), []).score == 0.0
    only_normal = scorer(app, grey_classes=["Normal"])
    assert only_normal.score(frame_result(street_image, detections=JACKET_DETECTIONS), []).score == 0.0


def test_flicker_scores_changing_raw_counts(street_image):
    s = scorer(app_config(), flicker_window=6, flicker_changes=4)
    scores = [s.score(frame_result(street_image, raw={ALL_ZONES: {"person": n}}), []) for n in (2, 3, 2, 3, 2)]
    assert [a.score for a in scores] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert scores[-1].reason == "flicker"


def test_class_disagreement_on_one_object(street_image):
    s = scorer(app_config())
    overlap = boxes([([100, 100, 140, 200], 0.7, 0, -1), ([101, 102, 141, 200], 0.65, 1, -1)])
    assert s.score(frame_result(street_image, detections=overlap), []).reason == "class_disagreement"
    s.score(frame_result(street_image, objects=boxes([([1, 1, 9, 9], 0.9, 0, 7)])), [])
    flipped = s.score(frame_result(street_image, objects=boxes([([1, 1, 9, 9], 0.9, 1, 7)])), [])
    assert flipped.reason == "class_disagreement" and flipped.evidence == [{"track_id": 7, "was": "Normal", "now": "Fall"}]


def test_weak_safety_event_is_ambiguous_until_reviewed(street_image):
    s = scorer(app_config())
    event = OpenEvent("ev1", "person_down", "person_down", "lawn", (3,), True, "candidate", "pending", ())
    assert s.score(frame_result(street_image), [event]).reason == "weak_event"
    s.reviewed_events.add("ev1")
    assert s.score(frame_result(street_image), [event]).score == 0.0


def test_stretch_hands_on_its_best_frame_once(street_image):
    selector = StretchSelector(trigger=0.5, stretch_s=1.0)
    results = [frame_result(street_image, index=i) for i in range(6)]
    scores = [0.6, 0.9, 0.7, 0.2, 0.6, 0.55]
    out = [selector.update(0.1 * i, Ambiguity(s, "grey_band"), r, []) for i, (s, r) in enumerate(zip(scores, results))]
    assert [o is not None for o in out] == [False, False, False, True, False, False]
    assert out[3].result.frame.index == 1  # the 0.9 frame
    # a lasting ambiguity is still sent after stretch_s
    assert selector.update(1.5, Ambiguity(0.6, "grey_band"), results[0], []) is not None
