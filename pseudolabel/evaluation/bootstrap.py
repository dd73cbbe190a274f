"""Bootstrap confidence intervals and the paired test over images (docs/evaluation.md#what-is-computed).

Dataset-level statistics are sums of per-image count vectors, so a resample is a vector of image counts ``w``
(n entries summing to n) and its sums are ``w @ counts``. Resamples are drawn in chunks of
``rng.integers(0, n, (chunk, n))`` image indices (the draw ``scipy.stats.bootstrap`` makes, so with the same
generator and ``batch=chunk`` the intervals agree exactly), turned into count rows with one ``bincount``, and
multiplied with all count columns at once; memory stays bounded by the chunk size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

# Statistic of summed counts: (B, K) column sums -> (B, S) statistics (vectorised over resamples).
Statistic = Callable[[np.ndarray], np.ndarray]
CHUNK_BYTES = 64 * 2**20  # memory for one chunk of index draws / weight rows


def chunk_size(num_images: int, num_resamples: int) -> int:
    """Resamples per chunk so that one ``(chunk, n)`` float64 weight block stays within ``CHUNK_BYTES``."""
    return max(1, min(num_resamples, CHUNK_BYTES // (8 * max(num_images, 1))))


def resample_weights(rng: np.random.Generator, num_images: int, chunk: int) -> np.ndarray:
    """``(chunk, n)`` float64 multinomial image counts from ``rng.integers(0, n, (chunk, n))`` index draws."""
    indices = rng.integers(0, num_images, (chunk, num_images))
    indices += np.arange(chunk)[:, None] * num_images  # row offsets so one bincount counts every row
    return np.bincount(indices.ravel(), minlength=chunk * num_images).reshape(chunk, num_images).astype(np.float64)


def bootstrap_statistics(
    counts: np.ndarray,
    statistic: Statistic,
    num_resamples: int = 10_000,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Statistic of ``num_resamples`` image resamples: ``counts (n, K)`` per-image count columns -> ``(B, S)``."""
    num_images = counts.shape[0]
    if num_images == 0:
        raise ValueError("cannot bootstrap over zero images")
    columns = np.asarray(counts, np.float64)
    rng = np.random.default_rng(seed)
    chunk = chunk_size(num_images, num_resamples)
    out = []
    with tqdm(total=num_resamples, desc="bootstrap", unit="resample", disable=not progress) as bar:
        for start in range(0, num_resamples, chunk):
            size = min(chunk, num_resamples - start)
            out.append(statistic(resample_weights(rng, num_images, size) @ columns))
            bar.update(size)
    return np.concatenate(out, axis=0)


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of finite bootstrap samples (linear interpolation, as ``scipy.stats.bootstrap``)."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


@dataclass
class PairedTest:
    """Paired bootstrap comparison of system A against B on the same images and the same resamples."""

    diff: float                         # Δ = stat_A − stat_B on the full set
    ci: tuple[float, float]             # percentile CI of Δ*
    p_value: float                      # two-sided shifted null: (1 + #{|Δ* − Δ| ≥ |Δ|}) / (B + 1)
    p_value_a_better: float             # one-sided: (1 + #{Δ* ≤ 0}) / (B + 1)

    def to_json(self) -> dict:
        return {"diff": self.diff, "ci": list(self.ci), "p_value": self.p_value,
                "p_value_a_better": self.p_value_a_better}


def paired_test(diff: float, diff_samples: np.ndarray, confidence: float = 0.95) -> PairedTest:
    """Paired test from the full-set Δ and its bootstrap replicates Δ* (docs/evaluation.md#what-is-computed)."""
    diff_samples = diff_samples[np.isfinite(diff_samples)]
    b = diff_samples.size
    return PairedTest(
        diff=float(diff),
        ci=percentile_interval(diff_samples, confidence),
        p_value=float((1 + np.count_nonzero(np.abs(diff_samples - diff) >= abs(diff))) / (b + 1)),
        p_value_a_better=float((1 + np.count_nonzero(diff_samples <= 0)) / (b + 1)),
    )
