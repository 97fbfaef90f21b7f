"""Evidence: annotated JPEG snapshots of safety events in one directory bounded by size and age.

After every write the oldest files go until the directory is under ``max_mb`` and nothing is older
than ``max_age_days``; a write is skipped when the disk is nearly full. Only snapshots this store wrote
are ever counted or deleted: each carries a JPEG comment saying so, and any other file (a user's own
``*.jpg`` in a folder ``evidence.dir`` points at) is left alone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from monitor.config import EvidenceConfig

log = logging.getLogger(__name__)

SUFFIX = ".jpg"
NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")  # event ids: camera, rule and a hex suffix; never a path
MARK = b"camera-monitor evidence snapshot"  # in a JPEG comment (COM segment) of every file this store writes
HEAD_BYTES = 512  # where the mark is: right after the JFIF header


def mark_jpeg(data: bytes) -> bytes:
    """The JPEG with our comment segment after its JFIF (APP0) header."""
    at = 2 + (2 + int.from_bytes(data[4:6], "big") if data[2:4] == b"\xff\xe0" else 0)
    return data[:at] + b"\xff\xfe" + (len(MARK) + 2).to_bytes(2, "big") + MARK + data[at:]


def is_own_snapshot(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return MARK in file.read(HEAD_BYTES)
    except OSError:
        return False


@dataclass
class _File:
    path: Path
    size: int
    mtime: float


class EvidenceStore:
    """Thread-safe (shared by all cameras); the directory index is kept in memory after one scan."""

    def __init__(self, config: EvidenceConfig):
        if config.dir is None:
            raise ValueError("evidence.dir must be resolved (load_config does it)")
        self.dir = Path(config.dir).absolute()  # an event's snapshot path must mean the same file to every reader
        self.max_bytes = int(config.max_mb * 1024 * 1024)
        self.max_age_s = config.max_age_days * 86400
        self.min_free_bytes = int(config.min_free_mb * 1024 * 1024)
        self.quality = config.jpeg_quality
        self._lock = threading.Lock()
        self._files: list[_File] | None = None  # oldest first; None until the first scan

    def save(self, name: str, image: np.ndarray) -> Path | None:
        """Write ``<dir>/<name>.jpg``; None (and a warning) when it cannot be written."""
        ok, data = cv2.imencode(SUFFIX, image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            log.warning("evidence %s: JPEG encoding failed", name)
            return None
        with self._lock:
            try:
                return self._write(name, mark_jpeg(data.tobytes()))
            except OSError as exc:
                log.warning("evidence: cannot write %s in %s: %s", name, self.dir, exc.strerror or exc)
                return None

    def prune(self) -> None:
        """Apply the bounds now (at start-up: files from earlier runs may have aged out)."""
        with self._lock:
            self._prune(self._index(), keep=Path())

    def read(self, name: str) -> bytes | None:
        """The snapshot ``<name>.jpg`` if this store holds it, else None: a bare name (no path, no link followed)."""
        if not NAME.fullmatch(name):
            return None
        path = self.dir / f"{name}{SUFFIX}"
        with self._lock:
            if not any(f.path == path for f in self._index()):
                return None
        try:
            handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(handle, "rb") as file:
            return file.read()

    def total_bytes(self) -> int:
        with self._lock:
            return sum(f.size for f in self._index())

    def _write(self, name: str, data: bytes) -> Path | None:
        self.dir.mkdir(parents=True, exist_ok=True)
        files = self._index()
        if shutil.disk_usage(self.dir).free - len(data) < self.min_free_bytes:
            log.warning("evidence: less than %d MB free in %s; snapshot %s skipped", self.min_free_bytes >> 20, self.dir, name)
            return None
        path = self.dir / f"{name}{SUFFIX}"
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        os.replace(partial, path)
        files[:] = [f for f in files if f.path != path]
        files.append(_File(path, len(data), time.time()))
        self._prune(files, keep=path)
        return path

    def _index(self) -> list[_File]:
        if self._files is None:
            found, foreign = [], 0
            if self.dir.is_dir():
                for path in self.dir.glob(f"*{SUFFIX}"):
                    if not is_own_snapshot(path):
                        foreign += 1
                        continue
                    try:
                        stat = path.stat()
                    except OSError:
                        continue
                    found.append(_File(path, stat.st_size, stat.st_mtime))
            if foreign:
                log.info("evidence: %d *.jpg files in %s are not this monitor's snapshots; left alone", foreign, self.dir)
            self._files = sorted(found, key=lambda f: f.mtime)
        return self._files

    def _prune(self, files: list[_File], keep: Path) -> None:
        """Oldest first: everything past max_age, then until the total fits max_bytes (never the newest file)."""
        oldest_allowed = time.time() - self.max_age_s
        total = sum(f.size for f in files)
        while files and files[0].path != keep and (files[0].mtime < oldest_allowed or total > self.max_bytes):
            victim = files.pop(0)
            total -= victim.size
            try:
                victim.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("evidence: cannot delete %s: %s", victim.path, exc.strerror or exc)
