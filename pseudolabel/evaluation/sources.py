"""Where label maps come from: a folder of index PNGs, a dataset's GT, or stage-one shards.

``open_source(spec)`` detects the kind: a directory containing ``*.h5`` -> shards; ``name:split`` (e.g. ``voc:val``)
-> dataset GT through ``pseudolabel.datasets.build_dataset``; any other directory -> a folder of ``<id>.png`` index
PNGs (stage two's palette PNGs included). Every source is picklable, so worker processes can read from it.

``random_weights`` says whether a source was made with random model weights: shards record it (``random_weights``
attribute), and so does the ``export.json`` beside a folder written by ``tools/export_labels.py``.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from pseudolabel.image_io import ImageReadError, find_file, read_label_png
from pseudolabel.storage.format import LABEL_KINDS, REFINED

DATASET_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):(?P<split>[A-Za-z0-9_-]+)$")


class LabelSourceError(ValueError):
    """A label source cannot be opened or read; the message names the file and the fix."""


class LabelSource(Protocol):
    """Label maps by image id."""

    description: str                      # what the user passed, for tables and JSON
    num_classes: int | None               # None when the source does not know its class set
    class_names: tuple[str, ...] | None
    split: str | None                     # e.g. "voc:train" when known
    random_weights: bool                  # made with random model weights (its scores say nothing about the method)

    def ids(self) -> list[str]: ...
    def read(self, image_id: str) -> np.ndarray: ...      # (H, W) uint8
    def location(self, image_id: str) -> str: ...        # file (and record) for error messages


@dataclass
class PngFolderSource:
    """``<root>/<image_id>.png`` index PNGs (ids may contain '/' for nested folders)."""

    root: Path
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    split: str | None = None
    description: str = field(init=False)
    random_weights: bool = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.description = str(self.root)
        self.random_weights = exported_with_random_weights(self.root)

    def ids(self) -> list[str]:
        """The file names without ``.png``, in Unicode NFC (stage one's ids are; files are found in either form)."""
        return sorted(unicodedata.normalize("NFC", p.relative_to(self.root).with_suffix("").as_posix())
                      for p in self.root.rglob("*.png"))

    def location(self, image_id: str) -> str:
        return str(find_file(self.root, f"{image_id}.png") or self.root / f"{image_id}.png")

    def read(self, image_id: str) -> np.ndarray:
        path = find_file(self.root, f"{image_id}.png")
        if path is None:
            raise LabelSourceError(f"image '{image_id}': no label file {self.root / f'{image_id}.png'}")
        try:
            return read_label_png(path)
        except ImageReadError as error:
            raise LabelSourceError(str(error)) from None


@dataclass
class DatasetSource:
    """GT label maps of a dataset split (``build_dataset(name, root, split).read_gt``)."""

    name: str
    split_name: str
    data_root: str | None = None
    description: str = field(init=False)
    split: str = field(init=False)
    num_classes: int = field(init=False)
    class_names: tuple[str, ...] = field(init=False)
    random_weights: bool = field(default=False, init=False)   # a dataset's GT is made by people

    def __post_init__(self) -> None:
        from pseudolabel.datasets import build_dataset  # imported on use: only dataset specs need it

        self.dataset = build_dataset(self.name, self.data_root, self.split_name)
        self.description = self.split = f"{self.name}:{self.split_name}"
        self.num_classes = self.dataset.class_set.num_classes
        self.class_names = tuple(self.dataset.class_set.classes)

    def ids(self) -> list[str]:
        return list(self.dataset.ids())

    def location(self, image_id: str) -> str:
        return f"{self.dataset.by_id(image_id).gt_path} ({self.description})"

    def read(self, image_id: str) -> np.ndarray:
        labels = self.dataset.read_gt(image_id)
        if labels is None:
            raise LabelSourceError(f"image '{image_id}': dataset {self.description} has no GT label map for it")
        return labels


@dataclass
class ShardSource:
    """Stage-one shards (``open_shards``); ``kind`` picks the ``refined`` labels or the initial ``Y0``."""

    directory: Path
    kind: str = REFINED
    description: str = field(init=False)
    split: str | None = field(init=False)
    num_classes: int | None = field(init=False)
    class_names: tuple[str, ...] | None = field(init=False)
    random_weights: bool = field(init=False)

    def __post_init__(self) -> None:
        from pseudolabel.storage.shards import open_shards  # imported on use: only shard directories need it

        if self.kind not in LABEL_KINDS:
            raise LabelSourceError(f"--pred-kind must be one of {LABEL_KINDS} (got {self.kind!r})")
        self.directory = Path(self.directory)
        self.shards = open_shards(self.directory)
        attrs = self.shards.attrs
        class_set = attrs.get("class_set")
        self.num_classes = class_set.num_classes if class_set is not None else None
        self.class_names = tuple(class_set.classes) if class_set is not None else None
        self.split = f"{attrs['dataset']}:{attrs['split']}" if attrs.get("dataset") and attrs.get("split") else None
        self.description = f"{self.directory} ({self.kind})"
        self.random_weights = bool(attrs.get("random_weights", False))

    def ids(self) -> list[str]:
        return list(self.shards.keys())

    def location(self, image_id: str) -> str:
        return f"{self.directory} (shard record '{image_id}', {self.kind})"

    def read(self, image_id: str) -> np.ndarray:
        return getattr(self.shards[image_id], self.kind)


def exported_with_random_weights(folder: Path) -> bool:
    """Whether ``folder`` holds labels exported (``tools/export_labels.py``) from shards made with random weights:
    its ``export.json`` (flat layout) or its parent's (VOC layout, ``<out>/SegmentationClassPseudo``) says so."""
    from pseudolabel.storage.export import RECORD, RECORD_FORMAT, VOC_LABEL_DIR  # imported on use: PNG folders only

    for record, layout in ((folder / RECORD, "flat"), (folder.parent / RECORD, "voc")):
        if layout == "voc" and folder.name != VOC_LABEL_DIR:
            continue
        try:
            exported = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if exported.get("format") == RECORD_FORMAT and exported.get("layout") == layout:
            return bool(exported.get("random_weights", False))
    return False


def _is_shard_dir(path: Path) -> bool:
    return path.is_dir() and next(path.glob("*.h5"), None) is not None


def open_source(
    spec: str | Path | LabelSource, kind: str = REFINED, data_root: str | Path | None = None
) -> LabelSource:
    """Open a label source from a CLI string (see module docstring); a ``LabelSource`` passes through."""
    if not isinstance(spec, (str, Path)):
        return spec
    path = Path(spec)
    if _is_shard_dir(path):
        return ShardSource(path, kind)
    match = DATASET_SPEC.match(str(spec))
    if match and not path.exists():
        return DatasetSource(match["name"], match["split"], None if data_root is None else str(data_root))
    if path.is_dir():
        return PngFolderSource(path)
    raise LabelSourceError(
        f"'{spec}' is neither a directory of <id>.png label maps, a shard directory (*.h5) nor a dataset "
        "spec like 'voc:val', 'voc:train' or 'coco:val'"
    )
