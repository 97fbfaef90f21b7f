"""Benchmark: the monitor against plain Ultralytics on the same frames, model and image size, in one run.

    python -m bench.run --frames 120 --imgsz 640 --cameras 1,2,4 --repeats 2
    python -m bench.run --clip 720p --realtime --frames 300 --cameras 8,32,64 --max-batch 32 --modes predict

Each measurement runs in a fresh child process (so CPU time and peak RSS are its own), in an order
that rotates between repeats (so a noisy neighbour hurts every mode alike). The headline is each
mode's throughput as a ratio to the plain predict loop of the same repeat (median over repeats).

Modes: predict (a plain ``model.predict`` loop on PyTorch), predict-onnx and predict-openvino (the same loop on
the ONNX Runtime or OpenVINO export, built once and cached in the config's cache_dir), track (``model.track`` with ByteTrack), region
(``solutions.RegionCounter`` on the camera's zones), counter (``solutions.ObjectCounter`` on its
line), monitor-N (the monitor in-process, N cameras on the same clip, ``realtime: false``, publishing
to a real Mosquitto started here; the engine is ``--engine``, default the config's ``auto``). With ``--realtime`` the monitor's cameras play at the clip's rate like
live cameras (``--clip 720p``: the street clip as 1280x720 H.264), and each run says whether every camera
was kept up with (at least 95% of its frames processed) and what share of the captured frames was dropped
(``monitor_frames_total{stage="dropped"}`` / ``{stage="captured"}``). ``--threads-list 1,2`` runs each monitor-N
as monitor-N-t1 and monitor-N-t2 (the model's threads). ``vs fastest`` is each mode's fps as a
ratio to the fastest plain predict loop (PyTorch, ONNX, OpenVINO) of the same repeat. ``--fleet KxN`` adds
local-KxN and triton-KxN: K monitor processes with N cameras each, with their own models or all on one Triton
server (``bench/fleet.py``). Prints a table; writes bench/results/<UTC time>.json and latest.json.

    python -m bench.run --fleet 2x2 --engine onnx --frames 60 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.fleet import TritonSide, add_fleet_ratios, fleet_modes, is_fleet_mode, measure_fleet
from bench.loopback import Broker
from bench.report import RESULTS, markdown_table

os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
CLIP_720P = RESULTS / "vtest-720p.mp4"
PLAIN_MODES = ("predict", "predict-onnx", "track", "region", "counter")
EXPORT_MODES = ("predict-onnx", "predict-openvino")  # predict-openvino needs: pip install openvino


# --- shared by parent and child -----------------------------------------------------------------


def load_bench_config(config_path: Path, imgsz: int, engine: str):
    """The config's first model with ``imgsz`` (0: the config's) and ``engine``, and its first camera."""
    from monitor.config import load_config

    config = load_config(config_path)
    model_name, model = next(iter(config.models.items()))
    model = model.model_copy(update={"imgsz": imgsz or model.imgsz, "engine": engine})
    camera_name, camera = next((n, c) for n, c in config.cameras.items() if c.model == model_name)
    return config, model_name, model, camera_name, camera


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- child: one measurement ------------------------------------------------------------------


def child(args: argparse.Namespace) -> dict:
    config, model_name, model_config, camera_name, camera = load_bench_config(Path(args.config), args.imgsz, args.engine)
    if args.max_batch:
        model_config = model_config.model_copy(update={"max_batch": args.max_batch})
    if args.threads:  # the monitor applies it after Ultralytics' device setup, which resets torch's threads
        model_config = model_config.model_copy(update={"threads": args.threads})
    if args.clip:
        camera = camera.model_copy(update={"source": args.clip})
        config = config.model_copy(update={"cameras": {**config.cameras, camera_name: camera}})
    if args.mode.startswith("monitor-"):
        cameras, _, threads = args.mode.removeprefix("monitor-").partition("-t")
        if threads:  # monitor-N-tK: the model gets K threads
            model_config = model_config.model_copy(update={"threads": int(threads)})
        return run_monitor(args, config, model_name, model_config, int(cameras))
    return run_plain(args, model_config, camera, config.cache_dir)


def plain_engine(engine: str) -> str:
    """The plain loops run PyTorch unless ``--engine`` names an export (then every mode runs on it)."""
    return "pytorch" if engine in ("auto", "none") else engine


def frames_of(clip: str, limit: int):
    """Decode the clip's first ``limit`` frames; yields (capture mono time, image)."""
    import cv2

    capture = cv2.VideoCapture(clip)
    try:
        for _ in range(limit):
            ok, image = capture.read()
            if not ok:
                return
            yield time.monotonic(), image
    finally:
        capture.release()


