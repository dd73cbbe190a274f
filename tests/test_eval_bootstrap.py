"""Bootstrap over images: known-distribution CI, scipy.stats.bootstrap as an exact oracle, paired test calibration."""
import numpy as np
import pytest
from scipy import stats

from pseudolabel.evaluation.bootstrap import (
    bootstrap_statistics,
    chunk_size,
    paired_test,
    percentile_interval,
    resample_weights,
)
from pseudolabel.evaluation.metrics import mean_iou


def ratio(sums):
    return (sums[:, 0] / sums[:, 1])[:, None]


def test_weights_are_multinomial_image_counts():
    weights = resample_weights(np.random.default_rng(0), 7, 5)
    assert weights.shape == (5, 7) and (weights.sum(axis=1) == 7).all() and (weights >= 0).all()


def test_ci_of_a_mean_matches_normal_theory():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, 400)
    counts = np.stack([x, np.ones_like(x)], axis=1)  # statistic sum(x)/n = the mean
    low, high = percentile_interval(bootstrap_statistics(counts, ratio, 4000, seed=2)[:, 0])
    half = 1.96 * x.std(ddof=0) / np.sqrt(len(x))
    assert low < x.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_percentile_interval_equals_scipy_bootstrap():
    rng = np.random.default_rng(3)
    n, classes, resamples = 60, 4, 2000
    tp = rng.integers(0, 50, (n, classes))
    union = tp + rng.integers(0, 50, (n, classes))
    counts = np.hstack([tp, union])

    def miou(sums):
        return mean_iou(sums[:, :classes], sums[:, classes:])[:, None]

    ours = percentile_interval(bootstrap_statistics(counts, miou, resamples, seed=4)[:, 0])

    def miou_of_drawn_images(indices, axis=-1):  # scipy resamples the image indices; sum the drawn images' counts
        sums = counts[indices.astype(int)].sum(axis=-2)
        return mean_iou(sums[..., :classes], sums[..., classes:])

    theirs = stats.bootstrap((np.arange(n),), miou_of_drawn_images, n_resamples=resamples, method="percentile",
                             batch=chunk_size(n, resamples), rng=np.random.default_rng(4), vectorized=True)
    np.testing.assert_allclose(ours, (theirs.confidence_interval.low, theirs.confidence_interval.high), rtol=1e-12)


def paired_counts(rng, n, gap):
    """Per-image [tp_a, union, tp_b, union] with system A better by ``gap`` on average."""
    union = rng.integers(50, 150, n).astype(float)
    quality = rng.uniform(0.4, 0.8, n)
    tp_a = np.clip(quality + gap + rng.normal(0, 0.05, n), 0, 1) * union
    tp_b = np.clip(quality + rng.normal(0, 0.05, n), 0, 1) * union
    return np.stack([tp_a, union, tp_b, union], axis=1)


def diff_stat(sums):
    return (sums[:, 0] / sums[:, 1] - sums[:, 2] / sums[:, 3])[:, None]


def test_clearly_better_system_gets_small_p_values():
    counts = paired_counts(np.random.default_rng(5), 80, gap=0.05)
    diff = diff_stat(counts.sum(axis=0)[None])[0, 0]
    test = paired_test(diff, bootstrap_statistics(counts, diff_stat, 2000, seed=6)[:, 0])
    assert test.diff > 0 and test.ci[0] > 0
    assert test.p_value < 0.01 and test.p_value_a_better < 0.01


def test_p_value_is_roughly_uniform_under_the_null():
    rng = np.random.default_rng(7)
    p_values = []
    for repetition in range(100):
        counts = paired_counts(rng, 40, gap=0.0)
        diff = diff_stat(counts.sum(axis=0)[None])[0, 0]
        p_values.append(paired_test(diff, bootstrap_statistics(counts, diff_stat, 200, seed=repetition)[:, 0]).p_value)
    p_values = np.array(p_values)
    assert 0.0 <= np.mean(p_values < 0.05) <= 0.15
    assert 0.3 < np.mean(p_values) < 0.7
