"""The learning loop: escalated frames saved with the detector's boxes and the model's answer (bounded on disk),
and ``monitor dataset export`` writing them as a YOLO dataset (images/, labels/, data.yaml) for Ultralytics.

On disk, per saved frame: ``<dir>/<camera>/<utc time>_<frame>_<reason>.jpg`` and a ``.json`` record next to it.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import yaml

from monitor.config import DatasetConfig
from monitor.counting import ALL_ZONES

log = logging.getLogger(__name__)

RECORD_VERSION = 1
PROMOTE_IOU = 0.5  # a weak detection overlapping a counted box this much is the same object


class DatasetWriter:
    """Saves escalated frames; beyond ``max_mb`` the oldest frames are deleted. Safe to call from many threads."""

    def __init__(self, config: DatasetConfig):
        self.root = Path(config.dir)
        self.max_bytes = int(config.max_mb * 1024 * 1024)
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        self._files = sorted(self._scan(), key=lambda item: item[0])  # (stem name, jpg path, bytes of the pair)
        self._bytes = sum(size for _, _, size in self._files)

    def _scan(self):
        for jpg in self.root.glob("*/*.jpg"):
            record = jpg.with_suffix(".json")
            size = jpg.stat().st_size + (record.stat().st_size if record.exists() else 0)
            yield jpg.stem, jpg, size

    def save(self, request, image: np.ndarray, outcome) -> Path:
        """Write the frame (as it left the host: blurred if configured, without zone outlines) and its record."""
        stamp = datetime.fromtimestamp(request.wall_time, timezone.utc).strftime("%Y%m%dT%H%M%S_%f")
        stem = f"{stamp}_{request.frame_index:08d}_{request.reason}"
        folder = self.root / request.camera
        folder.mkdir(exist_ok=True)
        jpg = folder / f"{stem}.jpg"
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError("JPEG encoding failed")
        record = json.dumps(build_record(request, image, outcome), separators=(",", ":"))
        with self._lock:
            jpg.write_bytes(data.tobytes())
            jpg.with_suffix(".json").write_text(record)
            self._files.append((stem, jpg, len(data) + len(record)))
            self._bytes += len(data) + len(record)
            self._trim()
        return jpg

    def _trim(self) -> None:
        self._files.sort(key=lambda item: item[0])
        while self._bytes > self.max_bytes and len(self._files) > 1:
            _, jpg, size = self._files.pop(0)
            jpg.unlink(missing_ok=True)
            jpg.with_suffix(".json").unlink(missing_ok=True)
            self._bytes -= size

    @property
    def size_bytes(self) -> int:
        return self._bytes


def build_record(request, image: np.ndarray, outcome) -> dict:
    answer = outcome.answer
    return {
        "version": RECORD_VERSION,
        "camera": request.camera,
        "ts": datetime.fromtimestamp(request.wall_time, timezone.utc).isoformat(),
        "frame": request.frame_index,
        "reason": request.reason,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "class_names": request.brief.class_names,
        "class_labels": _class_labels(request),
        "objects": _boxes(request.objects),
        "detections": _boxes(request.detections),
        "detector_counts": request.detector_counts,
        "events": request.events,
        "answer": {"counts": answer.counts, "events": answer.events, "description": answer.description} if answer else None,
    }


def _class_labels(request) -> list[str]:
    brief = request.brief
    by_class = {c: label for label, classes in brief.label_classes.items() for c in classes}
    return [by_class.get(name, name) for name in brief.class_names]


def _boxes(boxes) -> list[dict]:
    return [
        {"xyxy": [round(float(v), 2) for v in xyxy], "conf": round(float(conf), 4), "class_id": int(cls), "track_id": int(tid)}
        for xyxy, conf, cls, tid in zip(boxes.xyxy, boxes.conf, boxes.class_id, boxes.track_id)
    ]


# --- export -----------------------------------------------------------------------------------------------


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
        if len(taken_xyxy) and _iou(xyxy, taken_xyxy).max() >= PROMOTE_IOU:
            continue
        weak.append(det)
        taken_xyxy = np.vstack([taken_xyxy, xyxy])
    return weak


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from monitor.escalation import box_iou

    return box_iou(a, b)


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


def cmd_export(args) -> int:
    """``monitor dataset export --config FILE --out DIR``: exit 0 written, 1 nothing to export, 2 config problem."""
    import sys

    from monitor.cli import report_config_error
    from monitor.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        return report_config_error(args.config, error)
    if config.escalation is None or config.escalation.dataset.dir is None:
        return report_config_error(args.config, ConfigError(["escalation.dataset.dir: not set, so no frames were saved"]))
    if not 0 <= args.val_fraction < 1:
        print("--val-fraction must be in [0, 1)", file=sys.stderr)
        return 2
    source = config.escalation.dataset.dir
    summary = export_dataset(source, Path(args.out), args.val_fraction, args.include_disagreements)
    for problem in summary.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    print(
        f"{args.out}: {summary.train} train and {summary.val} val images, {summary.boxes} boxes, "
        f"classes {summary.names}; {len(summary.review)} frames disagree with the model (review.txt)"
    )
    return 0 if summary.train else 1
