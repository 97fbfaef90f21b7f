"""Command line: every ``monitor`` command and its arguments, how it reports errors, and its exit code.

Daemon: ``run``, ``check``. Setting up and offline work (``monitor.tools``, imported only by the command that
uses them): ``snapshot``, ``clear-retained``, ``dataset export|import``, ``train``, ``evaluate``,
``generate dataset|clip``, ``triton-repo``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from monitor import __version__
from monitor.config import ConfigError, load_config

log = logging.getLogger("monitor")

EXIT_FAILED = 1
EXIT_CONFIG = 2  # also: bad command-line input


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitor", description="Real-time camera inventory and safety monitor")
    parser.add_argument("--version", action="version", version=f"monitor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the monitor")
    run.add_argument("--config", "-c", default="config.yaml")
    run.add_argument("--log-level", default=None, help="override logging.level")

    check = commands.add_parser("check", help="validate a config (and load its models) without running")
    check.add_argument("--config", "-c", default="config.yaml")
    check.add_argument("--no-models", action="store_true", help="skip loading the models")

    snapshot = commands.add_parser("snapshot", help="write a camera's current frame with zones, boxes and counts drawn")
    snapshot.add_argument("--config", "-c", default="config.yaml")
    snapshot.add_argument("--camera", required=True)
    snapshot.add_argument("--out", "-o", default=None, help="JPEG to write (default: snapshot-<camera>.jpg)")
    snapshot.add_argument("--skip", type=int, default=0, help="frames to skip first (file sources: seek into the clip)")
    snapshot.add_argument("--grid", type=int, default=0, help="draw a coordinate grid every N pixels")

    clear = commands.add_parser(
        "clear-retained", help="empty the retained MQTT topics (both layouts) and discovery configs of renamed or removed cameras"
    )
    clear.add_argument("--config", "-c", default="config.yaml", help="for the broker, the prefix and the discovery prefix")
    which = clear.add_mutually_exclusive_group(required=True)
    which.add_argument("--camera", action="append", help="a camera name (repeatable)")
    which.add_argument("--removed", action="store_true", help="every camera with retained topics that the config no longer has")
    clear.add_argument("--dry-run", action="store_true", help="only list what would be cleared")
    clear.add_argument("--force", action="store_true", help="also a camera whose status is online")

    add_dataset_commands(commands)
    add_training_commands(commands)
    add_generate_commands(commands)
    add_triton_command(commands)
    return parser


def add_dataset_commands(commands) -> None:
    dataset = commands.add_parser("dataset", help="datasets for fine-tuning: escalated frames, or a site's labelled frames")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    export = dataset_commands.add_parser("export", help="write the saved frames as a YOLO dataset (images, labels, data.yaml)")
    export.add_argument("--config", "-c", default="config.yaml")
    export.add_argument("--out", "-o", required=True, help="folder to write")
    export.add_argument("--val-fraction", type=float, default=0.2)
    export.add_argument("--include-disagreements", action="store_true", help="also frames whose boxes disagree with the model")
    imp = dataset_commands.add_parser("import", help="a site's labelled frames (YOLO .txt) -> a train/val dataset + data.yaml")
    imp.add_argument("--images", required=True, help="folder of frames (searched recursively)")
    imp.add_argument("--labels", default=None, help="folder of .txt labels (default: beside the images, or images/ -> labels/)")
    imp.add_argument("--names", required=True, action="append", help="class names in class-id order: ice_bag or a,b,c")
    imp.add_argument("--out", "-o", required=True)
    imp.add_argument("--val-fraction", type=float, default=0.2)


def add_training_commands(commands) -> None:
    common = {"--device": {"default": "auto", "help": "auto (first CUDA GPU, else cpu), cpu, 0, cuda:1"},
              "--batch": {"type": int, "default": 16},
              "--threads": {"type": int, "default": None, "help": "torch CPU threads (default: torch's)"}}
    train = commands.add_parser("train", help="fine-tune a YOLO model on a dataset; best weights to --out")
    train.add_argument("--data", required=True, help="data.yaml (from `monitor dataset import` or `export`)")
    train.add_argument("--model", required=True, help="starting weights, e.g. models/ice-bags.pt (or an architecture .yaml)")
    train.add_argument("--out", "-o", required=True, help="where the best weights go, e.g. models/site.pt")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--imgsz", type=int, default=None, help="default: the size --model was trained at (a warning if another)")
    train.add_argument("--workers", type=int, default=0, help="data loader processes")
    train.add_argument("--patience", type=int, default=50, help="stop after this many epochs without improvement")
    train.add_argument("--amp", action="store_true", help="mixed precision on a GPU (Ultralytics' check wants a download)")
    train.add_argument("--runs", default="runs", help="Ultralytics run folders (plots off; weights, results.csv)")
    evaluate = commands.add_parser("evaluate", help="mAP50 of a model on a dataset's val split")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--imgsz", type=int, default=None, help="default: the size the model was trained at")
    evaluate.add_argument("--json", default=None, help="also write the figures to this JSON file")
    for parser in (train, evaluate):
        for flag, kwargs in common.items():
            parser.add_argument(flag, **kwargs)


def add_generate_commands(commands) -> None:
    generate = commands.add_parser("generate", help="synthetic ice-store frames with exact ground truth")
    actions = generate.add_subparsers(dest="generate_command", required=True)
    data = actions.add_parser("dataset", help="write a YOLO dataset (images/, labels/, data.yaml)")
    data.add_argument("out_dir")
    data.add_argument("--train", type=int, default=1200)
    data.add_argument("--val", type=int, default=200)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--imgsz", type=int, default=640, help="long side of the saved images")
    clip = actions.add_parser("clip", help="write a video and its per-frame ground-truth JSON")
    clip.add_argument("out", help="output video path (.mp4 or .avi)")
    clip.add_argument("--seed", type=int, default=0)
    clip.add_argument("--frames", type=int, default=150)
    clip.add_argument("--fps", type=float, default=10.0)
    for sub in (data, clip):
        sub.add_argument("--width", type=int, default=640)
        sub.add_argument("--height", type=int, default=480)


def add_triton_command(commands) -> None:
    repo = commands.add_parser("triton-repo", help="write a Triton Inference Server model repository for a YOLO model")
    repo.add_argument("--model", required=True, help="an Ultralytics .pt model, e.g. models/person-fall.pt")
    repo.add_argument("--out", "-o", required=True, help="the repository folder (the model goes into <out>/<name>/)")
    repo.add_argument("--name", default=None, help="the model's name on the server (default: the file's stem)")
    repo.add_argument("--imgsz", type=int, default=640, help="export size (the graph takes any size)")
    repo.add_argument("--max-batch", type=int, default=16, help="max_batch_size: frames per request and per batch")
    repo.add_argument("--backend", choices=["onnxruntime", "python"], default="onnxruntime",
                      help="onnxruntime: NVIDIA's container; python: ONNX Runtime in the Python backend (PyPI's server)")
    repo.add_argument("--kind", choices=["gpu", "cpu"], default="gpu", help="instance kind (python: always cpu)")
    repo.add_argument("--instances", type=int, default=1, help="model instances per device")
    repo.add_argument("--tensorrt", action="store_true", help="onnxruntime on a GPU: through TensorRT in FP16")
    repo.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads per instance (0: its default)")
    repo.add_argument("--queue-delay-us", type=int, default=2000, help="how long Triton may hold a request to batch it")
    repo.add_argument("--delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)  # python backend: rehearse a slow server


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    handlers = {
        "run": cmd_run, "check": cmd_check, "snapshot": cmd_snapshot, "clear-retained": cmd_clear_retained, "dataset": cmd_dataset,
        "train": cmd_train, "evaluate": cmd_evaluate, "generate": cmd_generate, "triton-repo": cmd_triton_repo,
    }
    return handlers[args.command](args)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def report_config_error(path: str, error: ConfigError) -> int:
    print(f"config error in {path}:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


# --- the daemon ------------------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    logging.getLogger("monitor.detection.engines").setLevel(logging.INFO)  # a first export's progress
    engines = []
    try:
        config = load_config(args.config)
        if not args.no_models:
            from monitor.pipeline import Monitor

            monitor = Monitor(config)  # loads models (builds exports) and checks class names; opens no camera
            engines = describe_engines(monitor)
            monitor.discard()
    except ConfigError as error:
        return report_config_error(args.config, error)
    print("\n".join(engines + [f"{args.config}: OK ({len(config.cameras)} cameras, {len(config.models)} models)"]))
    return 0


def describe_engines(monitor) -> list[str]:
    lines = []
    for name, detector in monitor.detectors.items():
        built = detector.model_path not in (None, detector.config.path)  # an export of the file, not the file itself
        cached = f"; export ready in {detector.model_path}" if built else ""
        lines.append(f"model {name}: engine {detector.engine.engine} on {detector.device} ({detector.engine.why}){cached}")
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return report_config_error(args.config, error)
    setup_logging(args.log_level or config.logging.level)
    from monitor.instance import StateDirInUse
    from monitor.service import Service  # sd_notify READY/STOPPING/WATCHDOG, SIGTERM stops, SIGHUP reloads

    service = Service(args.config, config)
    service.install_signal_handlers()
    log.info("monitor %s starting: %d cameras", __version__, len(config.cameras))
    try:
        return service.run()
    except ConfigError as error:
        return report_config_error(args.config, error)
    except StateDirInUse as error:
        log.error("refusing to start: %s", error)
        return EXIT_FAILED


# --- setting up and offline work -------------------------------------------------------------------------------


def cmd_snapshot(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return report_config_error(args.config, error)
    if args.camera not in config.cameras:
        print(f"unknown camera {args.camera!r} (configured: {', '.join(config.cameras)})", file=sys.stderr)
        return EXIT_CONFIG
    from monitor.detection.detector import ModelLoadError
    from monitor.tools.snapshot import SnapshotError, describe, take_snapshot, write_jpeg

    out = Path(args.out or f"snapshot-{args.camera}.jpg")
    try:
        snapshot = take_snapshot(config, args.camera, skip=max(0, args.skip), grid=max(0, args.grid))
        write_jpeg(out, snapshot.image)
    except (SnapshotError, ModelLoadError) as error:
        print(f"snapshot failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(describe(config, args.camera, snapshot)))
    print(f"wrote {out}")
    return 0


def cmd_clear_retained(args: argparse.Namespace) -> int:
    """Exit 0 done (or nothing to clear), 1 broker unreachable or a camera refused, 2 config problem."""
    setup_logging("WARNING")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return report_config_error(args.config, error)
    from monitor.tools.retained import BrokerError, clear_cameras, removed_cameras

    try:
        cameras = removed_cameras(config) if args.removed else args.camera
        report = clear_cameras(config, cameras, dry_run=args.dry_run, force=args.force)
    except BrokerError as error:
        print(f"clear-retained: {error}", file=sys.stderr)
        return EXIT_FAILED
    verb = "would clear" if args.dry_run else "cleared"
    if not cameras:
        print("no removed cameras have retained topics")
    for camera, topics in report.cleared.items():
        for topic in topics:
            print(f"{verb} {topic}")
        print(f"camera {camera}: {verb} {len(topics)} retained topic{'s' if len(topics) != 1 else ''}")
    for camera, why in report.refused.items():
        print(f"camera {camera}: not cleared: {why} (--force to clear anyway)", file=sys.stderr)
    return EXIT_FAILED if report.refused else 0


def cmd_dataset(args: argparse.Namespace) -> int:
    return cmd_dataset_import(args) if args.dataset_command == "import" else cmd_dataset_export(args)


def cmd_dataset_export(args: argparse.Namespace) -> int:
    """Exit 0 written, 1 nothing to export, 2 config problem."""
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return report_config_error(args.config, error)
    if config.escalation is None or config.escalation.dataset.dir is None:
        return report_config_error(args.config, ConfigError(["escalation.dataset.dir: not set, so no frames were saved"]))
    if not 0 <= args.val_fraction < 1:
        print("--val-fraction must be in [0, 1)", file=sys.stderr)
        return EXIT_CONFIG
    from monitor.tools.dataset import export_dataset

    source = config.escalation.dataset.dir
    summary = export_dataset(source, Path(args.out), args.val_fraction, args.include_disagreements)
    for problem in summary.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    print(
        f"{args.out}: {summary.train} train and {summary.val} val images, {summary.boxes} boxes, "
        f"classes {summary.names}; {len(summary.review)} frames disagree with the model (review.txt)"
    )
    if summary.train and (summary.val or not args.val_fraction):
        return 0
    print(f"dataset export: nothing to train on: {summary.why_empty(source, args.include_disagreements)}", file=sys.stderr)
    return EXIT_FAILED


def cmd_dataset_import(args: argparse.Namespace) -> int:
    """Exit 0 written, 1 nothing usable, 2 usage."""
    from monitor.tools.training import TrainingError, import_labelled

    names = [n.strip() for given in args.names for n in given.split(",") if n.strip()]
    images = Path(args.images)
    if not images.is_dir() or not names or not 0 <= args.val_fraction < 1:
        print("dataset import: --images must be a folder, --names non-empty, --val-fraction in [0, 1)", file=sys.stderr)
        return EXIT_CONFIG
    labels = Path(args.labels) if args.labels else None
    try:
        summary = import_labelled(images, labels, names, Path(args.out), args.val_fraction)
    except TrainingError as error:
        print(f"dataset import: {error}", file=sys.stderr)
        return EXIT_CONFIG
    for problem in summary.problems:
        print(f"left out: {problem}", file=sys.stderr)
    if summary.unlabelled:
        print(f"left out {len(summary.unlabelled)} images without a label file, e.g. {summary.unlabelled[0]}", file=sys.stderr)
    print(f"{Path(args.out) / 'data.yaml'}: {summary.train} train and {summary.val} val images, "
          f"{summary.boxes} boxes, classes {names}")
    if summary.train and (summary.val or not args.val_fraction):
        return 0
    print("dataset import: a train and a val split need at least 2 labelled images", file=sys.stderr)
    return EXIT_FAILED


def cmd_train(args: argparse.Namespace) -> int:
    from monitor.tools.training import TrainingError, TrainRequest, metrics_path, train

    setup_logging("WARNING")
    limit_torch_threads(args.threads)
    request = TrainRequest(data=Path(args.data), model=args.model, out=Path(args.out), epochs=args.epochs, imgsz=args.imgsz,
                           batch=args.batch, device=args.device, workers=args.workers, patience=args.patience,
                           amp=args.amp, runs=Path(args.runs))
    try:
        metrics = train(request)
    except TrainingError as error:
        print(f"train: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"wrote {request.out} ({metrics['training']['seconds']:.0f} s on {metrics['training']['device']}) "
          f"and {metrics_path(request.out)}")
    print(describe_detection(metrics["detection"]))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from monitor.tools.training import TrainingError, evaluate

    limit_torch_threads(args.threads)
    try:
        detection = evaluate(args.model, Path(args.data), args.imgsz, args.device, args.batch)
    except TrainingError as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.model} on {args.data}:")
    print(describe_detection(detection))
    if args.json:
        Path(args.json).write_text(json.dumps(detection, indent=2) + "\n")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from monitor.tools.icegen import write_clip, write_dataset

    if args.generate_command == "dataset":
        print(write_dataset(args.out_dir, args.train, args.val, args.seed, args.imgsz, args.width, args.height))
    else:
        print(write_clip(args.out, args.seed, args.frames, args.fps, args.width, args.height))
    return 0


def cmd_triton_repo(args: argparse.Namespace) -> int:
    from monitor.tools.triton_repo import RepoError, RepoSettings, docker_command, write_repository

    settings = RepoSettings(
        model=Path(args.model), out=Path(args.out), name=args.name, imgsz=args.imgsz, max_batch=args.max_batch,
        backend=args.backend, kind=args.kind, instances=args.instances, tensorrt=args.tensorrt, threads=args.threads,
        queue_delay_us=args.queue_delay_us, delay_ms=args.delay_ms,
    )
    try:
        folder = write_repository(settings)
    except RepoError as error:
        print(f"triton-repo: {error}", file=sys.stderr)
        return EXIT_CONFIG
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(f"wrote {path}")
    print(f"serve it with NVIDIA's Triton container:\n  {docker_command(Path(args.out))}")
    print(f"and point the monitor at it: models.<name>.triton: {{url: grpc://<server>:8001, model: {settings.model_name}}}")
    return 0


def describe_detection(detection: dict) -> str:
    return (f"mAP50 {detection['map50']:.3f}  mAP50-95 {detection['map50_95']:.3f}  precision {detection['precision']:.3f}  "
            f"recall {detection['recall']:.3f}  ({detection['images']} val images, {detection['boxes']} boxes, imgsz {detection['imgsz']})")


def limit_torch_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
