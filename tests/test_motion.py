"""Motion gating: the gate on synthetic frames, then in the real pipeline on a frozen stretch of the street clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.capture import CameraReader
from monitor.config import MotionConfig, parse_config
from monitor.detection import Detector, InferenceWorker
from monitor.frame import CapturedFrame, FrameResult
from monitor.metrics import Metrics
from monitor.motion import MotionGate, changed_fraction, shrink
from monitor.pipeline import CameraLoop
from monitor.publishing import Publisher
from conftest import street_config

GATE = MotionConfig(enabled=True, threshold=0.002, keepalive_s=2.0, scale_width=160)


def scene(person_at: tuple[int, int] | None = None, noise_seed: int | None = None) -> np.ndarray:
    """A 768x576 textured 'street' with an optional dark 'person' (30x80) at (x, y)."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(60, 200, (576, 768, 3), dtype=np.uint8), (31, 31), 0)
    if person_at:
        x, y = person_at
        image[y : y + 80, x : x + 30] = (20, 20, 30)
    if noise_seed is not None:  # sensor noise of a few grey levels
        noise = np.random.default_rng(noise_seed).integers(-4, 5, image.shape)
        image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return image


def test_first_frame_is_always_inferred():
    assert MotionGate(GATE).should_infer(scene(), now=0.0)


def test_still_frames_with_sensor_noise_have_no_motion():
    gate = MotionGate(GATE)
    gate.should_infer(scene((300, 300), noise_seed=1), now=0.0)
    decisions = [gate.should_infer(scene((300, 300), noise_seed=seed), now=0.1 * seed) for seed in range(2, 12)]
    assert decisions == [False] * 10
    assert gate.last_change <= GATE.threshold


def test_a_moved_object_is_motion():
    gate = MotionGate(GATE)
    gate.should_infer(scene((300, 300)), now=0.0)
    assert gate.should_infer(scene((340, 300)), now=0.1)
    assert gate.last_change > GATE.threshold


def test_slow_movement_adds_up_against_the_last_inferred_frame():
    gate = MotionGate(GATE)
    gate.should_infer(scene((300, 300)), now=0.0)
    decisions = [gate.should_infer(scene((300 + step, 300)), now=0.01 * step) for step in range(1, 40)]
    assert any(decisions), "a person creeping 1 px per frame must eventually be re-detected"


def test_keepalive_forces_a_recheck_of_a_still_scene():
    gate = MotionGate(GATE)
    still = scene((300, 300))
    assert gate.should_infer(still, now=0.0)
    assert not gate.should_infer(still, now=1.9)
    assert gate.should_infer(still, now=2.0)  # keep-alive expired
    assert not gate.should_infer(still, now=2.5)  # and the clock restarts from the re-check


def test_a_clock_that_goes_back_counts_as_an_expired_keepalive():
    gate = MotionGate(GATE)
    still = scene()
    gate.should_infer(still, now=100.0)
    assert gate.should_infer(still, now=0.5)  # e.g. a looping file started over


def test_disabled_gate_infers_every_frame():
    gate = MotionGate(MotionConfig(enabled=False))
    still = scene()
    assert all(gate.should_infer(still, now=t) for t in (0.0, 0.1, 0.2))


def test_reset_makes_the_next_frame_inferred():
    gate = MotionGate(GATE)
    still = scene()
    gate.should_infer(still, now=0.0)
    gate.reset()
    assert gate.should_infer(still, now=0.1)


def test_shrink_keeps_the_aspect_and_change_of_size_counts_as_motion():
    small = shrink(scene(), 160)
    assert small.shape == (120, 160)
    assert changed_fraction(small, shrink(scene(), 80)) == 1.0


# --- in the pipeline, with the real model on real frames -------------------------------------

BUSY, STILL = 12, 40  # frames: a busy stretch, then the last busy frame frozen, then busy again
FPS = 10.0


@pytest.fixture(scope="module")
def spliced_frames(clip) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(clip))
    busy = [capture.read()[1] for _ in range(2 * BUSY)]
    capture.release()
    return busy[:BUSY] + [busy[BUSY - 1]] * STILL + busy[BUSY:]


def run_camera(frames: list[np.ndarray], person_model, motion: dict, port: int, state_dir: Path) -> tuple[list[FrameResult], Metrics]:
    data = street_config(port)
    data["state_dir"] = str(state_dir)  # a module fixture runs before the per-test state dir is set
    data["models"]["person"].update(imgsz=320, path=str(person_model))
    data["cameras"]["street"]["motion"] = motion
    app = parse_config(data)
    camera = app.cameras["street"]
    metrics = Metrics()
    worker = InferenceWorker(Detector("person", app.models["person"]), metrics)
    publisher = Publisher(app.mqtt, metrics)
    loop = CameraLoop("street", camera, app, CameraReader("street", camera), worker, publisher, metrics)
    worker.start()
    try:
        results = []
        for index, image in enumerate(frames):  # frames at the clip's 10 fps, on its own clock
            frame = CapturedFrame("street", index, image, 1_700_000_000 + index / FPS, 1000 + index / FPS)
            results.append(loop.process(FrameResult(frame, loop.labels)))
    finally:
        worker.stop()
    return results, metrics


@pytest.fixture(scope="module")
def gated_and_plain(spliced_frames, person_model, tmp_path_factory):
    port = 1  # nothing is sent: the publisher is never started, messages only queue
    gated = run_camera(spliced_frames, person_model, {"enabled": True, "keepalive_s": 2.0}, port, tmp_path_factory.mktemp("gated"))
    plain = run_camera(spliced_frames, person_model, {"enabled": False}, port, tmp_path_factory.mktemp("plain"))
    return gated, plain


def inferred(results: list[FrameResult], start: int, stop: int) -> int:
    return sum(r.inferred for r in results[start:stop])


def test_gating_cuts_inferences_on_the_frozen_stretch(gated_and_plain):
    (gated, metrics), (plain, _) = gated_and_plain
    still = slice(BUSY, BUSY + STILL)
    assert inferred(plain, still.start, still.stop) == STILL
    assert inferred(gated, still.start, still.stop) * 3 <= STILL
    assert inferred(gated, still.start, still.stop) >= STILL // 20  # keep-alive: every 2 s = 20 frames
    skipped = metrics.registry.get_sample_value("monitor_inference_skipped_total", {"camera": "street"})
    assert skipped == len(gated) - inferred(gated, 0, len(gated))


def test_gating_leaves_counts_unchanged(gated_and_plain):
    (gated, _), (plain, _) = gated_and_plain
    assert [r.counts for r in gated] == [r.counts for r in plain]
    assert gated[BUSY + STILL // 2].counts["_all"]["person"] > 0


def test_busy_frames_are_all_inferred(gated_and_plain):
    (gated, _), _ = gated_and_plain
    assert inferred(gated, 0, BUSY) == BUSY
    assert inferred(gated, BUSY + STILL, len(gated)) == BUSY
