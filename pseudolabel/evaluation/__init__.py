"""Evaluation of label maps: mIoU, mBIoU, bootstrap CIs and paired tests (definitions: docs/evaluation.md).

Typical use::

    from pseudolabel.evaluation import EvaluationConfig, evaluate, image_miou
    result = evaluate("voc:train", "outputs/voc_train", config=EvaluationConfig(bootstrap=1000))
    print(result.systems[0].miou, result.to_json()["ci"])
    worst = image_miou(result.systems[0].counts)   # per-image mIoU, e.g. for a viewer's --worst
"""
from pseudolabel.evaluation.boundary import label_band, mask_band
from pseudolabel.evaluation.bootstrap import PairedTest, bootstrap_statistics, paired_test, percentile_interval
from pseudolabel.evaluation.counts import BoundarySpec, CountTable, ImageCounts, count_image
from pseudolabel.evaluation.metrics import class_iou, coverage, image_miou, labelled_only_sums, mean_iou
from pseudolabel.evaluation.pipeline import (
    EvaluationConfig,
    EvaluationError,
    EvaluationResult,
    SystemScores,
    evaluate,
)
from pseudolabel.evaluation.sources import LabelSource, LabelSourceError, PngFolderSource, open_source

__all__ = [
    "BoundarySpec", "CountTable", "EvaluationConfig", "EvaluationError", "EvaluationResult", "ImageCounts",
    "LabelSource", "LabelSourceError", "PairedTest", "PngFolderSource", "SystemScores", "bootstrap_statistics",
    "class_iou", "count_image", "coverage", "evaluate", "image_miou", "label_band", "labelled_only_sums",
    "mask_band", "mean_iou", "open_source", "paired_test", "percentile_interval",
]