def make_plain_step(mode: str, model_config, camera, model_path: str):
    """A function image -> None doing one frame of the plain Ultralytics way, and its YOLO model."""
    from ultralytics import YOLO

    common = dict(imgsz=model_config.imgsz, conf=model_config.conf, iou=model_config.iou, verbose=False)
    device = None if model_config.device == "auto" else model_config.device
    if device:
        common["device"] = device
    if mode in ("region", "counter"):
        from ultralytics import solutions
        from ultralytics.utils import LOGGER

        LOGGER.setLevel("ERROR")
        if mode == "region":
            region = {name: [tuple(p) for p in zone.polygon] for name, zone in camera.zones.items()}
            solution = solutions.RegionCounter(model=model_path, region=region, show=False, **common)
        else:
            line = next(iter(camera.lines.values())).points if camera.lines else [(0, 300), (768, 300)]
            solution = solutions.ObjectCounter(model=model_path, region=[tuple(p) for p in line], show=False, **common)
        return solution.process, solution.model
    model = YOLO(model_path, task="detect")
    if mode.startswith("predict"):
        return (lambda image: model.predict(image, agnostic_nms=model_config.agnostic_nms, **common)), model
    return (lambda image: model.track(image, persist=True, tracker="bytetrack.yaml", **common)), model


def run_plain(args: argparse.Namespace, model_config, camera, cache_dir: Path) -> dict:
    from monitor.detection.engines import prepare

    engine = args.mode.split("-", 1)[1] if args.mode in EXPORT_MODES else plain_engine(args.engine)
    model_config = model_config.model_copy(update={"engine": engine})  # an export: built once, cached in cache_dir
    model_path = str(prepare("bench", model_config, "cpu", False, cache_dir).path)
    step, model = make_plain_step(args.mode, model_config, camera, model_path)
    warm = next(frames_of(str(camera.source), 1))[1]
    step(warm.copy())
    if args.threads:
        set_plain_threads(model, Path(model_path), args.threads)
    latencies = []
    cpu0, started = cpu_seconds(), time.monotonic()
    for captured, image in frames_of(str(camera.source), args.frames):
        step(image)
        latencies.append(time.monotonic() - captured)
    elapsed, cpu = time.monotonic() - started, cpu_seconds() - cpu0
    return figures(len(latencies), len(latencies), elapsed, cpu, latencies, [])


def set_plain_threads(model, model_path: Path, threads: int) -> None:
    """After the first call: Ultralytics' device setup resets torch to cores - 1 threads, OpenVINO compiles with all."""
    backend = model.predictor.model
    if backend.format == "openvino":
        from monitor.detection.engines import set_openvino_threads

        set_openvino_threads(backend.backend, model_path, threads)
        return
    import torch

    torch.set_num_threads(threads)


def run_monitor(args: argparse.Namespace, config, model_name: str, model_config, cameras: int) -> dict:
    import paho.mqtt.client as mqtt

    from monitor.pipeline import Monitor

    base_name, base = next((n, c) for n, c in config.cameras.items() if c.model == model_name)
    camera = base.model_copy(update={"realtime": args.realtime, "loop": args.realtime})
    if args.triton_url:  # a fleet host whose model runs on the benchmark's Triton server
        from monitor.config import TritonConfig

        triton = TritonConfig(url=args.triton_url, model=args.triton_model, timeout_s=60)
        model_config = model_config.model_copy(update={"path": None, "triton": triton})
    mqtt_config = config.mqtt.model_copy(update={"port": args.mqtt_port, "client_id": f"bench-{os.getpid()}"})
    app = config.model_copy(
        update={
            "mqtt": mqtt_config,
            "metrics": config.metrics.model_copy(update={"enabled": False}),
            "models": {model_name: model_config},
            "cameras": {f"{base_name}{i}": camera for i in range(cameras)},
        }
    )
    recorder = Recorder(args.frames * cameras)
    received: list[float] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
    subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{mqtt_config.prefix}/+/counts", qos=0)
    subscriber.on_message = lambda c, u, m: m.retain or received.append(time.time() - iso_to_epoch(json.loads(m.payload)["ts"]))
    subscriber.connect("127.0.0.1", args.mqtt_port)
    subscriber.loop_start()
    monitor = Monitor(app, recorder.metrics)
    if args.barrier:  # a fleet host: start together with the others
        print("ready", flush=True)
        sys.stdin.readline()
    monitor.start()  # warms up the model before the cameras start
    cpu0, started = cpu_seconds(), time.monotonic()
    source_fps = camera_fps(camera)
    if args.realtime:  # live cameras: every camera plays at its clip's rate for frames/fps seconds
        recorder.done.wait(timeout=args.frames / source_fps)
    else:
        recorder.done.wait(timeout=args.frames * cameras * 30)
    elapsed, cpu = time.monotonic() - started, cpu_seconds() - cpu0
    time.sleep(0.3)  # the last messages reach the subscriber
    monitor.stop()
    subscriber.loop_stop()
    subscriber.disconnect()
    out = figures(recorder.processed, recorder.inferences, elapsed, cpu, recorder.latencies, received)
    out.update(batches=recorder.batches, skipped=recorder.skipped, model_busy=round(recorder.inference_seconds / elapsed, 3))
    out.update(fps_per_camera=round(recorder.processed / elapsed / cameras, 3))
    if args.barrier:  # the fleet parent combines the hosts' figures
        out.update(latencies=recorder.latencies, mqtt_latencies=received, cpu_s=cpu)
    out.update(engine=monitor.detectors[model_name].engine.engine, threads=monitor.detectors[model_name].threads)
    captured, dropped = (frames_at(recorder.metrics, stage) for stage in ("captured", "dropped"))
    out.update(captured=captured, dropped=dropped, dropped_share=round(dropped / captured, 4) if captured else None)
    if args.realtime:  # a camera is kept up with when the monitor processes (almost) every frame it delivers
        out.update(source_fps=source_fps, kept_up=out["fps_per_camera"] >= 0.95 * source_fps)
    return out


