"""Skip-CAM against CLIP-ES's own recipe, per 500x375 image, ViT-B/16 with random weights, on the CPU.

Both sides run the same weights and text embeddings in the same process:
- this project (``SkipCAM``, no PAR): one no-grad pass of blocks 1..11 for all classes, then the last block once on
  a batch with one copy per class and one backward; CAA. PAR (which CLIP-ES does not run) is timed on its own.
- CLIP-ES as ``generate_cams_voc12.py`` runs it (written independently in tests/fixtures/clipes_reference.py):
  blocks 1..11 once under no_grad, then for each class one forward of the last block and one backward through
  pytorch-grad-cam's hooks, the CAM in numpy, the Sinkhorn affinity, boxes, CAA and the resize to the image size.
  At K=3 its last block takes the Skip-CAM fused input.
Rows: K = 0 and 3, with 1, 2 and 3 classes per image; medians over ``--repeats`` runs of each side, alternating,
after one warm-up run of each.
Usage: python bench/bench_skipcam.py [--repeats 2] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pseudolabel.classes import get_class_set  # noqa: E402
from pseudolabel.cam.clip_models import DEFAULT_CLIP_MODEL, load_clip  # noqa: E402
from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig  # noqa: E402
from tests.fixtures.clipes_reference import ReferenceCLIP, clipes_attn_highres  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, weights = load_clip(DEFAULT_CLIP_MODEL, "random", "cpu", seed=0)
    reference = ReferenceCLIP(model.state_dict())
    voc = get_class_set("voc")
    image = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    rows = []
    for num_skips in (0, 3):
        cam = SkipCAM(model, tokenizer, voc, SkipCAMConfig(clip_weights="random", num_skips=num_skips), "cpu", weights)
        for count in (1, 2, 3):
            classes = tuple(range(1, count + 1))
            runs = {"ours": [], "clipes": []}
            for _ in range(args.repeats + 1):  # the two alternate, so that a busy moment slows both
                runs["ours"].append(timed(lambda: cam(image, classes)))
                runs["clipes"].append(timed(lambda: clipes_attn_highres(
                    reference, image, [c - 1 for c in classes], cam.fg_text, cam.bg_text, cam.cfg.tau, num_skips)))
            ours, clipes = ([t for t, _ in runs[k][1:]] for k in ("ours", "clipes"))  # the first is a warm-up
            par = [out.timings["bg_par"] for _, out in runs["ours"][1:]]
            rows.append((num_skips, count, statistics.median(o - p for o, p in zip(ours, par)), statistics.median(par),
                         statistics.median(ours), statistics.median(clipes)))
    print(f"\nSkip-CAM vs CLIP-ES's recipe at 500x375, ViT-B/16 (random weights), CPU, {torch.get_num_threads()} "
          f"threads, median of {args.repeats}; ms per image")
    print(f"{'K':>2s} {'classes':>7s} {'ours, no PAR':>12s} {'PAR':>6s} {'ours + PAR':>10s} {'CLIP-ES recipe':>14s} "
          f"{'no PAR / CLIP-ES':>16s} {'+PAR / CLIP-ES':>14s}")
    for k, count, ours, par, total, clipes in rows:
        print(f"{k:2d} {count:7d} {1000 * ours:12.0f} {1000 * par:6.0f} {1000 * total:10.0f} "
              f"{1000 * clipes:14.0f} {ours / clipes:16.2f} {total / clipes:14.2f}")
    print("PAR includes the background score and the resize of the maps to the image size.")


if __name__ == "__main__":
    main()
