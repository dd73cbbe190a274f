"""A folder of images with a CSV/JSON list of image-level tags and a class list file."""
from __future__ import annotations

import csv
import json
import re
import unicodedata
from pathlib import Path

from pseudolabel.classes import ClassSet
from pseudolabel.datasets.base import Sample, WeakDataset, problem, progress, require_dir
from pseudolabel.image_io import find_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def split_tags(value: str | list) -> list[str]:
    """Class names from a list, or from one string with ``;`` or ``|`` between names."""
    names = re.split(r"[;|]", value) if isinstance(value, str) else [str(name) for name in value]
    return [name.strip() for name in names if name.strip()]


def read_tag_list(path: Path) -> dict[str, list[str]]:
    """``image_id -> class names`` from a CSV (``image_id,classes`` with ``;`` or ``|`` between classes) or a JSON
    file (``{"id": ["cat"]}`` or ``[{"image_id": "id", "classes": ["cat"]}]``), UTF-8 with or without a BOM (as
    spreadsheet programs save it). An id listed twice or an empty id is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"label list '{path}' does not exist; give a CSV (image_id,classes) or JSON file")
    if path.suffix.lower() == ".json":
        rows = _json_rows(path)
    else:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"image_id", "classes"} <= set(reader.fieldnames or ()):
                raise ValueError(f"{path}: the CSV header must be 'image_id,classes' (got {reader.fieldnames})")
            rows = [(row["image_id"] or "", row["classes"] or "") for row in reader]
    tags: dict[str, list[str]] = {}
    for image_id, classes in rows:
        image_id = unicodedata.normalize("NFC", str(image_id).strip())   # ids in NFC; files found in either form
        if not image_id or "\0" in image_id:
            raise ValueError(f"{path}: an entry has an empty or unusable image id {image_id!r} (classes "
                             f"{classes!r}); give every entry the name of its image")
        if image_id in tags:
            raise ValueError(f"{path}: image '{image_id}' is listed twice; merge its classes into one entry")
        tags[image_id] = split_tags(classes)
    if not tags:
        raise ValueError(f"{path}: the label list names no image")
    return tags


class _RepeatedKey(Exception):
    """A JSON object with a key twice (``json`` keeps the last silently)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen = set()
        raise _RepeatedKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return found


def _json_rows(path: Path) -> list[tuple[str, str | list]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except _RepeatedKey as error:
        raise ValueError(f"{path}: image '{error.args[0]}' is listed twice; merge its classes into one entry") from None
    if isinstance(data, dict):
        return list(data.items())
    if isinstance(data, list) and all(isinstance(item, dict) and {"image_id", "classes"} <= item.keys()
                                      for item in data):
        return [(item["image_id"], item["classes"]) for item in data]
    raise ValueError(f'{path}: expected {{"image_id": ["cat", ...]}} '
                     'or a list of {"image_id": ..., "classes": [...]}')


def find_image(images_dir: Path, image_id: str) -> Path | None:
    """``images_dir/image_id`` if it names a file, else the first existing ``image_id`` + a common extension; the id
    in either Unicode normal form."""
    direct = find_file(images_dir, image_id) if Path(image_id).suffix else None
    if direct is not None:
        return direct
    for ext in IMAGE_EXTENSIONS:
        for candidate in (f"{image_id}{ext}", f"{image_id}{ext.upper()}"):
            if (found := find_file(images_dir, candidate)) is not None:
                return found
    return None


class CustomDataset(WeakDataset):
    """Your own tagged images: ``images_dir`` + ``labels`` list + ``classes`` file; optional ``gt_dir`` of PNGs."""

    def __init__(self, images_dir: str | Path, labels: str | Path, classes: str | Path | ClassSet,
                 gt_dir: str | Path | None = None, split: str = "all", name: str = "custom"):
        images_dir = require_dir(Path(images_dir), "image folder", "Pass --images DIR with your photos.")
        if gt_dir is not None:
            gt_dir = require_dir(Path(gt_dir), "GT folder",
                                 "Pass --gt-dir DIR of <image_id>.png index maps, or omit it.")
        class_set = classes if isinstance(classes, ClassSet) else ClassSet.from_file(classes, name)
        labels = Path(labels)
        samples, problems = [], []
        for image_id, names in progress(list(read_tag_list(labels).items()), f"{name} labels"):
            image_path = find_image(images_dir, image_id)
            if image_path is None:
                problems.append(problem(image_id, images_dir / image_id,
                                        f"listed in {labels} but no image file found in {images_dir}"))
                continue
            try:
                class_ids = tuple(sorted({class_set.index(n) for n in names} - {0}))
            except KeyError as error:
                raise ValueError(f"{labels}: image '{image_id}': {error.args[0]}; "
                                 "fix the tag or the class list") from None
            if not class_ids:
                problems.append(problem(image_id, image_path,
                                        f"empty label list in {labels}; an image-level label is required"))
                continue
            gt = find_file(gt_dir, f"{Path(image_id).stem}.png") if gt_dir is not None else None
            samples.append(Sample(image_id, image_path, class_ids, gt))
        super().__init__(name, split, class_set, images_dir, samples, problems)
