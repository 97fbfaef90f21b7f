"""Count accuracy on the labelled street frames (tests/data/vtest_labels.json): the real Monitor over three
60-frame segments of the clip, its counts compared with the hand labels. Shared by
tests/test_count_accuracy.py (every frame processed) and bench/defaults.py (also at the clip's 10 fps,
where a slow model drops frames and a subscriber sees the counts of the last processed one)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2

from monitor.common import ALL_ZONES
from monitor.config import load_config
from monitor.counting import raw_counts

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "tests" / "data" / "vtest_labels.json"
SEGMENT_STARTS = (100, 380, 640)
SEGMENT_LENGTH = 60
LABEL_OFFSETS = (24, 36, 48, 59)
ZONES = ("lot", "path", "lawn")
KINDS = ("detected", "raw", "smoothed")


def labelled_frames() -> list[int]:
    return [start + offset for start in SEGMENT_STARTS for offset in LABEL_OFFSETS]


def cut_segments(clip: Path, folder: Path) -> dict[str, Path]:
    """Lossless (FFV1) copies of the clip's segments: the same pixels the pipeline would decode from the clip."""
    capture = cv2.VideoCapture(str(clip))
    paths, writers, index = {}, {}, 0
    last = max(SEGMENT_STARTS) + SEGMENT_LENGTH
    while index < last:
        ok, image = capture.read()
        if not ok:
            break
        for start in SEGMENT_STARTS:
            if start <= index < start + SEGMENT_LENGTH:
                if start not in writers:
                    paths[start] = folder / f"segment-{start}.avi"
                    writers[start] = cv2.VideoWriter(str(paths[start]), cv2.VideoWriter_fourcc(*"FFV1"), 10, image.shape[1::-1])
                writers[start].write(image)
        index += 1
    capture.release()
    for writer in writers.values():
        writer.release()
    return {f"seg{start}": path for start, path in paths.items()}


def segments_config(data: dict, segments: dict[str, Path]) -> dict:
    """``data`` (a street config) with one camera per segment instead of the street camera."""
    street = data["cameras"].pop("street")
    return {**data, "cameras": {name: {**street, "source": str(path)} for name, path in segments.items()}}


def recording_monitor(config_path: Path, metrics=None):
    """A Monitor on ``config_path`` (cameras named seg<first clip frame>) that records, per clip frame index it
    processes, the detected, raw and smoothed people counts per zone; and that record."""
    from monitor.pipeline import Monitor

    monitor = Monitor(load_config(config_path), metrics)
    results: dict[int, dict] = {}
    for name, loop in monitor.loops.items():
        loop.process = _recording(loop, int(name.removeprefix("seg")), results)
    return monitor, results


def run_to_end(monitor) -> None:
    monitor.start()
    try:
        monitor.wait(threading.Event())
    finally:
        monitor.stop()


def run_monitor(config_path: Path, metrics=None) -> dict[int, dict]:
    """Run a recording monitor to the end of its files; what it recorded."""
    monitor, results = recording_monitor(config_path, metrics)
    run_to_end(monitor)
    return results


def _recording(loop, offset: int, results: dict[int, dict]):
    process = loop.process

    def process_and_record(result):
        result = process(result)
        results[offset + result.frame.index] = {
            "detected": _people(detected_counts(loop, result)),
            "raw": _people(result.raw_counts),
            "smoothed": _people(result.counts),
        }
        return result

    return process_and_record


def detected_counts(loop, result) -> dict:
    """What a counter without tracking or smoothing reports: the frame's detections above their class thresholds."""
    detections = result.detections.select(loop.tracker.thresholds.passing(result.detections))
    labels = [result.labels[c] for c in detections.class_id.tolist()]
    return raw_counts(detections, loop.zones.assign(detections, labels), labels, loop.zone_labels)


def _people(counts: dict) -> dict[str, int]:
    return {"all": counts[ALL_ZONES]["person"], **{zone: counts[zone]["person"] for zone in ZONES}}


def mean_absolute_error(predicted: dict[int, dict[str, int]], labels: dict[int, dict[str, int]]) -> float:
    errors = [abs(predicted[frame][key] - truth[key]) for frame, truth in labels.items() for key in ("all", *ZONES)]
    return sum(errors) / len(errors)


def seen_at(results: dict[int, dict], frames: list[int]) -> dict[int, dict]:
    """Per frame, the counts of the last frame processed up to it: what a subscriber knows when the model skips frames."""
    return {frame: results[max(f for f in results if f <= frame)] for frame in frames}


def load_labels() -> dict[int, dict[str, int]]:
    raw = json.loads(LABELS.read_text())["frames"]
    return {int(frame): {"all": entry["people"], **entry["zones"]} for frame, entry in raw.items()}


def count_changes(results: dict[int, dict], kind: str) -> int:
    return sum(
        results[frame][kind][key] != results[frame - 1][kind][key]
        for frame in results
        if frame - 1 in results
        for key in ("all", *ZONES)
    )
