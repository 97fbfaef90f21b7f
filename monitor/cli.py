"""Command line: ``monitor run``, ``monitor check``, ``monitor --version``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "check": cmd_check}
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
    from monitor.pipeline import Monitor

    try:
        monitor = Monitor(config)
    except ConfigError as error:
        return report_config_error(args.config, error)
    stop_requested = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_requested.set())
    log.info("monitor %s starting: %d cameras on %s", __version__, len(config.cameras), monitor.device)
    monitor.start()
    try:
        monitor.wait(stop_requested)
    finally:
        log.info("stopping")
        monitor.stop()
    return 0
