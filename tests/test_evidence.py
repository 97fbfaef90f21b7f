"""The evidence store: a directory of JPEG snapshots bounded by size and age, skipped when the disk is nearly full."""

from __future__ import annotations

import os
import time

import numpy as np

from monitor.config import EvidenceConfig
from monitor.evidence import EvidenceStore, mark_jpeg


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
    old.write_bytes(mark_jpeg(b"\xff\xd8" + b"x" * 100))  # one of ours (the store's mark): other files are never touched
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


def noise_jpeg_store(tmp_path, max_mb: float) -> EvidenceStore:
    return EvidenceStore(EvidenceConfig(dir=tmp_path, max_mb=max_mb, min_free_mb=0, jpeg_quality=95))


def test_only_jpg_files_are_counted_and_pruned(tmp_path):
    for name in ("notes.txt", "clip.jpeg", "event.part"):
        (tmp_path / name).write_bytes(b"x" * 50_000)
        os.utime(tmp_path / name, (time.time() - 40 * 86400,) * 2)
    (tmp_path / "earlier.jpg").write_bytes(earlier := mark_jpeg(b"\xff\xd8" + b"y" * 1000))
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, max_mb=0.01, max_age_days=30, min_free_mb=0))
    assert store.total_bytes() == len(earlier)
    store.save("new", np.zeros((8, 8, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.jpeg", "earlier.jpg", "event.part", "new.jpg", "notes.txt"]


def test_the_newest_file_is_kept_even_when_it_alone_is_over_the_bound(tmp_path):
    store = noise_jpeg_store(tmp_path, max_mb=0.01)
    noise = np.random.default_rng(2).integers(0, 255, (160, 200, 3), dtype=np.uint8)
    first = store.save("first", noise)
    second = store.save("second", noise)
    assert second.exists() and second.stat().st_size > 0.01 * 1024 * 1024
    assert not first.exists()
    assert [p.name for p in tmp_path.glob("*.jpg")] == ["second.jpg"]


def test_total_bytes_follows_writes_and_finds_files_from_an_earlier_run(tmp_path):
    store = noise_jpeg_store(tmp_path, max_mb=10)
    assert store.total_bytes() == 0
    paths = [store.save(f"e{i}", np.full((40, 40, 3), i * 40, np.uint8)) for i in range(3)]
    on_disk = sum(p.stat().st_size for p in paths)
    assert store.total_bytes() == on_disk
    assert noise_jpeg_store(tmp_path, max_mb=10).total_bytes() == on_disk


def test_saving_a_name_again_replaces_the_file_and_its_size(tmp_path):
    store = noise_jpeg_store(tmp_path, max_mb=10)
    store.save("ev", np.random.default_rng(3).integers(0, 255, (100, 100, 3), dtype=np.uint8))
    path = store.save("ev", np.zeros((10, 10, 3), np.uint8))
    assert store.total_bytes() == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["ev.jpg"]


def test_read_gives_only_the_stores_own_snapshots_by_bare_name(tmp_path):
    folder = tmp_path / "evidence"
    store = noise_jpeg_store(folder, max_mb=10)
    path = store.save("street-lot_intrusion-0a1b", np.zeros((10, 10, 3), np.uint8))
    assert store.read("street-lot_intrusion-0a1b") == path.read_bytes()
    (tmp_path / "secret.jpg").write_bytes(b"not evidence")
    (folder / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (folder / "later.jpg").write_bytes(b"written by someone else")
    for name in ("../secret", "link", "later", "street-lot_intrusion-0a1b.jpg", "", "a/b", "missing"):
        assert store.read(name) is None, name
    assert noise_jpeg_store(folder, max_mb=10).read("link") is None  # found by a fresh scan: still never followed
    assert noise_jpeg_store(folder, max_mb=10).read("later") == b"written by someone else"  # found at start: the store's
