"""The learning loop's records: escalated frames saved with real detector boxes and the model's answer, bounded on
disk."""

from __future__ import annotations

from escalation_support import brief, save_frame

from monitor.config import DatasetConfig
from monitor.escalation.records import DatasetWriter


def test_the_saved_frames_stay_within_max_mb(detected, tmp_path):
    app, detector, frames = detected
    writer = DatasetWriter(DatasetConfig(dir=tmp_path / "escalated", max_mb=0.25))
    b = brief(app, detector)
    saved = [save_frame(writer, detector, b, index, image, boxes) for index, image, boxes in frames]
    kept = sorted((tmp_path / "escalated" / "street").glob("*.jpg"))
    on_disk = sum(f.stat().st_size for f in (tmp_path / "escalated").rglob("*") if f.is_file())
    assert on_disk <= 0.25 * 1024 * 1024 and writer.size_bytes == on_disk
    assert 1 <= len(kept) < len(saved) and kept == sorted(saved)[-len(kept):]  # the newest are kept
    assert all(f.with_suffix(".json").exists() for f in kept)
    # a restarted writer finds what is there and keeps the bound
    again = DatasetWriter(DatasetConfig(dir=tmp_path / "escalated", max_mb=0.25))
    assert again.size_bytes == on_disk
