"""A site's own model: import labelled frames, fine-tune with Ultralytics, evaluate.

``monitor dataset import``  a folder of frames with YOLO .txt labels -> train/val dataset + data.yaml
``monitor train``           fine-tune (or train) on CPU or GPU; best weights -> ``--out``; metrics JSON beside them
``monitor evaluate``        mAP50 (and mAP50-95, precision, recall) of a model on a dataset's val split

Offline: nothing is downloaded (YOLO_OFFLINE=1, the Arial.ttf font check disabled, AMP's check model not fetched).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from monitor.detection.detector import choose_device
from monitor.tools.dataset import assign_splits, make_split_dirs, write_data_yaml, write_pair

log = logging.getLogger("monitor")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_IMGSZ = 640
EXIT_FAILED, EXIT_USAGE = 1, 2


class TrainingError(Exception):
    """Bad input to import/train/evaluate: a missing file, a bad label line (named with file and line)."""


def offline_ultralytics() -> None:
    """Keep Ultralytics from reaching the network.

    check_det_dataset() calls check_font('Arial.ttf'), which tries a download even with YOLO_OFFLINE=1;
    plots are off everywhere here, so the font is never needed.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    import ultralytics.data.utils as data_utils

    data_utils.check_font = lambda *args, **kwargs: None


# --- import -------------------------------------------------------------------------------------------------


@dataclass
class ImportSummary:
    train: int = 0
    val: int = 0
    boxes: int = 0
    unlabelled: list[str] = field(default_factory=list)  # images without a label file (left out)
    problems: list[str] = field(default_factory=list)  # bad label lines (their images left out)


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def label_file_for(image: Path, images: Path, labels: Path | None) -> Path | None:
    """The label file of an image: in --labels (same relative path, or by name), beside the image,
    or in the Ultralytics layout (``.../images/...`` -> ``.../labels/...``)."""
    relative = image.relative_to(images).with_suffix(".txt")
    candidates = [labels / relative, labels / relative.name] if labels else []
    candidates.append(image.with_suffix(".txt"))
    parts = list(image.with_suffix(".txt").parts)
    if "images" in parts:
        at = len(parts) - 1 - parts[::-1].index("images")
        candidates.append(Path(*parts[:at], "labels", *parts[at + 1 :]))
    return next((c for c in candidates if c.is_file()), None)


def parse_label_lines(path: Path, n_classes: int) -> list[str]:
    """Validated, normalised YOLO lines ``class xc yc w h``; TrainingError naming file:line for a bad one."""
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        fields = raw.split()
        where = f"{path}:{number}"
        if len(fields) != 5:
            raise TrainingError(f"{where}: expected 'class x_centre y_centre width height', got {raw.strip()!r}")
        try:
            cls, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise TrainingError(f"{where}: not numbers: {raw.strip()!r}") from None
        if not 0 <= cls < n_classes:
            raise TrainingError(f"{where}: class {cls} out of range (--names gives {n_classes} classes: 0..{n_classes - 1})")
        if not all(0.0 <= v <= 1.0 for v in values) or values[2] <= 0 or values[3] <= 0:
            raise TrainingError(f"{where}: coordinates must be normalised to 0..1 with width, height > 0: {raw.strip()!r}")
        lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in values))
    return lines


def import_labelled(images: Path, labels: Path | None, names: list[str], out: Path, val_fraction: float = 0.2) -> ImportSummary:
    """Write ``out/images/{train,val}``, ``out/labels/{train,val}`` and ``out/data.yaml`` from labelled frames.

    An empty label file is a frame with nothing to find (kept: it teaches the model what is not an object);
    an image without a label file is left out and listed; a bad label line leaves its image out and is listed.
    """
    if out.resolve() == images.resolve() or images.resolve() in out.resolve().parents:
        raise TrainingError(f"--out {out} must not be inside --images {images}")
    summary = ImportSummary()
    chosen: list[tuple[Path, list[str]]] = []
    for image in find_images(images):
        label = label_file_for(image, images, labels)
        if label is None:
            summary.unlabelled.append(str(image))
            continue
        try:
            chosen.append((image, parse_label_lines(label, len(names))))
        except TrainingError as error:
            summary.problems.append(str(error))
    make_split_dirs(out)
    for (image, lines), split in zip(chosen, assign_splits(len(chosen), val_fraction)):
        stem = "_".join(image.relative_to(images).with_suffix("").parts)
        write_pair(out, split, stem, image, lines)
        setattr(summary, split, getattr(summary, split) + 1)
        summary.boxes += len(lines)
    write_data_yaml(out, names)
    return summary


