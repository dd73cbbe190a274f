"""Per image, per tagged class: what stage one did with it (the records of the label-quality report, which needs no
ground truth; docs/viewing.md).

For each class of an image: the SAM prompt points it got, the SAM masks that passed the δ filter, its pixels in Y0
and in the refined label (lost = tagged but absent from the refined label); for the image: the pixels whose refined
label differs from Y0. Stored in each shard image group as the table ``class_stats`` (names and row type:
:mod:`pseudolabel.storage.format`; layout: docs/design.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pseudolabel.storage.format import CLASS_STATS_DTYPE


@dataclass(frozen=True)
class ClassStats:
    """Stage one's per-class record of one image (columns in the order of ``class_ids``)."""

    class_ids: tuple[int, ...]
    prompts: tuple[int, ...]            # SAM prompt points the class got (0 with refinement off)
    masks_accepted: tuple[int, ...]     # SAM masks of those prompts that passed the δ filter
    y0_pixels: tuple[int, ...]          # pixels of the class in Y0
    refined_pixels: tuple[int, ...]     # pixels of the class in the refined label
    changed_pixels: int                 # pixels whose refined label differs from Y0

    @classmethod
    def measure(cls, class_ids, y0: np.ndarray, refined: np.ndarray, prompts=None,
                masks_accepted=None) -> "ClassStats":
        """Count the pixels of the label maps; ``prompts`` / ``masks_accepted`` per class come from the refiner
        (``None``: no refinement, zeros)."""
        class_ids = tuple(int(c) for c in class_ids)
        zeros = (0,) * len(class_ids)
        y0_counts = np.bincount(np.asarray(y0, np.uint8).ravel(), minlength=256)
        refined_counts = np.bincount(np.asarray(refined, np.uint8).ravel(), minlength=256)
        return cls(class_ids, tuple(int(p) for p in prompts) if prompts is not None else zeros,
                   tuple(int(a) for a in masks_accepted) if masks_accepted is not None else zeros,
                   tuple(int(y0_counts[c]) for c in class_ids), tuple(int(refined_counts[c]) for c in class_ids),
                   int(np.count_nonzero(np.asarray(y0) != np.asarray(refined))))

    @property
    def lost(self) -> tuple[bool, ...]:
        """Per class: tagged, but absent from the refined label."""
        return tuple(pixels == 0 for pixels in self.refined_pixels)

    def to_rows(self) -> np.ndarray:
        """The ``class_stats`` table: one ``CLASS_STATS_DTYPE`` row per class."""
        return np.array(list(zip(self.class_ids, self.prompts, self.masks_accepted, self.y0_pixels,
                                 self.refined_pixels)), dtype=CLASS_STATS_DTYPE)

    @classmethod
    def from_rows(cls, rows: np.ndarray, changed_pixels: int) -> "ClassStats":
        rows = np.asarray(rows, dtype=CLASS_STATS_DTYPE)
        column = lambda name: tuple(int(v) for v in rows[name])  # noqa: E731
        return cls(column("class_id"), column("prompts"), column("masks_accepted"), column("y0_pixels"),
                   column("refined_pixels"), int(changed_pixels))
