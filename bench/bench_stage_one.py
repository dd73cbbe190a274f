"""Stage one end to end, as `tools/gen_pseudo.sh` runs it (the batched, pipelined StageOneRun: decoding threads,
batches, shard writer), on synthetic VOC-sized images with 1-3 classes each, with the real ViT-B/16 and SAM ViT-B
architectures and random weights. Prints images/s, ms per image by stage, memory, the shard bytes per image and, on
CUDA, the GPU busy fraction and peak GPU memory; with --agree-with, the label agreement with another run.

  python bench/bench_stage_one.py --images 3                          # CPU, 500x375 (docs/stage_one.md)
  python bench/bench_stage_one.py --device cuda --images 256 --batch-size 8 --precision bf16 --out /tmp/b16
  python bench/bench_stage_one.py --device cuda --images 256 --batch-size 8 --precision fp32 --agree-with /tmp/b16
  python bench/bench_stage_one.py --report results.jsonl              # the table of recorded runs (gpu_check.sh)

On a GPU the per-stage times come from a second, short pass whose stages each wait for the GPU (otherwise they
would measure only the host's share); images/s and the busy fraction come from the normal, overlapped run.
The busy fraction is the union of the GPU's kernel intervals over their span, from torch.profiler, in a window of
steady-state batches. The same window gives where the GPU time goes (the kernels taking most of it, kernel launches
and copies per image); a second, shorter window that also records the host's operators gives each stage's GPU time
and kernel launches, the operator calls per image and the host waits for the GPU (synchronisations) per batch.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pseudolabel import generate  # noqa: E402
from pseudolabel.classes import CLASSES_DIR  # noqa: E402
from pseudolabel.config import MethodOptions, RunConfig  # noqa: E402
from pseudolabel.precision import PRECISIONS  # noqa: E402
from pseudolabel.storage.run_log import RunLog  # noqa: E402
from pseudolabel.storage.shards import open_shards  # noqa: E402
from tests.fixtures.tiny_datasets import VOC_SIZES, make_voc_sized  # noqa: E402
from tests.fixtures.tiny_models import TINY_SAM2, register_tiny_models  # noqa: E402

STAGE_ORDER = ("decode", "clip_frozen", "sam_encoder", "skipcam", "last_block_grad", "caa", "bg_par", "sam",
               "sam_decoder", "filter_merge", "write")


class Stop(Exception):
    """Raised from the progress hook when the time budget is spent."""


def cached_models():
    """``generate.load_models`` that builds each (config, device) once per process (random init takes seconds)."""
    original, cache = generate.load_models, {}

    def load(pool, cfg):
        key = (json.dumps(cfg.to_dict(), sort_keys=True), str(pool.device), pool.points_per_batch)
        if key not in cache:
            cache[key] = original(pool, cfg)
        return cache[key]
    return load


def sam_model(args) -> str:
    """The refiner: ``--sam-model``, or with ``--tiny`` the tiny test model of its family."""
    if not args.tiny:
        return args.sam_model
    return TINY_SAM2 if args.sam_model.startswith("sam2") else "vit_tiny_test"


def models_text(args) -> str:
    """The models a run labels with, for the table."""
    if args.labeller == "sam3-text":
        return "SAM 3 from tags"
    return f"tiny: {sam_model(args)}" if args.tiny else f"ViT-B/16 + {args.sam_model}"


def stage_one_args(args, data: Path, out: Path, images: int, batch_size: int | None) -> list[str]:
    tiny = ["--clip-model", "ViT-T-16-cep-test"] if args.tiny else []
    return ["custom", "--images", str(data / "images"), "--labels", str(data / "labels.csv"),
            "--classes", str(CLASSES_DIR / "voc.json"), "--out", str(out), "--overwrite", "--limit", str(images),
            "--clip-weights", "random", "--sam-checkpoint", "random", "--device", args.device,
            "--precision", args.precision, "--sam-model", sam_model(args), *(["--compile"] if args.compile else []),
            *(["--labeller", "sam3-text", "--sam3-checkpoint", "random"] if args.labeller == "sam3-text" else []),
            *(["--batch-size", str(batch_size)] if batch_size else []),
            *(["--workers", str(args.workers)] if args.workers else []), *tiny]


def labelled_run(args, data: Path, out: Path, images: int, batch_size: int | None, timed=False, hook=None,
                 deadline: float | None = None, steady_from=None) -> tuple[generate.StageOneRun, dict]:
    """One StageOneRun over the first ``images`` images; returns it and its timing facts. The steady-state rate
    counts from image ``steady_from`` (an int, or a function called after the run; default: after the first batches,
    which set up cuDNN and the allocator)."""
    options = generate.build_parser().parse_args(stage_one_args(args, data, out, images, batch_size))
    run_config, method = RunConfig.from_args(options), MethodOptions.from_args(options)
    with RunLog(out) as log, generate.StageOneRun.setup(run_config, method, log) as run:  # releases the locks
        return run, label_timed(run, args, timed, hook, deadline, steady_from)


def label_timed(run: generate.StageOneRun, args, timed: bool, hook, deadline: float | None, steady_from) -> dict:
    """Label ``run``'s work list, timing each finished image; the facts of :func:`labelled_run`."""
    run.timed = timed
    done_at: list[float] = []

    def progress(done: int) -> None:
        done_at.append(time.perf_counter())
        if hook:
            hook(done)
        if deadline and time.perf_counter() > deadline:
            raise Stop
    run.progress_hook = progress
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    stopped = False
    try:
        run.label_images()
    except Stop:
        stopped = True
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    run.store.pack()
    facts = {"wall_s": wall, "done": len(done_at), "stopped_early": stopped,
             "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    steady_from = steady_from() if callable(steady_from) else steady_from  # after a profiled window, if any
    warm = steady_from if steady_from is not None and steady_from < len(done_at) // 2 \
        else min(len(done_at) // 4, 2 * run.batch_size)
    if len(done_at) > warm + 1:
        facts["steady_images_per_s"] = (len(done_at) - 1 - warm) / (done_at[-1] - done_at[warm])
    facts["images_per_s"] = len(done_at) / wall if wall else None
    return facts


def busy_fraction(prof) -> float:
    """Union of the GPU kernel intervals over their span (first start to last end)."""
    intervals = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                       if str(getattr(e, "device_type", "")).endswith("CUDA") and not e.name.startswith("Memcpy")
                       and not e.name.startswith("Memset"))
    if not intervals:
        raise RuntimeError("the profiler recorded no GPU kernels")
    busy, (current_start, current_end) = 0.0, intervals[0]
    for start, end in intervals[1:]:
        if start > current_end:
            busy += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    busy += current_end - current_start
    return busy / (intervals[-1][1] - intervals[0][0])


def kernel_breakdown(prof, images: int, top: int = 12) -> dict:
    """Where a profiled window's GPU time went: the ``top`` kernels by total time (name, calls, ms, share of all
    kernel time), kernel launches and memory copies per image (device-to-host copies into pageable memory make the
    host wait)."""
    kernels, copies = {}, {}
    for event in prof.events():
        if not str(getattr(event, "device_type", "")).endswith("CUDA"):
            continue
        name = event.name
        duration = event.time_range.end - event.time_range.start  # microseconds
        table = copies if name.startswith(("Memcpy", "Memset")) else kernels
        calls, total = table.get(name, (0, 0.0))
        table[name] = (calls + 1, total + duration)
    kernel_time = sum(t for _, t in kernels.values()) or 1.0
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]
    return {"images": images, "kernel_ms": kernel_time / 1000,
            "kernels_per_image": sum(c for c, _ in kernels.values()) / images,
            "copies_per_image": {name: calls / images for name, (calls, _) in copies.items()},
            "top_kernels": [[name[:90], calls, total / 1000, total / kernel_time] for name, (calls, total) in ranked]}


SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")  # host waits


def _kernels_under(event) -> int:
    """Kernels launched by an event and the operators under it."""
    return len(getattr(event, "kernels", ())) + sum(_kernels_under(child) for child in event.cpu_children)


def stage_breakdown(prof, images: int, batches: float) -> dict:
    """Per stage (the pipeline's ``stage: ...`` ranges): GPU ms and kernel launches per image; torch operator calls
    (from Python) per image and host waits for the GPU (runtime calls that synchronise) per batch."""
    stages, ops, syncs = {}, 0, {}
    for event in prof.events():
        if str(getattr(event, "device_type", "")).endswith("CUDA"):
            continue
        if event.name.startswith("stage: "):
            entry = stages.setdefault(event.name[len("stage: "):], [0.0, 0])
            entry[0] += event.device_time_total
            entry[1] += _kernels_under(event)
        elif event.name.startswith("aten::") and not (event.cpu_parent and event.cpu_parent.name.startswith("aten::")):
            ops += 1  # operators called from Python (not those they call)
        elif event.name in SYNCS:
            syncs[event.name] = syncs.get(event.name, 0) + 1
    return {"images": images,
            "stage_gpu_ms_per_image": {k: v[0] / 1000 / images for k, v in stages.items()},
            "stage_kernels_per_image": {k: v[1] / images for k, v in stages.items()},
            "ops_per_image": ops / images,
            "syncs_per_batch": {k: v / max(batches, 1e-9) for k, v in syncs.items()}}