def frames_at(metrics, stage: str) -> int:
    """monitor_frames_total of a stage, summed over the cameras."""
    return int(sum(
        sample.value for metric in metrics.registry.collect() if metric.name == "monitor_frames"
        for sample in metric.samples if sample.name == "monitor_frames_total" and sample.labels["stage"] == stage
    ))  # fmt: skip


def camera_fps(camera) -> float:
    import cv2

    capture = cv2.VideoCapture(str(camera.source))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    capture.release()
    return fps


def make_720p_clip(source: Path, target: Path) -> Path:
    """The street clip as a 1280x720 H.264 camera stream (a keyframe every 2 s, like most IP cameras), made once."""
    if target.exists():
        return target
    if not shutil.which("ffmpeg"):
        raise SystemExit("making the 720p clip needs ffmpeg (apt-get install ffmpeg)")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(source),
         "-vf", "scale=1280:960,crop=1280:720", "-c:v", "libx264", "-preset", "veryfast", "-g", "20",
         "-pix_fmt", "yuv420p", str(target)],
        check=True,
    )  # fmt: skip
    return target


def iso_to_epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class Recorder:
    """A Metrics that also keeps every frame's latency and every batch size, and says when enough frames went."""

    def __init__(self, wanted: int):
        from monitor.metrics import Metrics

        self.wanted = wanted
        self.done = threading.Event()
        self.latencies: list[float] = []
        self.batches: list[int] = []
        self.processed = self.inferences = self.skipped = 0
        self.inference_seconds = 0.0
        recorder = self

        class RecordingMetrics(Metrics):
            def frame_processed(self, camera: str, latency_s: float) -> None:
                super().frame_processed(camera, latency_s)
                recorder.latencies.append(latency_s)
                recorder.processed += 1
                if recorder.processed >= recorder.wanted:
                    recorder.done.set()

            def inference_done(self, model: str, seconds: float, batch_size: int) -> None:
                super().inference_done(model, seconds, batch_size)
                recorder.inferences += 1
                recorder.batches.append(batch_size)
                recorder.inference_seconds += seconds

            def inference_skipped(self, camera: str) -> None:
                super().inference_skipped(camera)
                recorder.skipped += 1

        self.metrics = RecordingMetrics()


