"""Counts and mIoU/mBIoU against mmseg's IoUMetric and hand-checkable cases."""
import numpy as np
import pytest
import torch
from mmseg.evaluation import IoUMetric

from pseudolabel.evaluation.boundary import mask_band
from pseudolabel.evaluation.counts import BoundarySpec, CountTable, count_image
from pseudolabel.evaluation.metrics import class_iou, coverage, image_miou, labelled_only_sums, mean_iou

C = 6  # classes 0..5; GT never uses 5 (absent class), predictions use 7 (out of range) and 255


def random_pairs(seed, n=5, shape=(24, 32)):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        gt = rng.choice([0, 1, 2, 3, 4, 255], size=shape, p=[0.4, 0.15, 0.15, 0.1, 0.1, 0.1]).astype(np.uint8)
        pred = np.where(rng.random(shape) < 0.6, gt, rng.choice([0, 1, 2, 3, 5, 7, 255], size=shape)).astype(np.uint8)
        pairs.append((gt, pred))
    return pairs


def table_of(pairs, boundary=None):
    counts = [count_image(gt, pred, C, 255, boundary) for gt, pred in pairs]
    return CountTable.stack([str(i) for i in range(len(pairs))], counts, C)


def mmseg_per_class_iou(pairs):
    metric = IoUMetric(ignore_index=255)
    metric.dataset_meta = {"classes": [f"c{i}" for i in range(C)]}
    samples = [{"pred_sem_seg": {"data": torch.from_numpy(pred)[None]},
                "gt_sem_seg": {"data": torch.from_numpy(gt)[None]}} for gt, pred in pairs]
    metric.process({}, samples)
    summary = metric.compute_metrics(metric.results)
    inter, union, pred_area, label_area = (sum(r[k] for r in metric.results) for k in range(4))
    per_class = IoUMetric.total_area_to_metrics(inter, union, pred_area, label_area, ["mIoU"])["IoU"]
    return np.asarray(per_class, np.float64), summary["mIoU"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_equals_mmseg_iou_metric(seed):
    pairs = random_pairs(seed)
    table = table_of(pairs)
    ours = class_iou(table.total("tp"), table.total("union"))
    theirs, their_miou = mmseg_per_class_iou(pairs)
    np.testing.assert_allclose(ours, theirs, atol=1e-6, equal_nan=True)
    assert ours[5] == 0.0  # predicted but absent from GT: IoU 0, kept in the mean
    assert round(float(mean_iou(table.total("tp"), table.total("union"))), 2) == pytest.approx(their_miou, abs=1e-9)


def test_class_absent_everywhere_is_excluded():
    gt = np.zeros((8, 8), np.uint8)
    gt[:4] = 1
    table = table_of([(gt, gt.copy())])
    iou = class_iou(table.total("tp"), table.total("union"))
    assert np.isnan(iou[2:]).all() and mean_iou(table.total("tp"), table.total("union")) == 100.0


def test_out_of_range_prediction_counts_only_as_gt():
    gt = np.array([[0, 1, 1, 255]], np.uint8)
    pred = np.array([[7, 1, 255, 0]], np.uint8)
    counts = count_image(gt, pred, C, 255, None)
    assert counts.gt.tolist()[:2] == [1, 2] and counts.pred.tolist()[:2] == [0, 1] and counts.tp.tolist()[:2] == [0, 1]
    assert counts.pred_ignored.tolist()[:2] == [0, 1]  # the GT pixel of class 1 predicted as 255


def test_labelled_only_equals_mmseg_with_ignored_predictions_moved_to_gt_ignore():
    pairs = random_pairs(3)
    table = table_of(pairs)
    moved = [(np.where(pred == 255, 255, gt).astype(np.uint8), pred) for gt, pred in pairs]
    theirs, _ = mmseg_per_class_iou(moved)
    np.testing.assert_allclose(class_iou(*labelled_only_sums(table)), theirs, atol=1e-6, equal_nan=True)
    scored = sum(int((gt < C).sum()) for gt, _ in pairs)
    labelled = sum(int(((gt < C) & (pred != 255)).sum()) for gt, pred in pairs)
    assert coverage(table) == pytest.approx(labelled / scored)


def test_gt_present_mean_drops_predicted_only_classes():
    table = table_of(random_pairs(4))
    iou = class_iou(table.total("tp"), table.total("union"))
    expected = np.nanmean(iou[:5]) * 100  # class 5 never in GT
    assert mean_iou(table.total("tp"), table.total("union"), table.total("gt"), "gt-present") == pytest.approx(expected)


def test_band_counts_equal_per_class_reference():
    pairs = random_pairs(5, n=3, shape=(40, 36))
    spec = BoundarySpec(kernel=5)
    table = table_of(pairs, spec)
    inter, union = np.zeros(C), np.zeros(C)
    for gt, pred in pairs:
        valid = gt != 255
        for c in range(C):
            gb, pb = mask_band(gt == c, 5) & valid, mask_band(pred == c, 5) & valid
            inter[c] += (gb & pb).sum()
            union[c] += (gb | pb).sum()
    np.testing.assert_array_equal(table.total("band_inter"), inter)
    np.testing.assert_array_equal(table.total("band_union"), union)


def test_identical_prediction_gives_perfect_mbiou_and_kernel_one_gives_nan():
    gt, _ = random_pairs(6, n=1)[0]
    perfect = table_of([(gt, gt.copy())], BoundarySpec(23))
    assert mean_iou(perfect.total("band_inter"), perfect.total("band_union")) == 100.0
    empty = table_of([(gt, gt.copy())], BoundarySpec(1))
    assert empty.total("band_union").sum() == 0
    assert np.isnan(mean_iou(empty.total("band_inter"), empty.total("band_union")))


def test_image_miou_scores_each_image_alone():
    pairs = random_pairs(7, n=3)
    table = table_of(pairs)
    for row, pair in zip(image_miou(table), pairs):
        single = table_of([pair])
        assert row == pytest.approx(mean_iou(single.total("tp"), single.total("union")))
