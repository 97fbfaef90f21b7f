"""Limits on escalation: calls per camera per hour, the day's money budget (kept across restarts) and a
circuit breaker that pauses calls after repeated failures."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


class HourlyCap:
    """At most ``limit`` takes in any sliding hour."""

    def __init__(self, limit: int):
        self.limit = limit
        self._taken: deque[float] = deque()

    def try_take(self, now: float) -> bool:
        while self._taken and now - self._taken[0] >= 3600.0:
            self._taken.popleft()
        if len(self._taken) >= self.limit:
            return False
        self._taken.append(now)
        return True


class Budget:
    """Estimated money per UTC day across all cameras; a call reserves its estimate, then settles the actual.

    With a ``ledger`` file (under the state directory) the day's spending survives restarts, so a service
    restarted by its watchdog cannot spend the daily budget twice.
    """

    def __init__(self, daily: float, wall_clock: Callable[[], float] = time.time, ledger: Path | None = None):
        self.daily = daily
        self.wall_clock = wall_clock
        self.ledger = ledger
        self._lock = threading.Lock()
        self._day = self._today()
        self._spent = self._load_spent()

    def _load_spent(self) -> float:
        try:
            saved = json.loads(self.ledger.read_text()) if self.ledger else {}
            return float(saved["spent"]) if saved.get("day") == self._day else 0.0
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0.0  # no ledger yet, or an unreadable one: start the day at zero

    def _save(self) -> None:
        if not self.ledger:
            return
        try:
            self.ledger.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.ledger.with_suffix(".tmp")
            temporary.write_text(json.dumps({"day": self._day, "spent": self._spent}))
            temporary.replace(self.ledger)
        except OSError as exc:
            log.warning("escalation budget ledger %s: %s", self.ledger, exc.strerror)

    def _today(self) -> str:
        return datetime.fromtimestamp(self.wall_clock(), timezone.utc).date().isoformat()

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self._spent = today, 0.0

    def try_reserve(self, amount: float) -> bool:
        with self._lock:
            self._roll()
            if self._spent + amount > self.daily + 1e-12:
                return False
            self._spent += amount
            self._save()
            return True

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self._spent = max(0.0, self._spent - reserved + max(0.0, actual))
            self._save()

    @property
    def remaining(self) -> float:
        with self._lock:
            self._roll()
            return max(0.0, self.daily - self._spent)


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``cooldown_s`` lets one trial call through."""

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def allow(self) -> bool:
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial_running or self.clock() - self._opened_at < self.cooldown_s:
                return False
            self._trial_running = True
            return True

    def release(self) -> None:
        """The allowed call was not made: the trial slot, if it was one, is free again."""
        with self._lock:
            self._trial_running = False

    def record(self, success: bool) -> None:
        with self._lock:
            self._trial_running = False
            if success:
                self._consecutive, self._opened_at = 0, None
                return
            self._consecutive += 1
            if self._opened_at is not None or self._consecutive >= self.failures:
                if self._opened_at is None:
                    log.warning("escalation: %d failures in a row; pausing calls for %.0f s", self._consecutive, self.cooldown_s)
                self._opened_at = self.clock()
