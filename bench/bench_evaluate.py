#!/usr/bin/env python
"""Benchmark of the evaluation tool; one command, prints a table.

1. VOC-val scale: 1,449 synthetic 500x375 GT/prediction PNG pairs (elliptic blobs of 21 classes, predictions with
   shifted boundaries and spurious blobs) written to a temp dir; full pipeline (decode + counts + bands, then
   10,000 bootstrap resamples), plus a serial decode/count split.
2. COCO-val scale bootstrap: 40,137 x 81 synthetic count vectors, 10,000 resamples, in a fresh process (peak RSS).

    .venv/bin/python bench/bench_evaluate.py [--images 1449] [--workers 2] [--resamples 10000]
"""
from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pseudolabel.evaluation import CountTable, EvaluationConfig, count_image, evaluate  # noqa: E402
from pseudolabel.evaluation.pipeline import bootstrap_means  # noqa: E402
from pseudolabel.image_io import read_label_png  # noqa: E402


def synthetic_pair(rng: np.random.Generator, height=375, width=500, classes=21) -> tuple[np.ndarray, np.ndarray]:
    """GT with 1-4 elliptic objects (thin 255 outlines, as VOC has) and a prediction that gets them roughly right."""
    gt = np.zeros((height, width), np.uint8)
    pred = gt.copy()
    for _ in range(rng.integers(1, 5)):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(20, 160)), int(rng.integers(20, 120)))
        angle, label = float(rng.uniform(0, 180)), int(rng.integers(1, classes))
        cv2.ellipse(gt, centre, axes, angle, 0, 360, label, -1)
        cv2.ellipse(gt, centre, axes, angle, 0, 360, 255, 3)
        wrong = label if rng.random() < 0.85 else int(rng.integers(1, classes))
        shifted = (centre[0] + int(rng.integers(-12, 13)), centre[1] + int(rng.integers(-12, 13)))
        scale = rng.uniform(0.85, 1.15)
        cv2.ellipse(pred, shifted, (int(axes[0] * scale), int(axes[1] * scale)), angle, 0, 360, wrong, -1)
    if rng.random() < 0.3:  # a spurious blob
        cv2.circle(pred, (int(rng.integers(0, width)), int(rng.integers(0, height))), int(rng.integers(10, 40)),
                   int(rng.integers(1, classes)), -1)
    return gt, pred


def write_pairs(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for folder in ("gt", "pred"):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        gt, pred = synthetic_pair(rng)
        Image.fromarray(gt, mode="L").save(root / "gt" / f"{index:06d}.png")
        Image.fromarray(pred, mode="L").save(root / "pred" / f"{index:06d}.png")


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def voc_scale(images: int, workers: int, resamples: int) -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows.append((f"write {images} synthetic pairs (setup, not part of the tool)",
                     f"{timed(write_pairs, root, images)[0]:.1f} s"))
        config = EvaluationConfig(num_classes=21, workers=workers, bootstrap=resamples)
        total, result = timed(evaluate, root / "gt", root / "pred", config=config, progress=False)
        boot, _ = timed(bootstrap_means, [result.systems[0].counts], config)
        rows.append((f"full pipeline, {workers} workers, B={resamples}", f"{total:.1f} s"))
        rows.append(("  of which bootstrap (mIoU + mBIoU CIs)", f"{boot:.1f} s"))
        sample = min(images, 200)
        ids = [f"{i:06d}" for i in range(sample)]
        decode, maps = timed(lambda: [(read_label_png(root / "gt" / f"{i}.png"),
                                       read_label_png(root / "pred" / f"{i}.png")) for i in ids])
        count, _ = timed(lambda: [count_image(gt, pred, 21) for gt, pred in maps])
        bands_off, _ = timed(lambda: [count_image(gt, pred, 21, boundary=None) for gt, pred in maps])
        rows.append(("serial decode of a pair (PIL)", f"{1000 * decode / sample:.1f} ms/img"))
        rows.append(("serial counts incl. bands (k=23)", f"{1000 * count / sample:.1f} ms/img"))
        rows.append(("  of which confusion counts only", f"{1000 * bands_off / sample:.1f} ms/img"))
        rows.append(("result", f"mIoU {result.systems[0].miou:.2f} {_ci(result.systems[0].ci['mIoU'])}, "
                               f"mBIoU {result.systems[0].mbiou:.2f} {_ci(result.systems[0].ci['mBIoU'])}"))
    return rows


def _ci(ci):
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def coco_scale_bootstrap(resamples: int) -> dict:
    """Runs in a fresh (spawned) process so ru_maxrss is this part's own peak."""
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n, classes = 40_137, 81
    rng = np.random.default_rng(1)
    present = rng.random((n, classes)) < 0.04
    present[:, 0] = True
    gt = rng.integers(100, 50_000, (n, classes)) * present
    tp = (gt * rng.uniform(0.3, 1.0, (n, classes))).astype(np.int64)
    pred = tp + rng.integers(0, 5_000, (n, classes)) * present
    band = gt // 10
    table = CountTable(tp, gt, pred, np.zeros_like(tp), band // 2, band, image_ids=[str(i) for i in range(n)])
    rss_counts = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, samples = timed(bootstrap_means, [table], EvaluationConfig(bootstrap=resamples))
    return {"seconds": seconds, "rss_start_mb": rss_start / 1024, "rss_counts_mb": rss_counts / 1024,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "shape": samples.shape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1449)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--skip-coco", action="store_true")
    args = parser.parse_args()
    rows = voc_scale(args.images, args.workers, args.resamples)
    if not args.skip_coco:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            coco = pool.submit(coco_scale_bootstrap, args.resamples).result()
        rows.append((f"COCO-scale bootstrap 40137 x 81, B={args.resamples} (mIoU + mBIoU)", f"{coco['seconds']:.1f} s"))
        rows.append(("  peak RSS: interpreter / + count table / peak", f"{coco['rss_start_mb']:.0f} / "
                     f"{coco['rss_counts_mb']:.0f} / {coco['rss_peak_mb']:.0f} MB"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  value")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
