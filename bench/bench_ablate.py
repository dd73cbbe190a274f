"""Sweep speed and memory against one default stage-one run: the real ViT-B/16 and SAM ViT-B architectures with
random weights on synthetic 500x375 images (a custom dataset written to a temp folder).

Runs, each in a fresh process, one after the other: ``gen_pseudo`` with the defaults; the SAM-settings sweep
(``--no-refine``, grid 8/16/32, δ 0.3/0.5/0.7: 7 table rows, 6 distinct settings since grid 16 and δ 0.5 are both the
defaults); the K sweep (K = 0, 1, 2, 3, SAM on). Prints per image the wall and CPU time of the labelling loop (the
models are loaded before it) and their ratios to the default run's, the process's peak memory (and the GPU's on
CUDA), whether the sweeps' default rows equal the standalone run's labels, and each row's estimated standalone time.
Targets (docs/ablations.md#speed): each sweep <= 1.6x the default run per image, peak memory <= 1.5 GB above it.
Usage: python bench/bench_ablate.py [--images 3] [--repeats 1] [--device cpu|cuda] [--malloc-defaults]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.bench_sam_refine import synthetic_input  # noqa: E402

SAM_SWEEP = {"tables": [
    {"name": "refine", "baseline": "", "rows": ["", "refine=false"]},
    {"name": "grid", "baseline": "grid_size=16", "rows": ["grid_size=8", "grid_size=16", "grid_size=32"]},
    {"name": "delta", "baseline": "delta=0.5", "rows": ["delta=0.3", "delta=0.5", "delta=0.7"]},
]}
K_SWEEP = {"tables": [{"name": "skips", "baseline": "num_skips=3", "rows": [f"num_skips={k}" for k in range(4)]}]}
TARGET_RATIO, TARGET_EXTRA_MIB = 1.6, 1.5 * 1024


def child(kind: str, argv: list[str]) -> None:
    """In a fresh process: one run, then a line with the wall and CPU time of its labelling loop (models loaded and
    outputs opened before, the report after), its images and the peak memory."""
    import torch

    from pseudolabel.ablation.cli import SweepRun, run as ablate
    from pseudolabel.generate import StageOneRun, run as gen_pseudo

    loop = {"wall": 0.0, "cpu": 0.0, "images": 0}

    def timed(method):
        def wrapper(self, *args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return method(self, *args, **kwargs)
            finally:
                loop["wall"] += time.perf_counter() - wall
                loop["cpu"] += time.process_time() - cpu   # every thread of the process: less sensitive to others
                loop["images"] += len(self.todo if isinstance(self, StageOneRun) else self.images)
        return wrapper

    StageOneRun.label_images, SweepRun.label_images = timed(StageOneRun.label_images), timed(SweepRun.label_images)
    (gen_pseudo if kind == "gen_pseudo" else ablate)(argv)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print("BENCH " + json.dumps({**loop, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                 "gpu_mib": gpu}))


def measure(kind: str, argv: list[str], malloc_defaults: bool) -> dict:
    env = dict(os.environ, **({"GLIBC_TUNABLES": "", "THP_MEM_ALLOC_ENABLE": "0"} if malloc_defaults else {}))
    result = subprocess.run([sys.executable, __file__, "--child", kind, "--", *argv], capture_output=True, text=True,
                            env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode or not lines:
        sys.exit(f"{kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def labels(folder: Path) -> dict:
    from pseudolabel.storage.shards import open_shards

    shards = open_shards(folder)
    return {i: shards.read_label(i) for i in shards}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; the one with the least CPU "
                                                                "time is shown")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="run with glibc's default malloc (GLIBC_TUNABLES= THP_MEM_ALLOC_ENABLE=0): peak memory "
                             "is then what the run holds at once; tools/_env.sh's settings keep freed memory, so "
                             "their peak varies by about a GB from run to run (docs/stage_one.md)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.argv)
        return
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        for seed in range(args.images):
            image, _, _, _ = synthetic_input(375, 500, seed=seed)
            Image.fromarray(image).save(tmp / "images" / f"i{seed}.png")
        (tmp / "tags.json").write_text(json.dumps({f"i{seed}": ["cat", "person"] for seed in range(args.images)}))
        dataset = ["custom", "--images", str(tmp / "images"), "--labels", str(tmp / "tags.json"),
                   "--classes", str(root / "pseudolabel" / "class_lists" / "voc.json"), "--device", args.device,
                   "--clip-weights", "random", "--sam-checkpoint", "random"]
        runs: dict[str, tuple[str, list[dict]]] = {"default gen_pseudo run": ("1", []),
                                                    "SAM-settings sweep": ("7 (6)", []), "K sweep (K = 0..3)": ("4", [])}
        for repeat in range(args.repeats):       # the runs alternate, so a busy spell of the machine hits each
            out = tmp / f"default{repeat}"
            runs["default gen_pseudo run"][1].append(measure("gen_pseudo", [*dataset, "--out", str(out)],
                                                                      args.malloc_defaults))
            for name, sweep in (("SAM-settings sweep", SAM_SWEEP), ("K sweep (K = 0..3)", K_SWEEP)):
                path, out = tmp / f"{name[:3]}.json", tmp / f"{name[:3]}{repeat}"
                path.write_text(json.dumps(sweep))
                result = measure("ablate", [*dataset, "--sweep", str(path), "--out", str(out), "--gt", "none"],
                                 args.malloc_defaults)
                ours, standalone = labels(out / "rows" / "defaults"), labels(tmp / "default0")
                result["same_as_default_run"] = ours.keys() == standalone.keys() and all(
                    np.array_equal(ours[i], standalone[i]) for i in ours)
                report = json.loads((out / "report.json").read_text())
                result["estimates"] = {r["row"]: r["ms_per_image"] for t in report["tables"] for r in t["rows"]}
                runs[name][1].append(result)
        best = {name: (rows, min(results, key=lambda r: r["cpu"])) for name, (rows, results) in runs.items()}
        default = best["default gen_pseudo run"][1]
    print(f"\nsweeps vs one default stage-one run: ViT-B/16 + SAM ViT-B (random weights), {args.images} synthetic "
          f"500x375 image(s), device {args.device}, {os.cpu_count()} CPUs, best of {args.repeats} alternating run(s) "
          f"{'with glibc malloc defaults ' if args.malloc_defaults else ''}"
          "by CPU time. The machine may be shared: wall times are noisy, CPU times (every thread of the process) "
          "less so")
    gpu = default["gpu_mib"] is not None
    print(f"{'run':24s} {'rows':>6s} {'wall ms/img':>11s} {'x':>5s} {'CPU ms/img':>10s} {'x':>5s} "
          f"{'peak RSS MiB':>12s} {'+MiB':>6s}" + (f" {'GPU MiB':>8s}" if gpu else "") + "  default row")
    for name, (rows, result) in best.items():
        wall, cpu = (1000 * result[k] / result["images"] for k in ("wall", "cpu"))
        base_wall, base_cpu = (1000 * default[k] / default["images"] for k in ("wall", "cpu"))
        same = {True: "identical", False: "DIFFERENT"}.get(result.get("same_as_default_run"), "")
        print(f"{name:24s} {rows:>6s} {wall:11.0f} {wall / base_wall:5.2f} {cpu:10.0f} {cpu / base_cpu:5.2f} "
              f"{result['rss_mib']:12.0f} {result['rss_mib'] - default['rss_mib']:+6.0f}"
              + (f" {result['gpu_mib']:8.0f}" if gpu else "") + f"  {same}")
    print(f"targets: <= {TARGET_RATIO}x the default run per image, <= +{TARGET_EXTRA_MIB:.0f} MiB peak memory; "
          "'default row': the sweep's default row against the standalone run's labels")
    print(f"\nstage-one ms/image each row's standalone run would spend (the report's time column; the default run's "
          f"labelling loop took {1000 * default['wall'] / default['images']:.0f} ms/image):")
    for name, (_, result) in best.items():
        if "estimates" in result:
            print(f"  {name}: " + ", ".join(f"{row} {ms:.0f}" for row, ms in result["estimates"].items()))


if __name__ == "__main__":
    main()
