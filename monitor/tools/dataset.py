"""``monitor dataset export``: the frames escalation saved (``monitor.escalation.records``) written as a YOLO
dataset (images/, labels/, data.yaml) for Ultralytics, with labels corrected by the model's answers."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from monitor.common import ALL_ZONES
from monitor.escalation.records import RECORD_VERSION
from monitor.geometry import box_iou

PROMOTE_IOU = 0.5  # a weak detection overlapping a counted box this much is the same object


@dataclass
class ExportSummary:
    train: int = 0
    val: int = 0
    boxes: int = 0
    review: list[str] = field(default_factory=list)  # frames whose boxes disagree with the model's counts
    skipped: list[str] = field(default_factory=list)  # unreadable records
    names: list[str] = field(default_factory=list)


def frame_labels(record: dict) -> tuple[list[dict], bool]:
    """The boxes to train on and whether they agree with the model's counts.

    Start from the detector's counted boxes; drop those of tracks the model said are not a real event;
    where the model counts more of a label, promote the strongest weak detections of that label.
    """
    labels = record["class_labels"]
    dismissed = {t for verdict in _verdicts(record) if not verdict["real"] for t in verdict["track_ids"]}
    boxes = [b for b in record["objects"] if b["track_id"] < 0 or b["track_id"] not in dismissed]
    totals = (record.get("answer") or {}).get("counts", {}).get(ALL_ZONES)
    if totals is None:
        return boxes, False
    agrees = True
    for label, wanted in totals.items():
        have = [b for b in boxes if labels[b["class_id"]] == label]
        if wanted > len(have):
            boxes += _weak_of(record, label, boxes)[: wanted - len(have)]
            have = [b for b in boxes if labels[b["class_id"]] == label]
        agrees = agrees and wanted == len(have)
    return boxes, agrees


def _verdicts(record: dict) -> list[dict]:
    answer = record.get("answer") or {}
    events = {e["id"]: e for e in record.get("events", [])}
    return [
        {"real": v["real"], "track_ids": events[v["id"]].get("track_ids", [])} for v in answer.get("events", []) if v["id"] in events
    ]


def _weak_of(record: dict, label: str, taken: list[dict]) -> list[dict]:
    labels = record["class_labels"]
    taken_xyxy = np.array([b["xyxy"] for b in taken], np.float32).reshape(-1, 4)
    weak = []
    for det in sorted(record["detections"], key=lambda d: -d["conf"]):
        if labels[det["class_id"]] != label:
            continue
        xyxy = np.array([det["xyxy"]], np.float32)
        if len(taken_xyxy) and box_iou(xyxy, taken_xyxy).max() >= PROMOTE_IOU:
            continue
        weak.append(det)
        taken_xyxy = np.vstack([taken_xyxy, xyxy])
    return weak


def export_dataset(source: Path, out: Path, val_fraction: float = 0.2, include_disagreements: bool = False) -> ExportSummary:
    """Write ``out/images/{train,val}``, ``out/labels/{train,val}`` and ``out/data.yaml`` from saved frames."""
    summary = ExportSummary()
    records = _load_records(Path(source), summary)
    names: list[str] = []
    chosen = []
    for jpg, record in records:
        boxes, agrees = frame_labels(record)
        if not agrees:
            summary.review.append(str(jpg))
            if not include_disagreements:
                continue
        for name in record["class_names"]:
            if name not in names:
                names.append(name)
        chosen.append((jpg, record, boxes))
    make_split_dirs(out)
    for (jpg, record, boxes), splits in zip(chosen, assign_splits(len(chosen), val_fraction)):
        for split in splits:
            _write_frame(out, split, jpg, record, boxes, names)
            setattr(summary, split, getattr(summary, split) + 1)
        summary.boxes += len(boxes)
    summary.names = names
    write_data_yaml(out, names)
    if summary.review:
        (out / "review.txt").write_text("\n".join(summary.review) + "\n")
    return summary


def _load_records(source: Path, summary: ExportSummary) -> list[tuple[Path, dict]]:
    records = []
    for jpg in sorted(source.glob("*/*.jpg")):
        try:
            record = json.loads(jpg.with_suffix(".json").read_text())
            if record.get("version") != RECORD_VERSION:
                raise ValueError(f"unknown record version {record.get('version')}")
        except (OSError, ValueError) as exc:
            summary.skipped.append(f"{jpg}: {exc}")
            continue
        records.append((jpg, record))
    return records


def make_split_dirs(out: Path) -> None:
    for sub in ("images/train", "images/val", "labels/train", "labels/val"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def assign_splits(count: int, val_fraction: float) -> list[list[str]]:
    """Per item, the splits it goes to: every ``1/val_fraction``-th to val, the rest to train."""
    every = max(2, round(1 / val_fraction)) if val_fraction > 0 else 0
    out = [["val"] if every and i % every == every - 1 else ["train"] for i in range(count)]
    if count == 1 or (every and count and ["val"] not in out[:-1]):
        out[-1] = ["train", "val"]  # Ultralytics needs both splits; a lone frame serves as both
    return out


def write_data_yaml(out: Path, names: list[str]) -> Path:
    data = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": dict(enumerate(names))}
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_pair(out: Path, split: str, stem: str, image: Path, lines: list[str]) -> None:
    """One image (copied as is) and its YOLO label lines into a split."""
    shutil.copyfile(image, out / "images" / split / f"{stem}{image.suffix.lower()}")
    (out / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def _write_frame(out: Path, split: str, jpg: Path, record: dict, boxes: list[dict], names: list[str]) -> None:
    w, h = record["width"], record["height"]
    lines = []
    for box in boxes:
        x1, y1, x2, y2 = (min(max(v, 0.0), lim) for v, lim in zip(box["xyxy"], (w, h, w, h)))
        if x2 <= x1 or y2 <= y1:
            continue
        cls = names.index(record["class_names"][box["class_id"]])
        lines.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    write_pair(out, split, f"{jpg.parent.name}_{jpg.stem}", jpg, lines)
