"""A folder of images with a CSV/JSON list of image-level tags and a class list file."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from pseudolabel.classes import ClassSet
from pseudolabel.datasets.base import Sample, WeakDataset, require_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_tag_list(path: Path) -> dict[str, list[str]]:
    """``image_id -> class names`` from a CSV (``image_id,classes`` with ``;`` or ``|`` between classes) or a JSON
    file (``{"id": ["cat"]}`` or ``[{"image_id": "id", "classes": ["cat"]}]``)."""
    if not path.is_file():
        raise FileNotFoundError(f"label list '{path}' does not exist; give a CSV (image_id,classes) or JSON file")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, list):
            data = {str(item["image_id"]): item["classes"] for item in data}
        return {str(k): [str(c) for c in v] for k, v in data.items()}
    tags = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if "image_id" not in row or "classes" not in row:
                raise ValueError(f"{path}: the CSV header must be 'image_id,classes'")
            tags[row["image_id"].strip()] = [c.strip() for c in re.split(r"[;|]", row["classes"] or "") if c.strip()]
    return tags


def find_image(images_dir: Path, image_id: str) -> Path | None:
    """``images_dir/image_id`` if it names a file, else the first existing ``image_id`` + a common extension."""
    direct = images_dir / image_id
    if direct.suffix and direct.is_file():
        return direct
    for ext in IMAGE_EXTENSIONS:
        for candidate in (images_dir / f"{image_id}{ext}", images_dir / f"{image_id}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


class CustomDataset(WeakDataset):
    """Your own tagged images: ``images_dir`` + ``labels`` list + ``classes`` file; optional ``gt_dir`` of PNGs."""

    def __init__(self, images_dir: str | Path, labels: str | Path, classes: str | Path | ClassSet,
                 gt_dir: str | Path | None = None, split: str = "all", name: str = "custom"):
        images_dir = require_dir(Path(images_dir), "image folder", "Pass --images DIR with your photos.")
        class_set = classes if isinstance(classes, ClassSet) else ClassSet.from_file(classes, name)
        labels = Path(labels)
        samples, problems = [], []
        for image_id, names in read_tag_list(labels).items():
            image_path = find_image(images_dir, image_id)
            if image_path is None:
                problems.append({"image_id": image_id, "path": str(images_dir / image_id),
                                 "reason": f"listed in {labels.name} but no image file found"})
                continue
            try:
                class_ids = tuple(sorted({class_set.index(n) for n in names} - {0}))
            except KeyError as error:
                raise ValueError(f"{labels}: image '{image_id}': {error.args[0]}; fix the tag or the class list") from None
            if not class_ids:
                problems.append({"image_id": image_id, "path": str(image_path),
                                 "reason": f"empty label list in {labels.name}; an image-level label is required"})
                continue
            gt = Path(gt_dir) / f"{Path(image_id).stem}.png" if gt_dir else None
            samples.append(Sample(image_id, image_path, class_ids, gt if gt is not None and gt.is_file() else None))
        super().__init__(name, split, class_set, images_dir, samples, problems)