# --- train and evaluate ----------------------------------------------------------------------------------------


def _check_inputs(data: Path, model: str) -> None:
    if not data.is_file():
        raise TrainingError(f"--data {data}: no such file (a data.yaml, e.g. from `monitor dataset import`)")
    if not model.endswith(".yaml") and not Path(model).is_file():
        raise TrainingError(f"--model {model}: no such file (nothing is downloaded; give a .pt, or a .yaml architecture)")


def trained_imgsz(model) -> int | None:
    """The image size a checkpoint was trained at (None: unknown)."""
    args = (getattr(model, "ckpt", None) or {}).get("train_args") or {}
    size = args.get("imgsz")
    return int(size) if isinstance(size, (int, float)) else None


def evaluate(model_path: str | Path, data: Path, imgsz: int | None = None, device: str = "auto", batch: int = 16) -> dict:
    """Detection metrics of a model on the dataset's val split."""
    offline_ultralytics()
    _check_inputs(Path(data), str(model_path))
    from ultralytics import YOLO

    model = YOLO(str(model_path))
    imgsz = imgsz or trained_imgsz(model) or DEFAULT_IMGSZ
    with tempfile.TemporaryDirectory(prefix="monitor-val-") as scratch:
        result = model.val(data=str(data), split="val", imgsz=imgsz, batch=batch, device=choose_device(device),
                           workers=0, plots=False, verbose=False, project=scratch, name="val", exist_ok=True)
    box = result.box
    return {"data": str(data), "imgsz": imgsz, "images": _val_images(data), "boxes": int(sum(result.nt_per_class)),
            "map50": round(float(box.map50), 4), "map50_95": round(float(box.map), 4),
            "precision": round(float(box.mp), 4), "recall": round(float(box.mr), 4),
            "class_names": {str(k): v for k, v in model.names.items()}}


def _val_images(data: Path) -> int:
    from ultralytics.data.utils import check_det_dataset

    val = check_det_dataset(str(data))["val"]
    return sum(len(find_images(Path(v))) if Path(v).is_dir() else 1 for v in (val if isinstance(val, list) else [val]))


@dataclass(frozen=True)
class TrainRequest:
    data: Path
    model: str
    out: Path
    epochs: int = 30
    imgsz: int | None = None  # default: the size the starting model was trained at
    batch: int = 16
    device: str = "auto"
    workers: int = 0
    patience: int = 50
    amp: bool = False
    runs: Path = Path("runs")
    extra: dict = field(default_factory=dict)


def train(request: TrainRequest) -> dict:
    """Train from request.model, copy the best weights to request.out, evaluate them, write the metrics JSON."""
    offline_ultralytics()
    _check_inputs(request.data, request.model)
    from ultralytics import YOLO

    device = choose_device(request.device)
    started = time.monotonic()
    model = YOLO(request.model)
    imgsz = train_imgsz(request.imgsz, trained_imgsz(model), request.model)
    model.train(data=str(request.data), epochs=request.epochs, imgsz=imgsz, batch=request.batch, device=device,
                workers=request.workers, patience=request.patience, amp=request.amp, plots=False, verbose=False,
                project=str(request.runs.resolve()), name=request.out.stem, exist_ok=True, **request.extra)
    seconds = time.monotonic() - started
    weights = Path(model.trainer.save_dir) / "weights"
    best = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
    request.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, request.out)
    metrics = {
        "model": str(request.out), "base": request.model, "data": str(request.data),
        "training": {"epochs": request.epochs, "imgsz": imgsz, "batch": request.batch, "device": device,
                     "seconds": round(seconds, 1), "run_dir": str(model.trainer.save_dir), "weights": best.name},
        "detection": evaluate(request.out, request.data, imgsz, request.device, request.batch),
        "software": _software(),
    }
    metrics_path(request.out).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def train_imgsz(asked: int | None, trained: int | None, model: str) -> int:
    """The size to train at: the one asked for, else the starting model's; a warning when they differ, because a
    model fine-tuned at another size than it was trained at can lose much of what it knew."""
    if asked and trained and asked != trained:
        log.warning("train: --imgsz %d differs from the %d that %s was trained at; expect a much lower mAP unless the "
                    "site's camera really needs the other size (and then deploy with models.<name>.imgsz: %d)",
                    asked, trained, model, asked)
    return asked or trained or DEFAULT_IMGSZ


def metrics_path(weights: Path) -> Path:
    """models/site.pt -> models/site.metrics.json (as models/ice-bags.metrics.json)."""
    return weights.with_name(weights.stem + ".metrics.json")


def _software() -> dict:
    import torch
    import ultralytics

    return {"python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__}
