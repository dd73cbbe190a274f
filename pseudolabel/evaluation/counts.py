"""Per-image count vectors from which every dataset-level statistic is a sum (docs/evaluation.md#what-is-computed).

Per image and class c, over the *scored* pixels (GT < C, so GT 255 is dropped):

- ``tp``: |GT = c ∧ P = c|, ``gt``: |GT = c|, ``pred``: |P = c| (a prediction outside [0, C) on a scored pixel adds
  only to ``gt`` of its GT class, exactly as mmseg's ``IoUMetric`` histogram does);
- ``pred_ignored``: |GT = c ∧ P = ignore| (for the labelled-only mIoU and the coverage of pseudo labels with 255);
- ``band_inter`` / ``band_union``: |Gb_c ∧ Pb_c| and |Gb_c ∨ Pb_c| of the boundary bands (GT-ignore pixels dropped).

Only these (C,) vectors are kept per image, never C x C confusion matrices.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from pseudolabel.classes import IGNORE_INDEX
from pseudolabel.evaluation.boundary import label_band


@dataclass(frozen=True)
class BoundarySpec:
    """How boundary bands are cut: square erosion ``kernel`` x ``kernel``; ``border`` "default" or "pad"."""

    kernel: int = 23
    border: str = "default"


@dataclass
class Counts:
    """The counts of the module docstring, one array each: ``(C,)`` for an image, ``(n, C)`` for a split."""

    tp: np.ndarray
    gt: np.ndarray
    pred: np.ndarray
    pred_ignored: np.ndarray
    band_inter: np.ndarray
    band_union: np.ndarray

    @property
    def union(self) -> np.ndarray:
        return self.gt + self.pred - self.tp


COUNT_NAMES = tuple(f.name for f in fields(Counts))


@dataclass
class ImageCounts(Counts):
    """Count vectors ``(C,) int64`` of one image."""


def _histogram(values: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(values, minlength=num_classes)[:num_classes].astype(np.int64)


def count_image(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    boundary: BoundarySpec | None = BoundarySpec(),
) -> ImageCounts:
    """Count vectors of one (GT, prediction) pair of uint8 label maps of equal shape.

    GT values >= ``num_classes`` (255 included) are not scored. With ``boundary=None`` the band counts are zero.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"GT shape {gt.shape} != prediction shape {pred.shape}")
    scored = gt < num_classes
    gt_s, pred_s = gt[scored], pred[scored]
    pred_in_range = pred_s < num_classes
    zeros = np.zeros(num_classes, np.int64)
    if boundary is None:
        band_inter, band_union = zeros, zeros.copy()
    else:
        gt_band = label_band(gt, boundary.kernel, boundary.border)[scored]
        pred_band = label_band(pred, boundary.kernel, boundary.border)[scored] & pred_in_range
        band_inter = _histogram(gt_s[gt_band & pred_band & (gt_s == pred_s)], num_classes)
        band_union = (
            _histogram(gt_s[gt_band], num_classes) + _histogram(pred_s[pred_band], num_classes) - band_inter
        )
    return ImageCounts(
        tp=_histogram(gt_s[gt_s == pred_s], num_classes),
        gt=_histogram(gt_s, num_classes),
        pred=_histogram(pred_s[pred_in_range], num_classes),
        pred_ignored=_histogram(gt_s[pred_s == ignore_index], num_classes),
        band_inter=band_inter,
        band_union=band_union,
    )


@dataclass
class CountTable(Counts):
    """Per-image counts of a split: each count ``(n, C) int64``, rows in the order of ``image_ids``."""

    image_ids: list[str] = field(kw_only=True)

    @classmethod
    def stack(cls, image_ids: list[str], counts: list[ImageCounts], num_classes: int) -> "CountTable":
        """Stack per-image counts (an empty list gives ``(0, C)`` arrays)."""
        arrays = {
            name: np.stack([getattr(c, name) for c in counts]) if counts else np.zeros((0, num_classes), np.int64)
            for name in COUNT_NAMES
        }
        return cls(image_ids=list(image_ids), **arrays)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def subset(self, image_ids: list[str]) -> "CountTable":
        """The rows of ``image_ids`` (in that order)."""
        row = {image_id: i for i, image_id in enumerate(self.image_ids)}
        rows = np.array([row[i] for i in image_ids], np.int64)
        return CountTable(image_ids=list(image_ids), **{name: getattr(self, name)[rows] for name in COUNT_NAMES})

    @property
    def num_classes(self) -> int:
        return self.tp.shape[1]

    def total(self, name: str) -> np.ndarray:
        """Dataset-level sum ``(C,)`` of one count (a field name or ``"union"``)."""
        return getattr(self, name).sum(axis=0)
