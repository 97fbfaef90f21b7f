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
from monitor.escalation.records import READABLE_VERSIONS
from monitor.geometry import anchor_points, box_iou, points_in_polygon

PROMOTE_IOU = 0.5  # a weak detection overlapping a counted box this much is the same object
DISMISSED_IOU = 0.3  # a box overlapping a dismissed event's box this much is what the model dismissed


@dataclass
class ExportSummary:
    train: int = 0
    val: int = 0
    boxes: int = 0
    frames: int = 0  # records found
    unanswered: int = 0  # frames whose call failed: no answer to check the detector's boxes against
    review: list[str] = field(default_factory=list)  # frames whose boxes disagree with the model's counts
    skipped: list[str] = field(default_factory=list)  # unreadable records
    names: list[str] = field(default_factory=list)

    def why_empty(self, source: Path, include_disagreements: bool) -> str:
        """Why nothing was exported (or no val split): what the operator needs to do next."""
        if not self.frames and not self.skipped:
            return f"no saved frames in {source} (the monitor saves answered escalations there while it runs)"
        if not self.frames:
            return f"none of the {len(self.skipped)} records in {source} could be read"
        reasons = []
        if self.unanswered:
            reasons.append(f"{self.unanswered} have no answer (the call failed)")
        if self.review and not include_disagreements:
            reasons.append(f"{len(self.review)} disagree with the model's counts (listed in review.txt; label them, "
                           f"or export them as they are with --include-disagreements)")
        if reasons:
            return f"of {self.frames} saved frames, " + " and ".join(reasons)
        return f"{self.frames} frame(s) cannot make both a train and a val split: at least 2 are needed"


def frame_labels(record: dict) -> tuple[list[dict], bool]:
    """The boxes to train on and whether they agree with the model's counts (overall and per zone).

    Start from the detector's counted boxes and drop what the model dismissed (the tracks and boxes of events
    it said are not real). Where the model counts more of a label, promote the strongest weak detections of
    that label, never one the model dismissed, and only into zones where the model counted more too.
    """
    wanted = (record.get("answer") or {}).get("counts") or {}
    if ALL_ZONES not in wanted:
        return [], False
    labels = record["class_labels"]
    dismissed_tracks, dismissed_boxes = _dismissed(record)
    boxes = [b for b in record["objects"] if b["track_id"] not in dismissed_tracks and not _overlaps(b, dismissed_boxes, DISMISSED_IOU)]
    zones = _zone_finder(record)
    have = _counts(boxes, labels, zones)
    for weak in _weak_candidates(record, dismissed_boxes):
        if _overlaps(weak, [b["xyxy"] for b in boxes], PROMOTE_IOU):
            continue  # a counted (or already promoted) object
        label = labels[weak["class_id"]]
        counted_where = [zone for zone in (ALL_ZONES, *zones(weak)) if label in wanted.get(zone, {})]
        if ALL_ZONES in counted_where and all(_n(have, zone, label) < wanted[zone][label] for zone in counted_where):
            boxes.append(weak)
            have = _counts(boxes, labels, zones)
    checked = [zone for zone in wanted if zone == ALL_ZONES or zone in record.get("zones", {})]
    agrees = all(_n(have, zone, label) == n for zone in checked for label, n in wanted[zone].items())
    return boxes, agrees


def _n(counts: dict[str, dict[str, int]], zone: str, label: str) -> int:
    return counts.get(zone, {}).get(label, 0)


def _dismissed(record: dict) -> tuple[set[int], list[list[float]]]:
    """The track ids and boxes of the events the model said are not real."""
    events = {e["id"]: e for e in record.get("events", [])}
    verdicts = [(events[v["id"]], v["real"]) for v in (record.get("answer") or {}).get("events", []) if v["id"] in events]
    tracks = {t for event, real in verdicts if not real for t in event.get("track_ids", []) if t >= 0}
    boxes = [box for event, real in verdicts if not real for box in event.get("boxes", [])]
    return tracks, boxes


def _overlaps(box: dict, others: list[list[float]], threshold: float) -> bool:
    if not others:
        return False
    return float(box_iou(np.array([box["xyxy"]], np.float32), np.array(others, np.float32)).max()) >= threshold


def _weak_candidates(record: dict, dismissed_boxes: list[list[float]]) -> list[dict]:
    """Weak detections, strongest first, without what the model dismissed."""
    weak = sorted(record["detections"], key=lambda d: -d["conf"])
    return [det for det in weak if not _overlaps(det, dismissed_boxes, DISMISSED_IOU)]


def _zone_finder(record: dict):
    """box -> the names of the record's zones holding its anchor (records before version 2 have no zones)."""
    polygons = {name: np.asarray(points, np.float64) for name, points in record.get("zones", {}).items()}
    anchor = record.get("anchor", "bottom_center")

    def zones_of(box: dict) -> list[str]:
        point = anchor_points(np.array([box["xyxy"]], np.float64), anchor)
        return [name for name, polygon in polygons.items() if points_in_polygon(point, polygon)[0]]

    return zones_of


def _counts(boxes: list[dict], labels: list[str], zones_of) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for box in boxes:
        for zone in [ALL_ZONES, *zones_of(box)]:
            per_label = counts.setdefault(zone, {})
            per_label[labels[box["class_id"]]] = per_label.get(labels[box["class_id"]], 0) + 1
    return counts


def export_dataset(source: Path, out: Path, val_fraction: float = 0.2, include_disagreements: bool = False) -> ExportSummary:
    """Write ``out/images/{train,val}``, ``out/labels/{train,val}`` and ``out/data.yaml`` from saved frames."""
    summary = ExportSummary()
    records = _load_records(Path(source), summary)
    summary.frames = len(records)
    names: list[str] = []
    chosen = []
    for jpg, record in records:
        if record.get("answer") is None:
            summary.unanswered += 1
            continue
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
    for (jpg, record, boxes), split in zip(chosen, assign_splits(len(chosen), val_fraction)):
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
            if record.get("version") not in READABLE_VERSIONS:
                raise ValueError(f"unknown record version {record.get('version')}")
        except (OSError, ValueError) as exc:
            summary.skipped.append(f"{jpg}: {exc}")
            continue
        records.append((jpg, record))
    return records


def make_split_dirs(out: Path) -> None:
    for sub in ("images/train", "images/val", "labels/train", "labels/val"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def assign_splits(count: int, val_fraction: float) -> list[str]:
    """Per item, its split: every ``1/val_fraction``-th to val, the rest to train; with at least two items and a
    val fraction, at least one goes to val. An item is never in both (val would only repeat train)."""
    every = max(2, round(1 / val_fraction)) if val_fraction > 0 else 0
    out = ["val" if every and i % every == every - 1 else "train" for i in range(count)]
    if every and count >= 2 and "val" not in out:
        out[-1] = "val"
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
