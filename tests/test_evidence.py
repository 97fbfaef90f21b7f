"""The evidence store: a directory of JPEG snapshots bounded by size and age, skipped when the disk is nearly full."""

from __future__ import annotations

import os
import time

import numpy as np

from monitor.config import EvidenceConfig
from monitor.evidence import EvidenceStore


def test_evidence_directory_stays_under_its_size_bound(tmp_path):
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, max_mb=1.0, min_free_mb=0, jpeg_quality=95))
    rng = np.random.default_rng(1)
    for i in range(120):  # ~60 KB each of incompressible noise: ~7 MB written
        assert store.save(f"event-{i:03d}", rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)) is not None
        on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.jpg"))
        assert on_disk <= 1024 * 1024
    names = sorted(p.name for p in tmp_path.glob("*.jpg"))
    assert names[-1] == "event-119.jpg" and "event-000.jpg" not in names and len(names) >= 10
    assert store.total_bytes() == sum(p.stat().st_size for p in tmp_path.glob("*.jpg"))


def test_evidence_older_than_max_age_is_deleted(tmp_path):
    old = tmp_path / "from-last-year.jpg"
    old.write_bytes(b"x" * 100)
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    keep = tmp_path / "notes.txt"  # not ours: never touched
    keep.write_text("hello")
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, max_age_days=30, min_free_mb=0))
    store.prune()
    assert not old.exists() and keep.exists()
    assert store.save("new", np.zeros((20, 20, 3), np.uint8)).exists()


def test_evidence_skips_writing_when_the_disk_is_nearly_full(tmp_path):
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, min_free_mb=1e9))
    assert store.save("big", np.zeros((20, 20, 3), np.uint8)) is None
    assert list(tmp_path.iterdir()) == []
