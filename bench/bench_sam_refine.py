"""SAM refinement at VOC-like size (500x375) with the real SAM ViT-B architecture and random weights.

Side by side in one run on the same image, Y0 and points: ``SAMRefiner`` (``BatchedPointPredictor``: the factored
decoder and the CSR mask resize) and the plain recipe, one stock ``SamPredictor.predict`` call per point followed by
the same selection, filtering and merge (tests/fixtures/fake_sam.py ``LoopSAMRefiner``). Each runs its own image
encoder pass. Prints ms by stage, the speed-up and whether the labels are identical.
Usage: python bench/bench_sam_refine.py [--grid-size 16] [--repeats 3] [--points-per-batch 256] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pseudolabel.sam.models import load_sam  # noqa: E402  (applies the compatibility shims)
from pseudolabel.sam.predictor import BatchedPointPredictor  # noqa: E402
from pseudolabel.sam.refine import POINTS_PER_BATCH, Refinement, SAMRefineConfig, SAMRefiner  # noqa: E402
from tests.fixtures.fake_sam import LoopSAMRefiner  # noqa: E402


def synthetic_input(height=375, width=500, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    y0 = np.zeros((height, width), np.uint8)
    y0[(yy - 180) ** 2 + (xx - 200) ** 2 < 110 ** 2] = 15
    y0[(yy - 120) ** 2 / 2 + (xx - 380) ** 2 < 70 ** 2] = 8
    scores = np.stack([(y0 == 0), (y0 == 8), (y0 == 15)]).astype(np.float32) + rng.random((3, height, width)) * 0.1
    return image, y0, scores.astype(np.float32), (8, 15)


def refine_timed(refine, image: np.ndarray) -> tuple[Refinement, dict[str, float]]:
    """``refine(image)`` (which returns the refinement and its encoder seconds) and its seconds by stage."""
    start = time.perf_counter()
    refinement, encoder = refine(image)
    return refinement, dict(refinement.timings, sam_encoder=encoder, total=time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid-size", type=int, default=16)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--points-per-batch", type=int, default=POINTS_PER_BATCH)
    parser.add_argument("--repeats", type=int, default=1, help="runs of every path, alternating; the best is shown")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model, _ = load_sam(args.model, "random", args.device, seed=0)
    image, y0, scores, classes = synthetic_input()
    cfg = SAMRefineConfig(grid_size=args.grid_size)
    refiner = SAMRefiner(BatchedPointPredictor(model), cfg, points_per_batch=args.points_per_batch)
    loop = LoopSAMRefiner(model, cfg)

    def ours(image):
        start = time.perf_counter()
        embedding = refiner.embed([image])[0]
        encoder = time.perf_counter() - start
        return refiner.refine_embedded(embedding, y0, scores, classes), encoder

    def plain(image):
        start = time.perf_counter()
        loop.stock.set_image(image)
        encoder = time.perf_counter() - start
        return loop.refine_stock_image(y0, scores, classes), encoder

    paths = {"batched (SAMRefiner)": ours, "loop of SamPredictor.predict": plain}
    best: dict[str, dict[str, float]] = {}
    labels = {}
    for _ in range(args.repeats):
        for name, refine in paths.items():
            refinement, times = refine_timed(refine, image)
            labels[name] = refinement.labels
            best[name] = {k: min(v, best.get(name, times)[k]) for k, v in times.items()}
    points = sum(refinement.prompts)  # both paths prompt the same points
    print(f"\nSAM {args.model} (random weights) refinement at 500x375, grid {args.grid_size}x{args.grid_size}, "
          f"{points} prompted points, {args.points_per_batch} per batch, device {args.device}, "
          f"threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'path':30s} {'total ms':>9s} {'encoder':>9s} {'prompts+masks':>14s} {'filter+merge':>13s} "
          f"{'per point':>10s}")
    for name, t in best.items():
        per_point = t["sam_decoder"] + t["filter_merge"]
        print(f"{name:30s} {1000 * t['total']:9.0f} {1000 * t['sam_encoder']:9.0f} {1000 * t['sam_decoder']:14.0f} "
              f"{1000 * t['filter_merge']:13.0f} {1000 * per_point / points:8.1f}ms")
    batched, looped = best["batched (SAMRefiner)"], best["loop of SamPredictor.predict"]
    fast_labels, loop_labels = labels["batched (SAMRefiner)"], labels["loop of SamPredictor.predict"]
    per_point = (looped["sam_decoder"] + looped["filter_merge"]) / (batched["sam_decoder"] + batched["filter_merge"])
    print(f"speed-up of the per-point work (masks + filter + merge): {per_point:.1f}x; whole refinement incl. the "
          f"encoder: {looped['total'] / batched['total']:.1f}x; labels identical: "
          f"{np.array_equal(fast_labels, loop_labels)} ({int((fast_labels != loop_labels).sum())} pixels differ)")


if __name__ == "__main__":
    main()
