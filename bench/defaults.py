"""Benchmark: the bundled default's engine and input size, by speed and by count error, in one run.

    python -m bench.defaults --engines pytorch,openvino --imgsz 640,800,960

For each engine and input size, in a fresh child process, the real Monitor on the bundled config:
- every frame processed (three 60-frame segments of the clip as three cameras, ``realtime: false``): frames
  per second, CPU seconds per frame, and the mean absolute count error against the hand labels
  (bench/accuracy.py; the published, tracked and smoothed counts; per-frame detections alongside);
- at the clip's 10 fps (each segment on its own as one live camera, ``realtime: true``): the share of the
  captured frames dropped, and the count error of what a subscriber sees at each labelled frame (the
  counts of the last processed frame).
Prints a table; writes bench/results/defaults-latest.json. Exports are built once in the config's cache_dir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.accuracy import (
    KINDS,
    LABEL_OFFSETS,
    cut_segments,
    load_labels,
    mean_absolute_error,
    recording_monitor,
    run_to_end,
    seen_at,
    segments_config,
)
from bench.loopback import Broker
from bench.report import markdown_table, write_results
from bench.run import cpu_seconds, frames_at, machine

ROOT = Path(__file__).resolve().parent.parent


def street_data(config: Path, mqtt_port: int, engine: str, imgsz: int, realtime: bool) -> dict:
    import yaml

    data = yaml.safe_load(config.read_text())
    data["mqtt"].update(port=mqtt_port, client_id=f"defaults-{os.getpid()}")
    data["metrics"]["enabled"] = False
    data["state_dir"] = str(ROOT / "state")  # the exports' cache: state/cache, as the demo's
    model = next(iter(data["models"].values()))
    model.update(path=str(ROOT / model["path"]), engine=engine, imgsz=imgsz)
    data["cameras"]["street"].update(realtime=realtime)
    return data


def lossless(folder: Path, segments: dict[str, Path], args) -> dict:
    """Every frame of the three segments (three cameras sharing one model): speed and count error."""
    from monitor.metrics import Metrics

    config = write_yaml(folder / "lossless.yaml", segments_config(street_data(Path(args.config), args.mqtt_port, args.engine, args.imgsz, False), segments))
    monitor, results = recording_monitor(config, Metrics())
    cpu0, started = cpu_seconds(), time.monotonic()
    run_to_end(monitor)
    elapsed, cpu = time.monotonic() - started, cpu_seconds() - cpu0
    labels = load_labels()
    mae = {kind: round(mean_absolute_error({f: results[f][kind] for f in labels}, labels), 4) for kind in KINDS}
    detector = next(iter(monitor.detectors.values()))
    return {"engine": detector.engine.engine, "threads": detector.threads, "frames": len(results),
            "fps": round(len(results) / elapsed, 3), "cpu_s_per_frame": round(cpu / len(results), 4),
            "mae": mae}  # fmt: skip


def at_camera_rate(folder: Path, segments: dict[str, Path], args) -> dict:
    """Each segment alone as a live 10 fps camera: frames dropped, and the counts a subscriber sees."""
    from monitor.metrics import Metrics

    labels, seen, captured, dropped = load_labels(), {}, 0, 0
    for name, path in segments.items():
        data = segments_config(street_data(Path(args.config), args.mqtt_port, args.engine, args.imgsz, True), {name: path})
        metrics = Metrics()
        monitor, results = recording_monitor(write_yaml(folder / f"{name}.yaml", data), metrics)
        run_to_end(monitor)
        start = int(name.removeprefix("seg"))
        seen.update(seen_at(results, [start + offset for offset in LABEL_OFFSETS]))
        captured, dropped = captured + frames_at(metrics, "captured"), dropped + frames_at(metrics, "dropped")
    mae = round(mean_absolute_error({f: seen[f]["smoothed"] for f in labels}, labels), 4)
    return {"captured": captured, "dropped": dropped, "dropped_share": round(dropped / captured, 4), "mae_at_10fps": mae}


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def child(args) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(workdir)
        segments = cut_segments(ROOT / "data" / "vtest.avi", folder)
        return {**lossless(folder, segments, args), **at_camera_rate(folder, segments, args)}


def measure(args, engine: str, imgsz: int, mqtt_port: int) -> dict:
    command = [sys.executable, "-m", "bench.defaults", "--child", "--engine", engine, "--size", str(imgsz),
               "--mqtt-port", str(mqtt_port), "--config", args.config]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} {imgsz} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {"engine_asked": engine, "imgsz": imgsz, **json.loads(lines[-1])}


COLUMNS = [
    ("engine", lambda r: r["engine"]), ("imgsz", lambda r: str(r["imgsz"])), ("fps", lambda r: f"{r['fps']:.2f}"),
    ("cpu s/frame", lambda r: f"{r['cpu_s_per_frame']:.3f}"),
    ("MAE published", lambda r: f"{r['mae']['smoothed']:.3f}"), ("MAE tracked", lambda r: f"{r['mae']['raw']:.3f}"),
    ("MAE per-frame", lambda r: f"{r['mae']['detected']:.3f}"),
    ("dropped at 10 fps", lambda r: f"{r['dropped_share']:.1%}"), ("MAE at 10 fps", lambda r: f"{r['mae_at_10fps']:.3f}"),
]  # fmt: skip


def parent(args) -> int:
    info = machine()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        broker = Broker(Path(workdir)).start()
        try:
            for engine in args.engines.split(","):
                for imgsz in (int(s) for s in args.imgsz.split(",")):
                    row = measure(args, engine, imgsz, broker.port)
                    row["load_avg_after"] = os.getloadavg()
                    rows.append(row)
                    print(f"  {engine} {imgsz}: {row['fps']:.2f} fps, MAE {row['mae']['smoothed']:.3f}, "
                          f"dropped at 10 fps {row['dropped_share']:.1%}, MAE at 10 fps {row['mae_at_10fps']:.3f}", flush=True)  # fmt: skip
        finally:
            broker.stop()
    print(markdown_table([title for title, _ in COLUMNS], [[cell(row) for _, cell in COLUMNS] for row in rows]))
    report = {"command": " ".join(["python -m bench.defaults"] + sys.argv[1:]), "machine": info, "rows": rows}
    print(f"written: {write_results('defaults-latest', report)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.defaults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="pytorch,openvino")
    parser.add_argument("--imgsz", default="640,800,960", help="input sizes of the person model")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mqtt-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.imgsz = args.size
        print(json.dumps(child(args)), flush=True)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
