"""Motion gating benchmark: inference calls with and without the gate, and whether counts stay the same.

    python -m bench.motion --busy 30 --still 60 --imgsz 640

Clips (written to a scratch folder, 10 fps like the source):
- ``real``: the street clip's first ``busy * 2`` frames as they are (people walk all the time);
- ``frozen``: one real frame repeated for ``still`` frames (a camera whose scene stops);
- ``spliced``: busy frames, then the last of them frozen for ``still`` frames, then busy frames again.
Each clip runs through the whole monitor twice (gate off, gate on), ``realtime: false``, publishing to
a real Mosquitto. Counts are compared frame by frame; prints a table, writes bench/results/motion-latest.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import cv2

from bench.loopback import Broker
from bench.report import markdown_table, write_results
from bench.run import ROOT, load_bench_config

FPS = 10.0


def read_frames(clip: str, count: int) -> list:
    capture = cv2.VideoCapture(clip)
    frames = []
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def write_clip(path: Path, frames: list) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    for image in frames:
        writer.write(image)
    writer.release()
    return path


def make_clips(source: str, busy: int, still: int, folder: Path) -> dict[str, tuple[Path, slice]]:
    """name -> (clip, the still stretch's frame range)."""
    frames = read_frames(source, 2 * busy)
    return {
        "real": (write_clip(folder / "real.avi", frames), slice(0, 0)),
        "frozen": (write_clip(folder / "frozen.avi", [frames[busy - 1]] * still), slice(0, still)),
        "spliced": (
            write_clip(folder / "spliced.avi", frames[:busy] + [frames[busy - 1]] * still + frames[busy:]),
            slice(busy, busy + still),
        ),
    }


class FrameLog:
    """A Metrics that records, per processed frame, whether it was inferred and the counts published."""

    def __init__(self):
        from monitor.metrics import Metrics

        self.inferred: list[bool] = []
        self.counts: list[dict] = []
        self.finished = threading.Event()
        log, skipped = self, threading.local()

        class Recording(Metrics):
            def inference_skipped(self, camera: str) -> None:
                super().inference_skipped(camera)
                skipped.flag = True

            def counts(self, camera, counts, line_totals) -> None:
                super().counts(camera, counts, line_totals)
                log.inferred.append(not getattr(skipped, "flag", False))
                log.counts.append({zone: dict(per_label) for zone, per_label in counts.items()})
                skipped.flag = False

        self.metrics = Recording()


def run_clip(clip: Path, gated: bool, args: argparse.Namespace, port: int) -> tuple[FrameLog, float]:
    from monitor.pipeline import Monitor

    config, model_name, model, camera_name, camera = load_bench_config(Path(args.config), args.imgsz, "none")
    motion = camera.motion.model_copy(update={"enabled": gated})
    camera = camera.model_copy(update={"source": str(clip), "realtime": False, "loop": False, "motion": motion})
    app = config.model_copy(
        update={
            "mqtt": config.mqtt.model_copy(update={"port": port, "client_id": f"bench-motion-{gated}"}),
            "metrics": config.metrics.model_copy(update={"enabled": False}),
            "models": {model_name: model},
            "cameras": {camera_name: camera},
        }
    )
    log = FrameLog()
    monitor = Monitor(app, log.metrics)
    monitor.start()
    started = time.monotonic()
    monitor.wait(threading.Event())
    elapsed = time.monotonic() - started
    monitor.stop()
    return log, elapsed


def compare(name: str, still: slice, plain: FrameLog, gated: FrameLog, seconds: tuple[float, float]) -> dict:
    frames = len(plain.inferred)
    still_plain, still_gated = sum(plain.inferred[still]), sum(gated.inferred[still])
    return {
        "clip": name,
        "frames": frames,
        "calls_without_gate": sum(plain.inferred),
        "calls_with_gate": sum(gated.inferred),
        "reduction": round(sum(plain.inferred) / max(1, sum(gated.inferred)), 2),
        "still_frames": still.stop - still.start,
        "still_calls_without_gate": still_plain,
        "still_calls_with_gate": still_gated,
        "still_reduction": round(still_plain / max(1, still_gated), 2) if still_plain else None,
        "counts_identical": len(gated.counts) == frames and plain.counts == gated.counts,
        "frames_with_other_counts": sum(a != b for a, b in zip(plain.counts, gated.counts)),
        "fps_without_gate": round(frames / seconds[0], 2),
        "fps_with_gate": round(len(gated.inferred) / seconds[1], 2),
    }


def table(rows: list[dict]) -> str:
    keys = ["clip", "frames", "calls_without_gate", "calls_with_gate", "reduction", "still_frames",
            "still_calls_without_gate", "still_calls_with_gate", "still_reduction", "counts_identical",
            "fps_without_gate", "fps_with_gate"]  # fmt: skip
    return markdown_table(keys, [[str(row[k]) for k in keys] for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.motion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=30, help="busy frames before and after the still stretch")
    parser.add_argument("--still", type=int, default=60, help="frozen frames (10 fps: 60 = 6 s)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--clips", default="frozen,spliced,real")
    args = parser.parse_args(argv)
    _, _, _, _, camera = load_bench_config(Path(args.config), args.imgsz, "none")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        clips = make_clips(str(camera.source), args.busy, args.still, Path(scratch))
        broker = Broker(Path(scratch)).start()
        try:
            for name in args.clips.split(","):
                clip, still = clips[name]
                plain, plain_s = run_clip(clip, False, args, broker.port)
                gated, gated_s = run_clip(clip, True, args, broker.port)
                rows.append(compare(name, still, plain, gated, (plain_s, gated_s)))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            broker.stop()
    print(table(rows))
    report = {"settings": vars(args), "motion": camera.motion.model_dump(), "clips": rows}
    write_results("motion-latest", report)
    print("written: bench/results/motion-latest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
