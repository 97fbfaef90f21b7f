"""``evidence.dir`` pointed at a folder that already holds a user's pictures: the store's age and size bounds
apply only to the snapshots it wrote itself, never to anyone else's ``*.jpg``."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from monitor.config import EvidenceConfig
from monitor.evidence import EvidenceStore

DAY = 86400


def photo(path, seed: int, size: int = 64) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    path.write_bytes(data)
    return data


def age(path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def test_a_users_old_jpgs_survive_the_start_up_prune(tmp_path):
    folder = tmp_path / "Pictures"
    folder.mkdir()
    holiday = photo(folder / "holiday.jpg", 1)
    same_pattern = photo(folder / "street-lot_intrusion-0123456789.jpg", 2)  # even one named like an event id
    age(folder / "holiday.jpg", 400)
    age(folder / "street-lot_intrusion-0123456789.jpg", 400)
    store = EvidenceStore(EvidenceConfig(dir=folder, max_age_days=30))
    ours = store.save("street-lot_intrusion-5c1f0a9e2b", np.zeros((48, 64, 3), np.uint8))
    age(ours, 400)

    EvidenceStore(EvidenceConfig(dir=folder, max_age_days=30)).prune()  # what the next start does

    assert (folder / "holiday.jpg").read_bytes() == holiday
    assert (folder / "street-lot_intrusion-0123456789.jpg").read_bytes() == same_pattern
    assert not ours.exists(), "its own snapshot past max_age_days goes"


def test_the_size_bound_neither_counts_nor_deletes_other_files(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    big = photo(folder / "big-user-photo.jpg", 3, size=1200)
    assert len(big) > 1_000_000
    store = EvidenceStore(EvidenceConfig(dir=folder, max_mb=0.2, min_free_mb=0))
    image = np.random.default_rng(4).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    written = [store.save(f"cam-rule-{n:010x}", image) for n in range(8)]
    assert (folder / "big-user-photo.jpg").read_bytes() == big
    kept = [path for path in written if path.exists()]
    assert kept and kept[-1] == written[-1] and len(kept) < len(written), "its own oldest went for max_mb"
    assert store.total_bytes() == sum(path.stat().st_size for path in kept), "only its own files count"


def test_snapshots_stay_ordinary_jpegs(tmp_path):
    store = EvidenceStore(EvidenceConfig(dir=tmp_path))
    image = np.full((48, 64, 3), 90, np.uint8)
    path = store.save("cam-rule-00000000aa", image)
    decoded = cv2.imread(str(path))
    assert decoded.shape == image.shape and abs(int(decoded.mean()) - 90) <= 2
