"""mIoU and mBIoU from summed counts: one accumulation over the split, not a mean of per-image IoUs
(docs/evaluation.md#what-is-computed).

All functions broadcast over leading axes, so the same code scores the full set ``(C,)`` and bootstrap
resamples ``(B, C)``.
"""
from __future__ import annotations

import warnings

import numpy as np

from pseudolabel.evaluation.counts import CountTable

MEAN_OVER = ("mmseg", "gt-present")  # classes with union > 0 (mmseg IoUMetric) | classes present in GT (CLIP-ES/WeCLIP)


def class_iou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """``inter / union`` per class; NaN where ``union == 0`` (class excluded from the mean)."""
    inter, union = np.asarray(inter, np.float64), np.asarray(union, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), np.nan)


def mean_percent(iou: np.ndarray, include: np.ndarray | None = None) -> np.ndarray | float:
    """NaN-mean over the last axis in percent; ``include`` (bool, same shape) restricts the classes averaged."""
    if include is not None:
        iou = np.where(include, iou, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, which is the intended answer
        return np.nanmean(iou, axis=-1) * 100.0


def mean_iou(inter, union, gt_total=None, mean_over: str = "mmseg"):
    """mIoU in percent from summed ``inter``/``union`` (``gt_total`` is needed for ``mean_over="gt-present"``)."""
    if mean_over not in MEAN_OVER:
        raise ValueError(f"mean_over must be one of {MEAN_OVER} (got {mean_over!r})")
    include = None
    if mean_over == "gt-present":
        if gt_total is None:
            raise ValueError("mean_over='gt-present' needs the GT pixel counts")
        include = np.asarray(gt_total) > 0
    return mean_percent(class_iou(inter, union), include)


def labelled_only_sums(table: CountTable) -> tuple[np.ndarray, np.ndarray]:
    """(inter, union) totals scoring only pixels whose prediction is not the ignore label (WeCLIP ``pseudo_scores``)."""
    tp = table.total("tp")
    return tp, table.total("gt") - table.total("pred_ignored") + table.total("pred") - tp


def coverage(table: CountTable) -> float:
    """Labelled pixels / scored pixels (1.0 for fully labelled predictions; NaN with nothing scored)."""
    scored = table.total("gt").sum()
    return float(1.0 - table.total("pred_ignored").sum() / scored) if scored else float("nan")


def image_miou(table: CountTable, mean_over: str = "mmseg") -> np.ndarray:
    """Per-image mIoU in percent ``(n,)`` (each image scored on its own; e.g. to list the worst images)."""
    return np.asarray(mean_iou(table.tp, table.union, table.gt, mean_over))