def figures(frames: int, calls: int, elapsed: float, cpu: float, latencies: list[float], mqtt_latencies: list[float]) -> dict:
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    return {
        "frames": frames,
        "seconds": round(elapsed, 3),
        "fps": round(frames / elapsed, 3) if elapsed else 0.0,
        "inference_calls_per_s": round(calls / elapsed, 3) if elapsed else 0.0,
        "latency_p50_ms": ms(percentile(latencies, 50)),
        "latency_p99_ms": ms(percentile(latencies, 99)),
        "mqtt_latency_p50_ms": ms(percentile(mqtt_latencies, 50)),
        "mqtt_latency_p99_ms": ms(percentile(mqtt_latencies, 99)),
        "mqtt_messages": len(mqtt_latencies),
        "cpu_s_per_frame": round(cpu / frames, 4) if frames else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


# --- parent: schedule, aggregate, report ------------------------------------------------------


def child_args(args: argparse.Namespace) -> list[str]:
    command = ["--frames", str(args.frames), "--imgsz", str(args.imgsz), "--config", args.config, "--engine", args.engine]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--clip", args.clip] if args.clip else []
    command += ["--max-batch", str(args.max_batch)] if args.max_batch else []
    command += ["--realtime"] if args.realtime else []
    return command


def measure(args: argparse.Namespace, mode: str, mqtt_port: int) -> dict:
    command = [sys.executable, "-m", "bench.run", "--child", mode, "--mqtt-port", str(mqtt_port)] + child_args(args)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.frames * 60 + 300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def schedule(modes: list[str], repeats: int) -> list[tuple[int, str]]:
    """Every mode once per repeat, the order rotated each repeat."""
    return [(r, modes[(i + r) % len(modes)]) for r in range(repeats) for i in range(len(modes))]


def summarise(runs: list[dict], modes: list[str]) -> dict[str, dict]:
    by_repeat: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_repeat.setdefault(run["repeat"], {})[run["mode"]] = run
    summary = {}
    for mode in modes:
        own = [r for r in runs if r["mode"] == mode]
        ratios = [rep[mode]["fps"] / rep["predict"]["fps"] for rep in by_repeat.values() if mode in rep and "predict" in rep]
        keys = [k for k in own[0] if isinstance(own[0][k], (int, float)) and k not in ("repeat",)]
        row = {k: _median([r[k] for r in own]) for k in keys}
        row["fps_vs_predict"] = round(statistics.median(ratios), 3) if ratios else None
        cpu = [rep[mode]["cpu_s_per_frame"] / rep["predict"]["cpu_s_per_frame"] for rep in by_repeat.values() if mode in rep and "predict" in rep]
        row["cpu_vs_predict"] = round(statistics.median(cpu), 3) if cpu else None
        fastest = [rep[mode]["fps"] / fastest_predict(rep) for rep in by_repeat.values() if mode in rep and fastest_predict(rep)]
        row["fps_vs_fastest"] = round(statistics.median(fastest), 3) if fastest else None
        row["fps_runs"] = [r["fps"] for r in own]
        if "kept_up" in own[0]:
            row["kept_up"] = all(r["kept_up"] for r in own)  # in every repeat
        summary[mode] = row
    region = summary.get("region", {}).get("fps")
    for mode, row in summary.items():
        if mode.startswith("monitor-") and region:
            regions = [
                rep[mode]["fps"] / rep["region"]["fps"] for rep in by_repeat.values() if mode in rep and "region" in rep
            ]
            row["fps_vs_region"] = round(statistics.median(regions), 3)
    return summary


def fastest_predict(repeat: dict[str, dict]) -> float | None:
    """The fastest plain predict loop of a repeat (None in a run of fleet modes only)."""
    return max((run["fps"] for mode, run in repeat.items() if mode.startswith("predict")), default=None)


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


COLUMNS = [
    ("mode", "mode", "{}"),
    ("fps", "fps", "{:.2f}"),
    ("vs predict", "fps_vs_predict", "{:.3f}"),
    ("vs fastest", "fps_vs_fastest", "{:.3f}"),
    ("vs region", "fps_vs_region", "{:.3f}"),
    ("fps/camera", "fps_per_camera", "{:.2f}"),
    ("kept up", "kept_up", "{}"),
    ("dropped", "dropped_share", "{:.1%}"),
    ("infer/s", "inference_calls_per_s", "{:.2f}"),
    ("lat p50 ms", "latency_p50_ms", "{:.0f}"),
    ("lat p99 ms", "latency_p99_ms", "{:.0f}"),
    ("mqtt p50 ms", "mqtt_latency_p50_ms", "{:.0f}"),
    ("mqtt p99 ms", "mqtt_latency_p99_ms", "{:.0f}"),
    ("cpu s/frame", "cpu_s_per_frame", "{:.3f}"),
    ("cpu vs predict", "cpu_vs_predict", "{:.3f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
]


FLEET_COLUMNS = [
    ("vs local", "fps_vs_local", "{:.3f}"),
    ("fps/core", "fps_per_core", "{:.2f}"),
    ("server cpu s/frame", "server_cpu_s_per_frame", "{:.3f}"),
    ("wire KB/frame", "wire_kb_per_frame", "{:.0f}"),
    ("triton batch", "triton_batch_mean", "{:.2f}"),
]


def table(summary: dict[str, dict]) -> str:
    columns = COLUMNS + (FLEET_COLUMNS if any("hosts" in row for row in summary.values()) else [])
    rows = []
    for mode, row in summary.items():
        cells = []
        for _, key, fmt in columns:
            value = mode if key == "mode" else row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        rows.append(cells)
    return markdown_table([title for title, _, _ in columns], rows)


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def parent(args: argparse.Namespace) -> int:
    if args.clip == "720p":
        args.clip = str(make_720p_clip(ROOT / "data" / "vtest.avi", CLIP_720P))
    alone = bool(args.fleet)  # --fleet runs only the fleet modes, unless --modes or --cameras are given too
    cameras = [int(n) for n in (args.cameras if args.cameras is not None else "" if alone else "1,2,4").split(",") if n]
    plain = args.modes if args.modes is not None else "" if alone else ",".join(PLAIN_MODES)
    threads = [f"-t{k}" for k in args.threads_list.split(",") if k] or [""]
    modes = [m for m in plain.split(",") if m] + [f"monitor-{n}{t}" for n in cameras for t in threads]
    if "predict" not in modes and (modes or not args.fleet):
        modes.insert(0, "predict")
    modes += fleet_modes(args.fleet)
    started = datetime.now(timezone.utc)
    info = machine()
    print(f"bench: {args.frames} frames, imgsz {args.imgsz}, engine {args.engine}, modes {modes}, {args.repeats} repeats", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        broker = Broker(Path(workdir)).start()
        triton = start_triton(args) if any(m.startswith("triton-") for m in modes) else None
        try:
            for repeat, mode in schedule(modes, args.repeats):
                if is_fleet_mode(mode):
                    result = measure_fleet(args, mode, broker.port, triton, child_args(args))
                else:
                    result = measure(args, mode, broker.port)
                result.update(mode=mode, repeat=repeat)
                runs.append(result)
                print(f"  repeat {repeat} {mode:<10} {result['fps']:.2f} fps", flush=True)
        finally:
            broker.stop()
            if triton:
                triton.stop()
    summary = summarise(runs, modes)
    add_fleet_ratios(summary, runs)
    report = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.run"] + sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("child", "mqtt_port")},
        "machine": info,
        "summary": summary,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(report, indent=2)
    (RESULTS / f"{stamp}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    print(table(summary))
    print(f"written: bench/results/{stamp}.json and bench/results/latest.json")
    return 0


def start_triton(args: argparse.Namespace) -> TritonSide:
    _, _, model, _, _ = load_bench_config(Path(args.config), args.imgsz, "none")
    return TritonSide(Path(model.path), model.imgsz, args.triton_threads, args.max_batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120, help="frames of the clip per camera")
    parser.add_argument("--imgsz", type=int, default=0, help="the model's input size (0: the config's)")
    parser.add_argument("--cameras", default=None, help="monitor runs with these camera counts (default: 1,2,4)")
    parser.add_argument("--modes", default=None, help=f"plain Ultralytics modes to compare (default: {','.join(PLAIN_MODES)})")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--engine", default="auto", choices=["auto", "pytorch", "none", "onnx", "openvino", "tensorrt"],
                        help="the monitor's engine (default: auto, the bundled default); an export also runs the plain modes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every mode (0: torch's default)")
    parser.add_argument("--threads-list", default="", help="monitor runs with each of these model threads (1,2: "
                        "modes monitor-N-t1 and monitor-N-t2), compared in the same run")  # fmt: skip
    parser.add_argument("--clip", help="the cameras' source instead of the config's (720p: the street clip as 1280x720 H.264)")
    parser.add_argument("--realtime", action="store_true", help="monitor cameras play at the clip's rate, like live "
                        "cameras, for frames/fps seconds: reports whether each camera is kept up with")  # fmt: skip
    parser.add_argument("--max-batch", type=int, default=0, help="the model's max_batch (0: the config's)")
    parser.add_argument("--fleet", default="", help="KxN: K monitor processes with N cameras each, local models vs "
                        "one Triton server (modes local-KxN, triton-KxN); without --modes/--cameras, only these")  # fmt: skip
    parser.add_argument("--triton-threads", type=int, default=0, help="ONNX Runtime threads of the Triton model (0: its default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--triton-url", help=argparse.SUPPRESS)
    parser.add_argument("--triton-model", help=argparse.SUPPRESS)
    parser.add_argument("--mqtt-port", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        args.mode = args.child
        print(json.dumps(child(args)), flush=True)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