class ProfiledWindow:
    """torch.profiler over ``length`` images of a run from image ``first``: GPU activity only; if that records no
    kernel (CUPTI has been seen to drop them), once more over the next ``length`` images with CPU operators recorded
    too (whose overhead makes that figure a lower bound). Then, unless ``stages`` is off, a window of ``length // 2``
    images with CPU operators and GPU activity for :func:`stage_breakdown`."""

    ATTEMPTS = (("CUDA",), ("CPU", "CUDA"))

    def __init__(self, first: int, length: int, limit: int, batch: int, stages: bool = True):
        self.start, self.length, self.limit, self.batch = first, length, limit, batch
        self.attempt, self.prof, self.result, self.errors, self.ended = 0, None, None, [], None
        self.kernels, self.stages, self.stage_window = None, None, None
        self.want_stages = stages

    def __call__(self, done: int) -> None:
        try:
            if self.prof is None and self.result is None and done == self.start and done + self.length <= self.limit:
                activities = [getattr(torch.profiler.ProfilerActivity, a) for a in self.ATTEMPTS[self.attempt]]
                self.prof = torch.profiler.profile(activities=activities)
                self.prof.__enter__()
            elif self.prof is not None and self.result is None and done == self.start + self.length:
                torch.cuda.synchronize()
                self.prof.__exit__(None, None, None)
                self.ended = done
                prof, self.prof = self.prof, None
                self.result = busy_fraction(prof)
                self.kernels = kernel_breakdown(prof, self.length)
                length = max(1, self.length // 2)
                if self.want_stages and done + self.batch + length <= self.limit:
                    self.stage_window = (done + self.batch, done + self.batch + length)
            elif self.stage_window and self.prof is None and done == self.stage_window[0]:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                               torch.profiler.ProfilerActivity.CUDA])
                self.prof.__enter__()
            elif self.stage_window and self.prof is not None and done == self.stage_window[1]:
                torch.cuda.synchronize()
                self.prof.__exit__(None, None, None)
                prof, self.prof = self.prof, None
                self.ended = done
                images = self.stage_window[1] - self.stage_window[0]
                self.stages = stage_breakdown(prof, images, images / self.batch)
        except Exception as error:  # noqa: BLE001 - a profiler problem must not stop the benchmark
            self.errors.append(f"{'+'.join(self.ATTEMPTS[self.attempt])}: {type(error).__name__}: {error}")
            self.prof = None
            if self.result is None and self.attempt + 1 < len(self.ATTEMPTS):
                self.attempt, self.start = self.attempt + 1, done + 1

    @property
    def activities(self) -> str:
        return "+".join(self.ATTEMPTS[self.attempt])


def agreement(out: Path, other: Path) -> dict:
    """Pixel agreement of the refined labels and of Y0, and localization-map agreement (token resolution:
    share of values within 0.05, mean |difference|), over the images both runs labelled."""
    a, b = open_shards(out), open_shards(other)
    common = sorted(set(a) & set(b))
    if not common:
        raise RuntimeError(f"no image labelled by both {out} and {other}")
    same = {"refined": 0, "initial": 0}
    pixels, close, diff, values = 0, 0, 0.0, 0
    for image_id in common:
        x, y = a[image_id], b[image_id]
        for kind in same:
            same[kind] += int((getattr(x, kind) == getattr(y, kind)).sum())
        pixels += x.refined.size
        delta = np.abs(x.loc_maps_lowres - y.loc_maps_lowres)
        close, diff, values = close + int((delta <= 0.05).sum()), diff + float(delta.sum()), values + delta.size
    return {"images": len(common), "refined_agreement": same["refined"] / pixels,
            "y0_agreement": same["initial"] / pixels, "loc_maps_within_0.05": close / max(values, 1),
            "loc_maps_mean_abs_diff": diff / max(values, 1)}


