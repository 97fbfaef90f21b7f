"""Where a frame's time goes, and what one model serves: decode, pre-processing, the model, post-processing.

    python -m bench.stages --batches 1,8,32 --imgsz 640            # on a GPU host: --device cuda:0

On 720p H.264 (the street clip, scaled and cropped to 1280x720 and encoded here with ffmpeg), with
the bundled person model, in one process:

- decode: OpenCV reading the clip, wall and CPU milliseconds per frame (each camera decodes on its
  own thread, so this cost spreads over the host's cores);
- letterbox: resizing a frame into the model's input (the monitor does it on the camera's thread);
- for each batch size, the inference thread's work per batch, done two ways:
  ``ultralytics``: ``model.predict(list of frames)``, the model's own loop (letterbox, stack,
  upload, model, NMS, Results);
  ``monitor``: ``Detector.infer`` on frames letterboxed beforehand (copy into the reused host
  buffer, pinned on CUDA; upload; model; NMS; one read-back), split into assembly+upload, model and
  NMS+read-back.

From these: frames per second one inference thread can serve at each batch size, and how many 10 fps
streams that and the host's cores (for decoding and letterboxing) could carry. Prints a table;
writes bench/results/stages-latest.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import bench.run
from bench.report import markdown_table, write_results
from bench.run import ROOT, cpu_seconds, machine, make_720p_clip, percentile

os.environ.setdefault("YOLO_OFFLINE", "1")


def decode(clip: Path, frames: int) -> tuple[list[np.ndarray], dict]:
    import cv2

    capture = cv2.VideoCapture(str(clip))
    images, wall, cpu = [], time.perf_counter(), cpu_seconds()
    while len(images) < frames:
        ok, image = capture.read()
        if not ok:
            break
        images.append(image)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    capture.release()
    if not images:
        raise SystemExit(f"cannot decode {clip}")
    n = len(images)
    return images, {"frames": n, "shape": list(images[0].shape), "wall_ms": 1000 * wall / n, "cpu_ms": 1000 * cpu / n}


def timed(function, repeats: int, synchronize) -> list[float]:
    """Seconds per call, after one untimed call (warm-up: cuDNN picks its kernels, buffers get allocated)."""
    function()
    synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - started)
    return times


def letterbox_cost(detector, images: list[np.ndarray], repeats: int) -> dict:
    started, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(repeats):
        for image in images:
            detector.prepare(image)
    n = repeats * len(images)
    return {"wall_ms": 1000 * (time.perf_counter() - started) / n, "cpu_ms": 1000 * (cpu_seconds() - cpu) / n}


def monitor_split(detector, prepared: list, synchronize) -> dict:
    """One ``Detector.infer`` batch cut into its steps (the detector's own steps, timed one by one)."""
    import torch

    marks = [time.perf_counter()]
    with torch.inference_mode():
        batch = detector.upload(prepared)
        synchronize()
        marks.append(time.perf_counter())
        raw = detector._backend()(batch)
        synchronize()
        marks.append(time.perf_counter())
        detector.read_back(detector.nms(raw), prepared)
        marks.append(time.perf_counter())
    steps = ("assembly_upload_ms", "model_ms", "nms_readback_ms")
    return {step: 1000 * (b - a) for step, a, b in zip(steps, marks, marks[1:])}


def batch_row(detector, images: list[np.ndarray], batch: int, repeats: int, synchronize) -> dict:
    frames = [images[i % len(images)] for i in range(batch)]
    prepared = [detector.prepare(image) for image in frames]
    model = detector.model
    options = dict(
        imgsz=detector.config.imgsz, conf=detector.thresholds.floor, iou=detector.config.iou,
        agnostic_nms=detector.config.agnostic_nms, verbose=False,
    )  # fmt: skip
    ultralytics_s = timed(lambda: model.predict(frames, device=detector.device, **options), repeats, synchronize)
    monitor_s = timed(lambda: detector.infer(prepared), repeats, synchronize)
    splits = [monitor_split(detector, prepared, synchronize) for _ in range(repeats)]
    median_ultra, median_monitor = float(np.median(ultralytics_s)), float(np.median(monitor_s))
    row = {
        "batch": batch,
        "input_shape": list(prepared[0].box.input_shape),
        "ultralytics_ms": 1000 * median_ultra,
        "ultralytics_fps": batch / median_ultra,
        "monitor_ms": 1000 * median_monitor,
        "monitor_p99_ms": 1000 * percentile(monitor_s, 99),
        "monitor_fps": batch / median_monitor,
        "monitor_vs_ultralytics": median_ultra / median_monitor,
    }
    row.update({step: float(np.median([s[step] for s in splits])) for step in splits[0]})
    return row


def streams(row: dict, host: dict, cores: int, fps: float) -> dict:
    """10 fps streams the inference thread could serve, and the host's cores could decode and letterbox."""
    host_cpu_ms = host["decode"]["cpu_ms"] + host["letterbox"]["cpu_ms"]
    return {
        "streams_by_inference": row["monitor_fps"] / fps,
        "streams_by_host_cores": cores * 1000 / host_cpu_ms / fps,
    }


def table(rows: list[dict]) -> str:
    columns = [
        ("batch", "batch", "{}"), ("input", "input_shape", "{0[1]}x{0[0]}"),
        ("ultralytics ms", "ultralytics_ms", "{:.1f}"), ("ultralytics fps", "ultralytics_fps", "{:.1f}"),
        ("monitor ms", "monitor_ms", "{:.1f}"), ("monitor p99 ms", "monitor_p99_ms", "{:.1f}"),
        ("monitor fps", "monitor_fps", "{:.1f}"), ("vs ultralytics", "monitor_vs_ultralytics", "{:.2f}"),
        ("assembly+upload ms", "assembly_upload_ms", "{:.1f}"), ("model ms", "model_ms", "{:.1f}"),
        ("nms+readback ms", "nms_readback_ms", "{:.1f}"),
        ("streams@10fps (inference)", "streams_by_inference", "{:.1f}"),
        ("streams@10fps (host cores)", "streams_by_host_cores", "{:.1f}"),
    ]  # fmt: skip
    return markdown_table([c[0] for c in columns], [[fmt.format(row[key]) for _, key, fmt in columns] for row in rows])


def synchronizer(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=None, help="FP16 (default: on CUDA)")
    parser.add_argument("--frames", type=int, default=100, help="720p frames to decode")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size (after one warm-up call)")
    parser.add_argument("--fps", type=float, default=10.0, help="the camera rate streams are counted at")
    parser.add_argument("--model", default=str(ROOT / "models" / "person-fall.pt"))
    parser.add_argument("--clip", default=str(ROOT / "data" / "vtest.avi"))
    args = parser.parse_args(argv)

    from monitor.config import ModelConfig
    from monitor.detection import Detector

    clip = make_720p_clip(Path(args.clip), bench.run.CLIP_720P)
    images, decoded = decode(clip, args.frames)
    config = ModelConfig(path=args.model, device=args.device, imgsz=args.imgsz, half=args.half, warmup=False, engine="pytorch")
    detector = Detector("person", config)
    synchronize = synchronizer(detector.device)
    host = {"decode": decoded, "letterbox": letterbox_cost(detector, images[:20], 3)}
    cores = os.cpu_count() or 1
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        row = batch_row(detector, images, batch, max(1, args.repeats), synchronize)
        row.update(streams(row, host, cores, args.fps))
        rows.append(row)
        print(f"  batch {batch}: monitor {row['monitor_fps']:.1f} fps, ultralytics {row['ultralytics_fps']:.1f} fps", flush=True)
    report = {
        "command": " ".join(["python -m bench.stages"] + (argv if argv is not None else sys.argv[1:])),
        "machine": machine(),
        "device": detector.device,
        "half": detector.half,
        "pinned_host_buffers": any(pinned for *_, pinned in detector.batch_buffer.allocated),
        "host": host,
        "batches": rows,
    }
    print(f"device {detector.device}, FP16 {detector.half}, pinned host buffers {report['pinned_host_buffers']}")
    print(f"decode 720p: {decoded['wall_ms']:.2f} ms wall, {decoded['cpu_ms']:.2f} ms CPU per frame; "
          f"letterbox: {host['letterbox']['cpu_ms']:.2f} ms CPU per frame")  # fmt: skip
    print(table(rows))
    print(f"written: {write_results('stages-latest', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
