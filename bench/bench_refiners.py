"""Stage one's refiner step per refiner, on one VOC-sized image (500x375), random weights: SAM ViT-B against SAM 2.1
Hiera-T and Hiera-B+ (any registered ``--sam-model`` with ``--models``), in the same run on the same image, Y0 and
grid points. Each refiner is built as stage one builds it (``SAMRefiner.from_config``: SAM ViT-B on
``BatchedPointPredictor``, SAM 2.1 on ``SAM2PointPredictor``). Prints ms/image by stage (image encoder, prompt
decoding, filter and merge), the total and the speed-up over SAM ViT-B (targets: Hiera-T >= 2x, Hiera-B+ >= 1.3x on
a CPU). Random weights: the timings hold, the labels are not meaningful.
Usage: python bench/bench_refiners.py [--models vit_b sam2.1_hiera_t sam2.1_hiera_b+] [--repeats 1] [--grid-size 16]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import torch  # noqa: E402
from bench.bench_sam_refine import synthetic_input  # noqa: E402
from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner  # noqa: E402

TARGETS = {"sam2.1_hiera_t": 2.0, "sam2.1_hiera_b+": 1.3}  # speed-up over SAM ViT-B on a CPU


def time_refiner(refiner: SAMRefiner, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds by stage of one image: encoder, decoder, filter and merge, total."""
    image, y0, scores, classes = synthetic_input()
    best: dict[str, float] = {}
    for _ in range(repeats):
        start = time.perf_counter()
        embedding = refiner.embed([image])[0]
        encoder = time.perf_counter() - start
        timings = refiner.refine_embedded(embedding, y0, scores, classes).timings
        run = {"sam_encoder": encoder, "sam_decoder": timings["sam_decoder"],
               "filter_merge": timings["filter_merge"], "total": time.perf_counter() - start}
        best = run if not best or run["total"] < best["total"] else best
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_b", "sam2.1_hiera_t", "sam2.1_hiera_b+"])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each refiner; the best is shown")
    parser.add_argument("--grid-size", type=int, default=SAMRefineConfig.grid_size)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    rows = {}
    for name in args.models:
        cfg = SAMRefineConfig(sam_model=name, sam_checkpoint="random", grid_size=args.grid_size)
        rows[name] = time_refiner(SAMRefiner.from_config(cfg, args.device), args.repeats)
    reference = rows.get("vit_b", {}).get("total")
    print(f"refiner step, one 500x375 image, grid {args.grid_size}, {args.device}, {torch.get_num_threads()} threads, "
          f"RANDOM weights, best of {args.repeats}")
    print(f"{'refiner':18s} {'encoder ms':>11s} {'decoder ms':>11s} {'filter+merge':>13s} {'total ms':>10s} "
          f"{'vs vit_b':>9s} {'target':>7s}")
    for name, row in rows.items():
        speed_up = f"{reference / row['total']:.2f}x" if reference else "-"
        target = f">={TARGETS[name]}x" if name in TARGETS else ""
        print(f"{name:18s} {1e3 * row['sam_encoder']:11.0f} {1e3 * row['sam_decoder']:11.0f} "
              f"{1e3 * row['filter_merge']:13.0f} {1e3 * row['total']:10.0f} {speed_up:>9s} {target:>7s}")


if __name__ == "__main__":
    main()