def guarded(name: str, results: dict, action):
    """Run one part of the benchmark; its error is printed and recorded, the rest goes on."""
    try:
        return action()
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        results.setdefault("errors", []).append(f"{name}: {type(error).__name__}: {error}")
        print(f"!! {name} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return None


FINISH_SECONDS = 15  # kept before --stop-by for what follows the runs: the agreement, the results, the table


def time_left(args) -> float:
    """Seconds until ``--stop-by``, less :data:`FINISH_SECONDS` (infinite without it)."""
    return args.stop_by - time.time() - FINISH_SECONDS if args.stop_by else float("inf")


def optional_part(name: str, results: dict, args, action) -> None:
    """A pass after the main run (the timing pass, a sweep run): ``action(seconds)`` within ``--part-seconds``, or
    less where ``--stop-by`` comes sooner; skipped (and said so) when under 5 seconds are left."""
    seconds = min(args.part_seconds, time_left(args))
    if seconds < 5:
        results.setdefault("errors", []).append(f"{name}: skipped, --stop-by comes too soon")
        return
    guarded(name, results, lambda: action(seconds))


def measure(args) -> dict:
    cuda = args.device.startswith("cuda")
    results = {"label": args.label, "device": args.device, "gpu": torch.cuda.get_device_name() if cuda else None,
               "precision": args.precision if cuda else "fp32", "batch_size": args.batch_size,
               "images": args.images, "sam_model": sam_model(args), "compiled": args.compile,
               "models": models_text(args),
               "sizes": "mixed VOC sizes" if args.mixed_sizes else "500x375", "threads": torch.get_num_threads()}
    generate.load_models = cached_models()
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_stage_one_"))
    data = Path(args.data) if args.data else work / "data"
    if not (data / "labels.csv").is_file():
        make_voc_sized(data, args.images, VOC_SIZES if args.mixed_sizes else VOC_SIZES[:1], seed=0)
    out = work / "shards"
    budget = min(args.max_seconds or float("inf"), time_left(args))
    deadline = time.perf_counter() + budget if budget < float("inf") else None
    window = None
    batch = args.batch_size or generate.default_batch_size(torch.device(args.device))
    if cuda and args.profile:
        window = ProfiledWindow(min(2 * batch, args.images // 4), 4 * batch, args.images - batch, batch)
    run, facts = labelled_run(args, data, out, args.images, args.batch_size, hook=window, deadline=deadline,
                              steady_from=lambda: window.ended + batch if window and window.ended else None)
    results.update(facts, batch_size=run.batch_size, workers=run.workers)
    summary = run.summary(facts["wall_s"])
    results["ms_per_image_host"] = {**summary["ms_per_image"], **summary["ms_per_image_detail"]}
    results["failures"] = len(run.failures)
    if window is not None:
        results["gpu_busy_fraction"] = window.result
        results["gpu_busy_window"] = {"images": [window.start, window.start + window.length],
                                      "recorded": window.activities}
        results["gpu_kernels"], results["gpu_stages"] = window.kernels, window.stages
        if window.errors or window.result is None:
            results.setdefault("errors", []).append(f"busy fraction: {'; '.join(window.errors) or 'not reached'}")
    timed_images = min(args.images, args.timed_images if args.timed_images is not None else 32 if cuda else 0)
    if timed_images:  # stage times with each stage waited for (a CPU's always are)
        def timed(seconds: float):
            timed_run, timed_facts = labelled_run(args, data, work / "timed", timed_images, args.batch_size,
                                                  timed=True, deadline=time.perf_counter() + seconds)
            results["ms_per_image_timed"] = {k: 1000 * v / max(timed_run.labelled, 1)
                                             for k, v in timed_run.stage_seconds.items()}
            results["timed_images"] = timed_run.labelled
        optional_part("timed pass", results, args, timed)
    for size in args.memory_sweep or ():
        def sweep(seconds: float, size=size):
            _, sweep_facts = labelled_run(args, data, work / f"sweep-{size}", min(args.images, max(16, 3 * size)),
                                          size, deadline=time.perf_counter() + seconds)
            results.setdefault("peak_gpu_gib_by_batch_size", {})[size] = sweep_facts["peak_gpu_gib"]
            results.setdefault("images_per_s_by_batch_size", {})[size] = sweep_facts.get("steady_images_per_s")
        optional_part(f"memory sweep, batch size {size}", results, args, sweep)
    shards = list(out.glob("shard-*.h5"))
    results["shard_kb_per_image"] = sum(p.stat().st_size for p in shards) / max(facts["done"], 1) / 1000
    results["rss_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.agree_with:
        results["agreement_with"] = str(args.agree_with)
        results["agreement"] = guarded("agreement", results, lambda: agreement(out, Path(args.agree_with)))
    return results


def run_name(r: dict) -> str:
    """A run's column: its ``--label``, else its precision and batch size."""
    return r.get("label") or f"{r.get('precision')} b{r.get('batch_size')}"


def print_table(runs: list[dict]) -> None:
    """One column per run."""
    def cell(value, digits=1):
        if value is None:
            return "n/a"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    names = [run_name(r) for r in runs]
    rows = [("device", [r.get("gpu") or r.get("device") for r in runs]),
            ("models", [r.get("models") for r in runs]),
            ("images labelled", [f"{r.get('done')}{' (time budget)' if r.get('stopped_early') else ''}" for r in runs]),
            ("images/s (steady state)", [cell(r.get("steady_images_per_s"), 2) for r in runs]),
            ("images/s (whole run)", [cell(r.get("images_per_s"), 2) for r in runs]),
            ("ms/image (steady state)", [cell(1000 / r["steady_images_per_s"]) if r.get("steady_images_per_s")
                                         else "n/a" for r in runs]),
            ("GPU busy fraction", [cell(100 * r["gpu_busy_fraction"]) + "%" + (
                " (>=)" if "CPU" in (r.get("gpu_busy_window") or {}).get("recorded", "") else "")
                if r.get("gpu_busy_fraction") is not None else "n/a" for r in runs]),
            ("peak GPU memory GiB", [cell(r.get("peak_gpu_gib"), 2) for r in runs]),
            ("process RSS peak MiB", [cell(r.get("rss_peak_mib"), 0) for r in runs]),
            ("shard KB/image", [cell(r.get("shard_kb_per_image")) for r in runs])]
    timed_key = "ms_per_image_timed" if any(r.get("ms_per_image_timed") for r in runs) else "ms_per_image_host"
    label = "stage ms/image" + (" (each stage waited for)" if timed_key.endswith("timed") else "")
    for stage in STAGE_ORDER:
        if any(stage in (r.get(timed_key) or {}) for r in runs):
            indent = "  " if stage in ("last_block_grad", "caa", "bg_par", "sam_decoder", "filter_merge") else ""
            rows.append((f"{label}: {indent}{stage}", [cell((r.get(timed_key) or {}).get(stage)) for r in runs]))
    if any(r.get("agreement") for r in runs):
        rows.append(("the other run (--agree-with)", [Path(r["agreement_with"]).parent.name if r.get("agreement")
                                                      else "-" for r in runs]))
    for key, title in (("refined_agreement", "labels agree with"), ("y0_agreement", "Y0 agrees with"),
                       ("loc_maps_within_0.05", "loc. maps within 0.05 of"),
                       ("loc_maps_mean_abs_diff", "loc. maps mean |diff| to")):
        if any(r.get("agreement") for r in runs):
            values = [(r.get("agreement") or {}).get(key) for r in runs]
            shown = [f"{100 * v:.3f}%" if isinstance(v, float) and key != "loc_maps_mean_abs_diff" else cell(v, 4)
                     for v in values]
            rows.append((f"{title} the other run", shown))
    def by_size(r: dict, key: str, size: int):  # JSON turns the sizes into strings
        table = r.get(key) or {}
        return table.get(str(size), table.get(size))
    for size in sorted({int(s) for r in runs for s in (r.get("peak_gpu_gib_by_batch_size") or {})}):
        rows.append((f"peak GPU GiB at batch size {size}",
                     [cell(by_size(r, "peak_gpu_gib_by_batch_size", size), 2) for r in runs]))
        rows.append((f"images/s at batch size {size} (short run)",
                     [cell(by_size(r, "images_per_s_by_batch_size", size), 2) for r in runs]))
    width = max(len(name) for name, _ in rows) + 2
    columns = [max(12, len(n), *(len(str(values[i])) for _, values in rows)) + 2 for i, n in enumerate(names)]
    print(f"{'':{width}s}" + "".join(f"{n:>{c}s}" for n, c in zip(names, columns)))
    for name, values in rows:
        print(f"{name:{width}s}" + "".join(f"{str(v):>{c}s}" for v, c in zip(values, columns)))
    for r in runs:
        for error in r.get("errors", []):
            print(f"!! {run_name(r)}: {error}")
    print_breakdown(runs)


def print_breakdown(runs: list[dict]) -> None:
    """Where each run's GPU time went, from its profiled windows (see the module)."""
    for r in runs:
        kernels, stages = r.get("gpu_kernels"), r.get("gpu_stages")
        if not kernels and not stages:
            continue
        print(f"\nwhere the GPU time goes, {run_name(r)}:")
        if kernels:
            copies = ", ".join(f"{name} {n:.1f}" for name, n in sorted(kernels["copies_per_image"].items()))
            print(f"  {kernels['images']} images: kernel time {kernels['kernel_ms'] / kernels['images']:.1f} ms/image, "
                  f"{kernels['kernels_per_image']:.0f} kernel launches/image; copies/image: {copies or 'none'}")
            print(f"  {'share':>6s} {'ms':>8s} {'calls':>6s}  kernel")
            for name, calls, ms, share in kernels["top_kernels"]:
                print(f"  {100 * share:5.1f}% {ms:8.1f} {calls:6d}  {name}")
        if stages:
            per_stage = ", ".join(f"{name} {ms:.1f} ms ({stages['stage_kernels_per_image'].get(name, 0):.0f} kernels)"
                                  for name, ms in stages["stage_gpu_ms_per_image"].items())
            waits = ", ".join(f"{name} {n:.1f}" for name, n in sorted(stages["syncs_per_batch"].items()))
            print(f"  {stages['images']} images with host operators recorded: GPU time by stage per image: "
                  f"{per_stage or 'n/a'}")
            print(f"  torch operator calls/image {stages['ops_per_image']:.0f}; host waits for the GPU per batch: "
                  f"{waits or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--batch-size", type=int, help="default: stage one's (1 on a CPU, 8 on CUDA)")
    parser.add_argument("--sam-model", default="vit_b", help="the refiner (gen_pseudo's --sam-model; default vit_b)")
    parser.add_argument("--labeller", default="cep", choices=("cep", "sam3-text"),
                        help="gen_pseudo's --labeller (sam3-text: SAM 3 from the tags, random weights; needs sam3)")
    parser.add_argument("--compile", action="store_true", help="gen_pseudo's --compile (the first batches compile)")
    parser.add_argument("--label", help="the run's column name in the table (default: precision and batch size)")
    parser.add_argument("--workers", type=int, help="decoding threads (default: stage one's)")
    parser.add_argument("--mixed-sizes", action="store_true",
                        help=f"cycle through the common VOC sizes {VOC_SIZES} instead of 375x500 only")
    parser.add_argument("--out", type=Path, help="keep the data, shards and results here (default: a temp dir)")
    parser.add_argument("--data", type=Path, help="synthetic images made by an earlier run (--out DIR/data)")
    parser.add_argument("--agree-with", type=Path, help="another run's shards (DIR/shards): label agreement")
    parser.add_argument("--max-seconds", type=float, help="stop labelling after this long (report what is done)")
    parser.add_argument("--timed-images", type=int,
                        help="images of the stage-timing pass (default: 32 on CUDA; 0, none, on a CPU)")
    parser.add_argument("--part-seconds", type=float, default=15,
                        help="time budget of the stage-timing pass and of each memory-sweep run")
    parser.add_argument("--memory-sweep", type=lambda v: [int(x) for x in v.split(",")],
                        help="also the peak GPU memory and images/s at these batch sizes, e.g. 1,16,32 (a short "
                             "run each: 3 batches, at least 16 images, --part-seconds)")
    parser.add_argument("--stop-by", type=float, default=os.environ.get("BENCH_STOP_BY"),
                        help="a time (seconds since the epoch; default: $BENCH_STOP_BY) by which the results must be "
                             "written: the runs are shortened or skipped to keep it (bench/gpu_check.sh sets it from "
                             "each part's time limit)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="CUDA: no busy-fraction window")
    parser.add_argument("--tiny", action="store_true", help="tiny test models instead of ViT-B/16 + SAM ViT-B "
                                                            "(a quick check of the script itself)")
    parser.add_argument("--json", type=Path, help="append this run's results as one JSON line")
    parser.add_argument("--report", type=Path, help="only print the table of the runs recorded in this JSON-lines file")
    args = parser.parse_args()
    if args.report:
        print_table([json.loads(line) for line in args.report.read_text().splitlines() if line.strip()])
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.tiny:
        register_tiny_models()
    results = measure(args)
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(results) + "\n")
    if args.out:
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nstage one, {results['models']} (random weights), synthetic {results['sizes']} images, "
          f"device {args.device}, threads {results['threads']}, workers {results['workers']}")
    print_table([results])


if __name__ == "__main__":
    main()
