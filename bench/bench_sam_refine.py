"""SAM refinement at VOC-like size (500x375) with the real SAM ViT-B architecture and random weights.

Side by side in one run on the same image, Y0 and points: the batched path (``SAMRefiner``) and the plain recipe,
one ``SamPredictor.predict`` call per point followed by the same filtering and merge (tests/fixtures/fake_sam.py
``LoopSAMRefiner``). Prints ms by stage, the speed-up and whether the labels are identical.
Usage: python bench/bench_sam_refine.py [--grid-size 16] [--repeats 1] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pseudolabel  # noqa: E402,F401  (compatibility shims before segment_anything imports torchvision)
from pseudolabel.sam_models import load_sam  # noqa: E402
from segment_anything import SamPredictor  # noqa: E402
from pseudolabel.sam_refine import SAMRefineConfig, SAMRefiner  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid-size", type=int, default=16)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--points-per-batch", type=int, default=SAMRefineConfig.points_per_batch)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model, _ = load_sam(args.model, "random", args.device, seed=0)
    image, y0, scores, classes = synthetic_input()
    cfg = SAMRefineConfig(grid_size=args.grid_size, points_per_batch=args.points_per_batch)
    rows, labels = [], {}
    for name, cls in (("batched (SAMRefiner)", SAMRefiner), ("loop of SamPredictor.predict", LoopSAMRefiner)):
        refiner = cls(SamPredictor(model), cfg)
        start = time.perf_counter()
        labels[name] = refiner.refine(image, y0, scores, classes)
        total = time.perf_counter() - start
        points = len(refiner.prompts(y0, scores, classes)[0])
        rows.append((name, total, refiner.timings, points))
    batched, loop = rows[0], rows[1]
    decode_speedup = loop[2]["sam_decoder"] / batched[2]["sam_decoder"]
    print(f"\nSAM {args.model} (random weights) refinement at 500x375, grid {args.grid_size}x{args.grid_size}, "
          f"{batched[3]} prompted points, {args.points_per_batch} per batch, device {args.device}, threads {torch.get_num_threads()}")
    print(f"{'path':30s} {'total ms':>9s} {'encoder':>9s} {'prompts+masks':>14s} {'filter+merge':>13s}")
    for name, total, t, _ in rows:
        print(f"{name:30s} {1000 * total:9.0f} {1000 * t['sam_encoder']:9.0f} {1000 * t['sam_decoder']:14.0f} "
              f"{1000 * t['filter_merge']:13.0f}")
    same = np.array_equal(labels[rows[0][0]], labels[rows[1][0]])
    print(f"speed-up of the prompt decoding (batched vs loop): {decode_speedup:.1f}x; "
          f"whole refinement incl. the shared encoder: {loop[1] / batched[1]:.1f}x; identical labels: {same}")


if __name__ == "__main__":
    main()
