"""Command line: ``monitor run``, ``monitor check``, ``monitor --version``."""

from __future__ import annotations

import argparse
import logging
import sys

from monitor import __version__
from monitor.config import ConfigError, load_config

log = logging.getLogger("monitor")

EXIT_CONFIG = 2


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

    dataset = commands.add_parser("dataset", help="the escalated frames saved for fine-tuning")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    export = dataset_commands.add_parser("export", help="write the saved frames as a YOLO dataset (images, labels, data.yaml)")
    export.add_argument("--config", "-c", default="config.yaml")
    export.add_argument("--out", "-o", required=True, help="folder to write")
    export.add_argument("--val-fraction", type=float, default=0.2)
    export.add_argument("--include-disagreements", action="store_true", help="also frames whose boxes disagree with the model")

    from monitor.training import add_commands  # dataset import, train, evaluate

    add_commands(commands, dataset_commands)
    generate = commands.add_parser("generate", add_help=False, help="synthetic ice-store frames: `generate dataset|clip ...` (--help)")
    generate.add_argument("icegen_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:  # monitor.icegen parses its own arguments (and --help)
        from monitor.icegen import main as generate

        return generate(argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "check": cmd_check, "snapshot": cmd_snapshot, "dataset": cmd_dataset}
    handlers.update(train=cmd_train, evaluate=cmd_evaluate)
    return handlers[args.command](args)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def report_config_error(path: str, error: ConfigError) -> int:
    print(f"config error in {path}:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


def cmd_check(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    try:
        config = load_config(args.config)
        if not args.no_models:
            from monitor.pipeline import Monitor

            Monitor(config)  # loads models and checks class names; opens no camera
    except ConfigError as error:
        return report_config_error(args.config, error)
    print(f"{args.config}: OK ({len(config.cameras)} cameras, {len(config.models)} models)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return report_config_error(args.config, error)
    setup_logging(args.log_level or config.logging.level)
    from monitor.service import Service  # sd_notify READY/STOPPING/WATCHDOG, SIGTERM stops, SIGHUP reloads

    service = Service(args.config, config)
    service.install_signal_handlers()
    log.info("monitor %s starting: %d cameras", __version__, len(config.cameras))
    try:
        return service.run()
    except ConfigError as error:
        return report_config_error(args.config, error)


def cmd_snapshot(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return report_config_error(args.config, error)
    if args.camera not in config.cameras:
        print(f"unknown camera {args.camera!r} (configured: {', '.join(config.cameras)})", file=sys.stderr)
        return EXIT_CONFIG
    from pathlib import Path

    from monitor.detection import ModelLoadError
    from monitor.snapshot import SnapshotError, describe, take_snapshot, write_jpeg

    out = Path(args.out or f"snapshot-{args.camera}.jpg")
    try:
        snapshot = take_snapshot(config, args.camera, skip=max(0, args.skip), grid=max(0, args.grid))
        write_jpeg(out, snapshot.image)
    except (SnapshotError, ModelLoadError) as error:
        print(f"snapshot failed: {error}", file=sys.stderr)
        return 1
    print("\n".join(describe(config, args.camera, snapshot)))
    print(f"wrote {out}")
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from monitor.dataset import cmd_export
    from monitor.training import cmd_import

    return cmd_import(args) if args.dataset_command == "import" else cmd_export(args)


def cmd_train(args: argparse.Namespace) -> int:
    from monitor.training import cmd_train as train

    return train(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from monitor.training import cmd_evaluate as evaluate

    return evaluate(args)
