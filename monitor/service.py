"""Running under systemd: sd_notify (READY, RELOADING, STOPPING, STATUS, WATCHDOG), signals and reload.

The watchdog keep-alive (``WATCHDOG=1``) is sent only while every part of the pipeline makes progress:
each camera loop, each inference worker (a call running longer than ``service.watchdog_stall_s`` is
hung) and the publisher. A dead thread or a hung inference stops the keep-alive, and systemd
(``WatchdogSec=``) kills and restarts the service.

Reload (``SIGHUP``, ``systemctl reload``): the new config file is validated first; with errors they are
logged and the running configuration stays. A valid one replaces the running pipeline with a full
in-process restart (models reloaded, every camera reopened: a few seconds without counts). Nothing
is lost across it: unsent messages wait in the outbox and ``seq`` continues. A reload is not an outage:
the status topics' connections (``Availability``) outlive the pipeline, so ``<prefix>/status`` and each
kept camera's ``status`` stay ``online`` throughout (only a removed camera goes ``offline``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from monitor.capture import CameraState
from monitor.config import AppConfig, ConfigError, load_config
from monitor.publishing.availability import Availability

log = logging.getLogger("monitor.service")

EXIT_FATAL = 1  # systemd's Restart=on-failure starts us again


class Notifier:
    """sd_notify over ``$NOTIFY_SOCKET`` (a unix datagram socket) with the standard library; a no-op outside systemd."""

    def __init__(self, address: str | None = None):
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._socket: socket.socket | None = None
        if self.address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> bool:
        if not self._socket:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address  # abstract namespace
        try:
            self._socket.sendto("\n".join(fields).encode(), target)
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: dict | None = None) -> float | None:
    """How often to send WATCHDOG=1 (half of WatchdogSec), or None when systemd asked for no watchdog."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return max(0.05, int(usec) / 2e6)
    except ValueError:
        return None


def stalled_parts(monitor, stall_s: float, now: float | None = None) -> list[str]:
    """What is not making progress: dead threads, hung inference, stuck loops (empty: all healthy)."""
    now = now or time.monotonic()
    problems = []
    for name, loop in monitor.loops.items():
        if loop.finished:
            if monitor.readers[name].state != CameraState.ENDED:
                problems.append(f"camera {name}: loop thread ended")
        elif now - loop.last_progress > stall_s:
            problems.append(f"camera {name}: no progress for {now - loop.last_progress:.0f}s")
    for name, worker in monitor.workers.items():
        busy_since = worker.busy_since
        if worker.fatal:
            problems.append(worker.fatal)
        elif not worker.alive:
            problems.append(f"model {name}: inference thread ended")
        elif busy_since is not None and now - busy_since > stall_s:
            problems.append(f"model {name}: inference hung for {now - busy_since:.0f}s")
    publisher = monitor.publisher
    if not publisher.alive:
        problems.append("publisher: thread ended")
    elif now - publisher.last_progress > stall_s:
        problems.append(f"publisher: no progress for {now - publisher.last_progress:.0f}s")
    return problems


def fatal_problems(monitor) -> list[str]:
    return [worker.fatal for worker in monitor.workers.values() if worker.fatal]


def build_monitor(config: AppConfig, availability: Availability):
    from monitor.pipeline import Monitor

    return Monitor(config, availability=availability)


class Service:
    """Start the monitor, tell systemd, keep the watchdog fed while healthy, reload on SIGHUP, stop on SIGTERM."""

    def __init__(
        self,
        config_path: str | Path,
        config: AppConfig,
        notifier: Notifier | None = None,
        build: Callable[[AppConfig, Availability], object] = build_monitor,
        tick_s: float = 1.0,
    ):
        self.config_path = Path(config_path)
        self.config = config
        self.notifier = notifier or Notifier()
        self.build = build
        self.interval = watchdog_interval()
        self.tick_s = min(tick_s, self.interval) if self.interval else tick_s
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.monitor = None
        self.availability = Availability(config.mqtt, list(config.cameras))
        self.keepalives = 0
        self._problems: list[str] = []

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda signum, frame: self.stop_requested.set())
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reload_requested.set())

    def run(self) -> int:
        """Until stopped, or until every camera finished (file sources without loop); the exit code."""
        self.notifier.status("starting: loading the models (a first export takes tens of seconds; see the journal)")
        self.monitor = self.build(self.config, self.availability)
        self.monitor.start()
        self.notifier.ready(self._status())
        log.info("service ready: %s", self._status())
        code = 0
        try:
            code = self._supervise()
        finally:
            self.notifier.stopping()
            log.info("stopping")
            self.monitor.stop()
            self.availability.stop()  # offline after the last counts and event ends went out
            self.notifier.close()
        return code

    def _supervise(self) -> int:
        last_keepalive = 0.0
        while not self.stop_requested.wait(self.tick_s):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            fatal = fatal_problems(self.monitor)
            if fatal:
                log.critical("fatal: %s", "; ".join(fatal))
                self.notifier.status(f"fatal: {fatal[0]}")
                return EXIT_FATAL
            if self._healthy() and self.interval and time.monotonic() - last_keepalive >= self.interval:
                self.notifier.watchdog()
                self.keepalives += 1
                last_keepalive = time.monotonic()
            if all(loop.finished for loop in self.monitor.loops.values()):
                log.info("all cameras finished")
                return 0
        return 0

    def _healthy(self) -> bool:
        problems = stalled_parts(self.monitor, self.config.service.watchdog_stall_s)
        which = [problem.split(":")[0] for problem in problems]  # without the growing seconds
        if which != self._problems:
            self._problems = which
            if problems:
                log.error("not healthy, watchdog keep-alive withheld: %s", "; ".join(problems))
                self.notifier.status("stalled: " + "; ".join(problems))
            else:
                log.info("healthy again")
                self.notifier.status(self._status())
        return not problems

    def reload(self) -> bool:
        """Re-read the config file; a valid one restarts the pipeline with it, an invalid one is only logged."""
        try:
            new_config = load_config(self.config_path)
        except ConfigError as error:
            log.error("reload: %s has errors, keeping the running configuration:\n  %s", self.config_path, "\n  ".join(error.problems))
            self.notifier.status("reload refused: config has errors")
            return False
        self.notifier.reloading()
        log.info("reload: restarting the pipeline with %s", self.config_path)
        self.monitor.stop()
        try:
            availability = self._availability_for(new_config)
            self.monitor = self.build(new_config, availability)
            self.config = new_config
        except ConfigError as error:
            log.error("reload: cannot build the new pipeline (%s); going on with the previous configuration", "; ".join(error.problems))
            availability = self.availability
            self.monitor = self.build(self.config, availability)
        self._adopt(availability)
        logging.getLogger().setLevel(self.config.logging.level)
        self.monitor.start()
        self._problems = []
        self.notifier.ready(self._status())
        return True

    def _availability_for(self, config: AppConfig) -> Availability:
        """The running status connections when they fit ``config``'s broker and prefix, else new ones."""
        return self.availability if self.availability.serves(config.mqtt) else Availability(config.mqtt, list(config.cameras))

    def _adopt(self, availability: Availability) -> None:
        """Kept connections follow the cameras (a removed one goes offline); replaced ones go offline."""
        if availability is self.availability:
            availability.set_cameras(list(self.config.cameras))
        else:
            self.availability.stop()
            self.availability = availability

    def _status(self) -> str:
        cameras = len(self.config.cameras)
        return f"running: {cameras} camera{'s' if cameras != 1 else ''} on {self.monitor.device if self.monitor else '?'}"

