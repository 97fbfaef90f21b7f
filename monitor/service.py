"""Running under systemd: sd_notify (READY, RELOADING, STOPPING, STATUS, WATCHDOG), signals and reload.

The watchdog keep-alive (``WATCHDOG=1``) is sent only while every part of the pipeline makes progress:
each camera loop, each inference worker (a call running longer than ``service.watchdog_stall_s`` is
hung) and the publisher. A dead thread or a hung inference stops the keep-alive, and systemd
(``WatchdogSec=``) kills and restarts the service.

Reload (``SIGHUP``, ``systemctl reload``): the new config file is validated and the new pipeline built
(models loaded, outbox opened) while the running one goes on; whatever fails there (a config error or
anything else) is logged and shown in ``STATUS=``, and the running pipeline stays. Only then is the running
pipeline stopped and the new one started (a few seconds without counts); should that start fail, the
previous configuration is started again. Nothing is lost across it: unsent messages wait in the outbox
and every stream's ``(epoch, seq)`` goes on. A reload is not an outage: the status topics' connections
(``Availability``) outlive the pipeline, so ``<prefix>/status`` and each kept camera's ``status`` stay
``online`` throughout (only a removed camera goes ``offline``).

The service holds ``<state_dir>/monitor.lock`` (``monitor.instance``) for the life of the process: a
second monitor on the same state dir is refused at start.
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
from monitor.instance import StateDirInUse, StateDirLock
from monitor.publishing.availability import Availability
from monitor.publishing.sequence import Sequences

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


def cameras_down(monitor) -> list[str]:
    """Cameras that are down and why (a camera reconnecting for ever must not hide behind "running")."""
    return [
        f"camera {name} down: {reader.problem}"
        for name, reader in monitor.readers.items()
        if reader.state == CameraState.DOWN
    ]


def fatal_problems(monitor) -> list[str]:
    return [worker.fatal for worker in monitor.workers.values() if worker.fatal]


def build_monitor(config: AppConfig, availability: Availability, sequences: Sequences):
    from monitor.pipeline import Monitor

    return Monitor(config, availability=availability, sequences=sequences)


def describe_failure(exc: BaseException) -> str:
    return "; ".join(exc.problems) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"


class Service:
    """Start the monitor, tell systemd, keep the watchdog fed while healthy, reload on SIGHUP, stop on SIGTERM."""

    def __init__(
        self,
        config_path: str | Path,
        config: AppConfig,
        notifier: Notifier | None = None,
        build: Callable[[AppConfig, Availability, Sequences], object] = build_monitor,
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
        self.lock: StateDirLock | None = None
        self.sequences: Sequences | None = None
        self.keepalives = 0
        self._problems: list[str] = []
        self._down: list[str] = []

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda signum, frame: self.stop_requested.set())
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reload_requested.set())

    def run(self) -> int:
        """Until stopped, or until every camera finished (file sources without loop); the exit code.

        StateDirInUse when another monitor holds the state dir; ConfigError for what only shows at start."""
        self.lock = StateDirLock(self.config.state_dir).acquire()
        self.sequences = Sequences(self.config.state_dir)
        self.notifier.status("starting: loading the models (a first export takes tens of seconds; see the journal)")
        try:
            self.monitor = self.build(self.config, self.availability, self.sequences)
            self.monitor.start()
        except BaseException:
            self.availability.stop()
            self.lock.release()
            raise
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
            self.lock.release()
        return code

    def _supervise(self) -> int:
        last_keepalive = 0.0
        while not self.stop_requested.wait(self.tick_s):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                try:
                    self.reload()
                except Exception as error:  # the previous configuration did not start again either
                    log.critical("reload: nothing runs (%s); exiting for systemd to restart the service", describe_failure(error))
                    self.notifier.status(f"fatal: reload left nothing running: {describe_failure(error)}"[:400])
                    return EXIT_FATAL
            fatal = fatal_problems(self.monitor)
            if fatal:
                log.critical("fatal: %s", "; ".join(fatal))
                self.notifier.status(f"fatal: {fatal[0]}")
                return EXIT_FATAL
            healthy = self._healthy()
            if healthy:
                self._report_cameras()
            if healthy and self.interval and time.monotonic() - last_keepalive >= self.interval:
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

    def _report_cameras(self) -> None:
        """STATUS= follows the cameras that are down (the watchdog does not: a camera outage is not a hang)."""
        down = cameras_down(self.monitor)
        if down != self._down:
            self._down = down
            self.notifier.status(self._status())

    def reload(self) -> bool:
        """Re-read the config file and build its pipeline while the running one goes on; switch only if that worked.

        Never ends the daemon, whatever fails: the error is logged and shown in STATUS=, and the running
        pipeline stays (or, if the new one fails to start, the previous configuration is started again)."""
        try:
            new_config = load_config(self.config_path)
            lock, sequences = self._state_for(new_config)
        except (ConfigError, StateDirInUse) as error:
            problems = error.problems if isinstance(error, ConfigError) else [str(error)]
            log.error("reload: %s has errors, keeping the running configuration:\n  %s", self.config_path, "\n  ".join(problems))
            self.notifier.status("reload refused: config has errors")
            return False
        except Exception as error:  # anything else (a bug, the file system): same answer
            return self._refuse(f"cannot read {self.config_path}", error)
        availability = self._availability_for(new_config)
        try:
            new_monitor = self.build(new_config, availability, sequences)
        except Exception as error:
            if lock is not self.lock:
                lock.release()
            return self._refuse("cannot build the new pipeline", error)
        self.notifier.reloading()
        log.info("reload: restarting the pipeline with %s", self.config_path)
        self.monitor.stop()
        try:
            new_monitor.start()
        except Exception as error:
            log.error("reload: the new pipeline did not start (%s); starting the previous configuration again", describe_failure(error))
            if availability is not self.availability:
                availability.stop()  # the new broker's status topics: the new pipeline may have started them
            if lock is not self.lock:
                lock.release()
            self.monitor = self.build(self.config, self.availability, self.sequences)
            self.monitor.start()
            self.notifier.ready(self._status())
            self.notifier.status(f"reload failed, previous configuration running: {describe_failure(error)}"[:400])
            return False
        if lock is not self.lock:
            self.lock.release()
        self.monitor, self.config, self.lock, self.sequences = new_monitor, new_config, lock, sequences
        self._adopt(availability)
        logging.getLogger().setLevel(self.config.logging.level)
        self._problems = []
        self.notifier.ready(self._status())
        return True

    def _state_for(self, config: AppConfig) -> tuple[StateDirLock, Sequences]:
        """The lock and numbering of the config's state dir: the running ones, or the new dir's (taken now)."""
        if config.state_dir == self.config.state_dir:
            return self.lock, self.sequences
        return StateDirLock(config.state_dir).acquire(), Sequences(config.state_dir)

    def _refuse(self, what: str, error: Exception) -> bool:
        log.error("reload: %s (%s); keeping the running configuration", what, describe_failure(error), exc_info=not isinstance(error, ConfigError))
        self.notifier.status(f"reload refused: {what}: {describe_failure(error)}"[:400])
        return False

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
        running = f"running: {cameras} camera{'s' if cameras != 1 else ''} on {self.monitor.device if self.monitor else '?'}"
        down = cameras_down(self.monitor) if self.monitor else []
        return "; ".join([running, *down])

