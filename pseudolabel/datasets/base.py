"""The dataset interface shared by VOC, COCO and custom folders: samples with image-level labels only."""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pseudolabel.classes import DATA_DIR, ClassSet
from pseudolabel.image_io import read_label_png


@dataclass(frozen=True)
class Sample:
    """One training image with its image-level (foreground) class indices."""

    image_id: str
    image_path: Path
    class_ids: tuple[int, ...]
    gt_path: Path | None = None


def data_root() -> Path:
    """Where dataset roots live by default: ``$CEP_DATA_ROOT``, else the checkout's ``data/`` (an installed package:
    ``./data``)."""
    return Path(os.environ.get("CEP_DATA_ROOT", DATA_DIR))


def problem(image_id: str, path: Path, reason: str) -> dict:
    """One entry of ``dataset.problems``: an image left out of the dataset, and why."""
    return {"image_id": image_id, "path": str(path), "reason": reason}


def progress(items, desc: str):
    """``tqdm`` over a long construction loop (VOC train_aug, COCO); silent for small lists."""
    return tqdm(items, desc=desc, unit="img", leave=False, disable=len(items) < 2000)


def require_dir(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a directory, else raise a FileNotFoundError naming it and the fix."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found at '{path}'. {fix}")
    return path


class WeakDataset(Sequence[Sample]):
    """A list of :class:`Sample` (images usable for training) plus ``problems``: images left out, with reasons.

    Policy: structural problems (missing root or split file, unknown class name) raise at construction; an image
    without any foreground class or whose file is missing is left out, recorded in ``problems`` as
    ``{"image_id", "path", "reason"}`` and counted in one warning.
    """

    def __init__(self, name: str, split: str, class_set: ClassSet, root: Path,
                 samples: list[Sample], problems: list[dict]):
        self.name, self.split, self.class_set, self.root = name, split, class_set, root
        self.samples = samples
        self.problems = problems
        self._index = {sample.image_id: i for i, sample in enumerate(samples)}
        if problems:
            warnings.warn(
                f"{name}:{split}: {len(problems)} image(s) left out (e.g. {problems[0]['image_id']}: "
                f"{problems[0]['reason']}); they are listed in dataset.problems and in the run's failure list",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]

    def ids(self) -> list[str]:
        """Image ids in dataset order."""
        return [sample.image_id for sample in self.samples]

    def by_id(self, image_id: str) -> Sample:
        """The sample with this image id (KeyError naming the split when absent)."""
        try:
            return self.samples[self._index[image_id]]
        except KeyError:
            raise KeyError(f"image id '{image_id}' is not in {self.name}:{self.split}") from None

    def read_gt(self, image_id: str) -> np.ndarray | None:
        """Ground-truth label map (evaluation only), or None when the dataset has none for this image."""
        sample = self.by_id(image_id)
        return None if sample.gt_path is None else read_label_png(sample.gt_path)

    def describe(self) -> str:
        """One line: name, split, size, classes and root."""
        return f"{self.name}:{self.split} ({len(self)} images, {self.class_set.num_classes} classes, root {self.root})"
