"""Whole stage one per image at VOC-like size (500x375): Skip-CAM (ViT-B/16) + SAM ViT-B refinement, random weights,
by stage, with process memory and the shard bytes per image. Usage: python bench/bench_stage_one.py [--images 2] [--mixed-sizes] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench.bench_sam_refine import synthetic_input  # noqa: E402
from pseudolabel.classes import get_class_set  # noqa: E402
from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner  # noqa: E402
from pseudolabel.storage.shards import LabelRecord, ShardWriter  # noqa: E402
from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig  # noqa: E402


VOC_SIZES = ((375, 500), (500, 375), (333, 500), (500, 500), (281, 500))  # (height, width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--mixed-sizes", action="store_true",
                        help=f"cycle through the common VOC sizes {VOC_SIZES} instead of 375x500 only")
    args = parser.parse_args()
    voc = get_class_set("voc")
    cam = SkipCAM.from_config(SkipCAMConfig(clip_weights="random", precision=args.precision), voc, args.device)
    refiner = SAMRefiner.from_config(SAMRefineConfig(sam_checkpoint="random"), args.device)
    totals: dict[str, float] = {}
    start = time.perf_counter()
    sizes = VOC_SIZES if args.mixed_sizes else VOC_SIZES[:1]
    records = []
    for seed in range(args.images):
        image, _, _, classes = synthetic_input(*sizes[seed % len(sizes)], seed=seed)
        out = cam(image, classes)
        refinement = refiner.refine(image, out.y0, out.scores, classes)
        for key, value in {**out.timings, **refinement.timings}.items():
            totals[key] = totals.get(key, 0.0) + value
        records.append(LabelRecord(image_id=f"i{seed}", refined=refinement.labels, initial=out.y0,
                                   loc_maps_lowres=out.loc_maps_lowres, loc_class_ids=out.class_ids,
                                   class_ids=classes, size=image.shape[:2]))
    wall = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:  # outside the timing: the write is a few ms per image
        shard = Path(tmp) / "shard.h5"
        with ShardWriter(shard, voc, {"dataset": "voc", "random_weights": True}) as writer:
            for record in records:
                writer.write(record)
        shard_kb = shard.stat().st_size / args.images / 1000
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if args.device.startswith("cuda") else ""
    print(f"\nstage one at {'mixed VOC sizes' if args.mixed_sizes else '500x375'} (ViT-B/16 + SAM ViT-B, random "
          f"weights), {args.images} image(s), device "
          f"{args.device}, threads {torch.get_num_threads()}")
    print(f"{'stage':20s} {'ms/image':>10s}")
    for key, value in totals.items():
        print(f"{key:20s} {1000 * value / args.images:10.0f}")
    print(f"{'total (wall)':20s} {1000 * wall / args.images:10.0f}")
    rss_now = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    print(f"images/s {args.images / wall:.3f}; process RSS peak {peak_rss:.0f} MiB, at the end {rss_now:.0f} MiB{gpu}")
    print(f"shard size {shard_kb:.1f} KB per image (labels, Y0 and localization maps from random weights on "
          "synthetic images)")


if __name__ == "__main__":
    main()
