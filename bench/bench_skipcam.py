"""Skip-CAM per image at VOC-like size (500x375) with the real ViT-B/16 architecture and random weights.

Prints ms/image by stage (frozen blocks, last block + gradients, CAA, background + PAR) and, side by side in the same
run, the plain CLIP-ES recipe (tests/fixtures/clipes_reference.py: one backward per class over a re-run last block,
CAA) with the ratio. Usage: python bench/bench_skipcam.py [--repeats 3] [--classes 2] [--device cpu|cuda]
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
from pseudolabel.cam.clip_models import load_clip  # noqa: E402
from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig  # noqa: E402
from tests.fixtures.clipes_reference import clipes_reference_maps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    args = parser.parse_args()
    model, tokenizer, weights = load_clip("ViT-B-16", "random", args.device, seed=0)
    voc = get_class_set("voc")
    image = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    classes = tuple(range(1, args.classes + 1))
    rows = []
    for label, overrides in (("Skip-CAM K=3 + CAA + PAR", {}), ("Skip-CAM K=3 + CAA (no PAR)", {"use_par": False}),
                             ("CLIP-ES recipe K=0 via fast path", {"num_skips": 0, "use_par": False})):
        cfg = SkipCAMConfig(clip_weights="random", precision=args.precision, **overrides)
        cam = SkipCAM(model, tokenizer, voc, cfg, args.device, weights)
        cam(image, classes)  # warm-up
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = cam(image, classes)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            runs.append((time.perf_counter() - start, out.timings))
        total = statistics.median(r[0] for r in runs)
        stages = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
        rows.append((label, total, stages))
    cam = SkipCAM(model, tokenizer, voc, SkipCAMConfig(clip_weights="random"), args.device, weights)
    text = torch.cat([cam.fg_text[[c - 1 for c in classes]], cam.bg_text])
    pixels = cam.preprocess(image)[None].to(args.device)
    reference = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        clipes_reference_maps(model, pixels, text, len(classes), num_skips=0, tau=0.4)
        reference.append(time.perf_counter() - start)
    ref = statistics.median(reference)
    print(f"\nSkip-CAM at 500x375, ViT-B/16 (random weights), {len(classes)} classes, device {args.device}, "
          f"threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'variant':36s} {'total ms':>9s} {'frozen':>8s} {'last+grad':>9s} {'CAA':>7s} {'bg+PAR':>8s} {'vs ref':>7s}")
    for label, total, s in rows:
        print(f"{label:36s} {1000 * total:9.1f} {1000 * s['frozen_blocks']:8.1f} {1000 * s['last_block_grad']:9.1f} "
              f"{1000 * s['caa']:7.1f} {1000 * s['bg_par']:8.1f} {total / ref:7.2f}")
    print(f"{'reference CLIP-ES loop (tests)':36s} {1000 * ref:9.1f} {'':>8s} {'':>9s} {'':>7s} {'':>8s} {1.0:7.2f}")


if __name__ == "__main__":
    main()
