"""One monitor per state directory: an exclusive lock on ``<state_dir>/monitor.lock``, held for the life of the
process (a reload keeps it). Two monitors on one state dir would share the outbox and the seq numbering
and, with one ``client_id``, throw each other off the broker every second."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "monitor.lock"


class StateDirInUse(Exception):
    pass


class StateDirLock:
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StateDirLock:
        """Take the lock or raise StateDirInUse naming the directory and the holder's pid."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirInUse(f"state_dir {self.state_dir}: cannot create the lock {self.path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirInUse(
                f"state_dir {self.state_dir} is in use by another monitor (pid {holder}, lock {self.path}); "
                "stop that one, or give this one its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays (unlinking it would race a new holder)
            self._fd = None
