"""Memory of stage one on one large photo: a custom dataset holding a single 6000x4000 image, labelled by the stage-one
command at its defaults (``--image-size full``, SAM on) with the real ViT-B/16 and SAM ViT-B architectures and random
weights, on the CPU. Prints the CAM input the token budget chose, the time by stage, the peak memory of the process
(its maximum resident set, ``ru_maxrss``) and whether it is within the target (6 GB).
Usage: python bench/bench_large_image.py [--height 4000] [--width 6000] [--classes 3] [--target-gb 6]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CLASSES = ("cat", "dog", "person", "car", "tree")


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A synthetic photo: textured background with a few large coloured ellipses (objects of several classes), made
    in bands of rows, so that making it takes little memory next to what the run measures."""
    rng = np.random.default_rng(seed)
    ellipses = [(rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width, rng.uniform(0.1, 0.25) * height,
                 rng.uniform(0.1, 0.25) * width, rng.integers(0, 255, 3)) for _ in range(4)]
    image = np.empty((height, width, 3), np.uint8)
    xx = np.arange(width)[None]
    for top in range(0, height, 250):
        band = image[top: top + 250]
        band[:] = rng.integers(70, 130, band.shape, dtype=np.uint8)
        yy = np.arange(top, top + len(band))[:, None]
        for cy, cx, ry, rx, colour in ellipses:
            band[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = colour
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--classes", type=int, default=3, help=f"image-level tags, among {CLASSES}")
    parser.add_argument("--target-gb", type=float, default=6.0)
    args = parser.parse_args()

    from pseudolabel.generate import run
    from pseudolabel.storage.shards import open_shards

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        Image.fromarray(photo(args.height, args.width)).save(root / "images" / "big.jpg", quality=90)
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        (root / "tags.json").write_text(json.dumps({"big": list(CLASSES[: args.classes])}))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        start = time.perf_counter()
        summary = run(["custom", "--images", str(root / "images"), "--labels", str(root / "tags.json"),
                       "--classes", str(root / "classes.txt"), "--out", str(root / "out"), "--device", "cpu",
                       "--clip-weights", "random", "--sam-checkpoint", "random"])
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # GiB (ru_maxrss is in KiB)
        shards = open_shards(root / "out")
        record = shards["big"]
        stats = record.class_stats
        shard_mb = sum(p.stat().st_size for p in shards.shard_paths) / 1e6
        cam_grid = record.loc_maps_lowres.shape[1:]

    print(f"\nstage one on one {args.width}x{args.height} photo, {args.classes} tags, defaults (--image-size full, SAM "
          "on), ViT-B/16 + SAM ViT-B with random weights, CPU")
    print(f"{'measure':42s} {'value':>14s}")
    rows = [("CAM input (token budget --max-tokens 1600)",
             f"{cam_grid[1] * 16}x{cam_grid[0] * 16} ({cam_grid[0] * cam_grid[1]} tok)"),
            ("label maps stored at", f"{record.refined.shape[1]}x{record.refined.shape[0]}"),
            ("SAM prompts / masks passing delta", f"{sum(stats.prompts)} / {sum(stats.masks_accepted)}"),
            *((f"  {stage} (s)", f"{ms / 1000:.1f}") for stage, ms in summary["ms_per_image"].items()),
            ("wall, models loaded to shard written (s)", f"{wall:.1f}"),
            ("shard size (MB)", f"{shard_mb:.2f}"),
            ("peak RSS before the run (GiB)", f"{before:.2f}"),
            ("peak RSS of the process (GiB)", f"{peak:.2f}"),
            (f"within the {args.target_gb:g} GB target", "yes" if peak * 2**30 / 1e9 <= args.target_gb else "NO")]
    for name, value in rows:
        print(f"{name:42s} {value:>14s}")


if __name__ == "__main__":
    main()
