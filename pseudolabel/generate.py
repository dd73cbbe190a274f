"""Stage one: Skip-CAM maps and SAM-refined pseudo labels for every image of a dataset, written to HDF5 shards.

Run through ``tools/gen_pseudo.sh voc|coco|custom|demo`` (or ``python -m pseudolabel.generate``). Under ``torchrun``
each rank takes a disjoint share of the images and writes its own shards; rank 0 writes the manifest at the end.
One run per output folder: each rank locks its part of ``--out`` and rank 0 the folder, before any model is loaded.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch
from tqdm import tqdm

from pseudolabel.cam.clip_models import openai_weights_cached
from pseudolabel.classes import DATA_DIR, ClassSet, get_class_set
from pseudolabel.cli_options import add_dataclass_options, positive_int, program_name
from pseudolabel.compiled import compile_encoders
from pseudolabel.config import MethodOptions, PseudoLabelConfig, RunConfig
from pseudolabel.console import console_logging
from pseudolabel.datasets import DEFAULT_SPLITS, Sample, WeakDataset, build_dataset
from pseudolabel.exits import OutputError, one_line, tool_main
from pseudolabel.labellers.config import LabellerConfig
from pseudolabel.labellers.sam3_text import LICENCE as SAM3_LICENCE, SAM3TextLabeller
from pseudolabel.model_pool import ModelPool
from pseudolabel.pipeline import (STAGES, BackgroundWriter, ImageFailure, Labeller, PendingRecord, Setting,
                                  default_batch_size, default_workers)
from pseudolabel.precision import DEFAULT_CUDA_PRECISION, PRECISIONS, effective_precision, use_fp32_math
from pseudolabel.storage.lock import OutputLock
from pseudolabel.storage.run_log import RunLog
from pseudolabel.storage.run_store import RunStore
from pseudolabel.sam.models import SAM_VARIANTS, cache_dir
from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner
from pseudolabel.storage.shards import LabelRecord, run_identity
from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig

LOG = logging.getLogger("pseudolabel.generate")
DEMO_DIR = DATA_DIR / "demo"
BANNER = "!" * 78
RANDOM_WEIGHTS_NOTE = "NOTE: produced with RANDOM weights (recorded as random_weights=True in the shards)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("tools/gen_pseudo.sh"),
        description="Stage one of CEP: Skip-CAM localization maps + SAM-refined pseudo labels -> HDF5 shards.\n"
                    "Examples:\n"
                    "  tools/gen_pseudo.sh voc                       # VOC train_aug, paper defaults (tau 0.4)\n"
                    "  tools/gen_pseudo.sh voc --split train --num-skips 0 --no-refine   # Table 5 baseline row\n"
                    "  tools/gen_pseudo.sh coco --split train        # tau 0.7\n"
                    "  tools/gen_pseudo.sh custom --images DIR --labels tags.csv --classes classes.txt\n"
                    "  NPROC=4 tools/gen_pseudo.sh voc               # 4 GPUs through torchrun\n"
                    "Rerunning the same command resumes an interrupted run (and relabels the images of a damaged "
                    "shard).\n"
                    "The method, every option's role and the paper's tables as commands: docs/method.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASET_CHOICES, help="what to label")
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, help="output directory (default: outputs/<dataset>_<split>, outputs/demo for "
                                              "the demo, in the checkout; in the working directory when installed)")
    add_run_options(run)
    run.add_argument("--overwrite", action="store_true", help="delete earlier outputs in --out and start again")
    add_method_options(parser)
    return parser


DATASET_CHOICES = ("voc", "coco", "custom", "demo")
METHOD_CONFIGS = (SkipCAMConfig, SAMRefineConfig, LabellerConfig)   # the configs whose fields are the method options


def add_run_options(group) -> None:
    """What to label and how to run: every stage-one option but ``--out``, ``--overwrite`` and the method's."""
    group.add_argument("--split", help="split (default: voc train_aug, coco train, custom/demo all)")
    group.add_argument("--data-root", type=Path, help="dataset root (default: data/VOCdevkit/VOC2012, data/coco)")
    group.add_argument("--label-source", choices=("xml", "mask"), default=RunConfig.label_source,
                       help="VOC image-level labels from Annotations XML (default) or from GT masks (as WeCLIP)")
    group.add_argument("--images", type=Path, help="custom: folder of images")
    group.add_argument("--labels", type=Path, help="custom: CSV (image_id,classes) or JSON tag list")
    group.add_argument("--classes", type=Path, help="custom: class list (.txt one per line, or .json)")
    group.add_argument("--device", default=RunConfig.device,
                       help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda (= cuda:LOCAL_RANK), cuda:N")
    group.add_argument("--precision", choices=PRECISIONS,
                       help=f"numeric precision of CLIP's blocks and SAM's image encoder on CUDA: fp32 (true "
                            "float32, TF32 off), tf32 (TF32 tensor-core math), bf16 or fp16 (autocast); the decoder, "
                            f"CAA, PAR and merge stay in float32 (default: {DEFAULT_CUDA_PRECISION} on CUDA; a CPU "
                            "always computes in fp32). It changes a few labels, so it is part of the configuration a "
                            "resume compares")
    group.add_argument("--batch-size", type=positive_int,
                       help="images per batch (default: 1 on a CPU, 8 on CUDA); labels do not depend on it on a CPU; "
                            "on a GPU larger batches need more memory (docs/stage_one.md#stage-one-on-a-gpu)")
    group.add_argument("--shard-size", type=positive_int, default=RunConfig.shard_size,
                       help=f"images per shard file (default: {RunConfig.shard_size})")
    group.add_argument("--workers", type=positive_int,
                       help="threads decoding and preprocessing images ahead (default: 2 on a CPU, up to 8 on CUDA)")
    group.add_argument("--points-per-batch", type=positive_int, default=RunConfig.points_per_batch,
                       help="SAM prompts decoded together over a batch's images (default: "
                            f"{RunConfig.points_per_batch}, fewer for very large images); speed and memory only, so a "
                            "resume with another value goes on")
    group.add_argument("--limit", type=positive_int, help="only the first N >= 1 images of the split (quick checks)")
    group.add_argument("--compile", action="store_true",
                       help="compile the image encoders with torch.compile (off by default: each image size "
                            "compiles once per process; it may change a label at a near-tie by rounding, "
                            "docs/stage_one.md#compiled-encoders)")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """The method options, one per field of :data:`METHOD_CONFIGS`: the paper's settings, the models, and the open
    choices this project reconstructed (each documented in docs/method.md), in groups of their own."""
    groups = {"paper": parser.add_argument_group("the paper's settings (docs/method.md)"),
              "models": parser.add_argument_group("models, weights and seeds"),
              None: parser.add_argument_group("reconstructed open choices, the paper's readings by default "
                                              "(docs/method.md#open-choices-and-their-flags)")}
    for config in (SkipCAMConfig, SAMRefineConfig):
        add_dataclass_options(parser, config, groups=groups)
    add_dataclass_options(parser, LabellerConfig, "labeller (CEP, or SAM 3 from the tags)")


@functools.cache
def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a download host answers at all (the demo falls back to random weights when not); asked once."""
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        with contextlib.suppress(OSError), socket.create_connection((host, 443), timeout=timeout):
            return True
    return False


def demo_weights(cfg: PseudoLabelConfig) -> list[str]:
    """For the demo: keep given/cached/downloadable weights, else switch to seeded random ones. Returns notes."""
    notes = []
    if cfg.cam.clip_weights == "openai" and not reachable("huggingface.co"):
        if not openai_weights_cached(cfg.cam.clip_model):
            cfg.cam.clip_weights = "random"
            notes.append("CLIP weights could not be downloaded (offline) and are not cached")
    variant = SAM_VARIANTS[cfg.refine.sam_model]
    if cfg.refine.enabled and cfg.refine.sam_checkpoint is None and variant.filename:
        if not (cache_dir() / variant.filename).is_file() and not reachable("dl.fbaipublicfiles.com"):
            cfg.refine.sam_checkpoint = "random"
            notes.append("SAM weights could not be downloaded (offline) and are not cached")
    return notes


def logged_dataset(run: RunConfig, split: str, log: RunLog) -> WeakDataset:
    """The dataset of ``run`` (the demo's photos, a custom folder, VOC or COCO), summarised in ``log``."""
    if run.dataset == "demo":
        if not (DEMO_DIR / "tags.json").is_file():
            raise FileNotFoundError(f"the demo photos are not in '{DEMO_DIR}': they come with the source checkout "
                                    "(data/demo); run the demo from the checkout (tools/gen_pseudo.sh demo) or from a "
                                    "folder holding data/demo")
        dataset = build_dataset("custom", DEMO_DIR / "images", split, labels=DEMO_DIR / "tags.json",
                                classes=get_class_set("voc"), name="demo")
    elif run.dataset == "custom":
        dataset = build_dataset("custom", run.images or run.data_root, split, labels=run.labels, classes=run.classes)
    else:
        options = {"label_source": run.label_source} if run.dataset == "voc" else {}
        dataset = build_dataset(run.dataset, run.data_root, split, **options)
    log.detail("dataset", {"name": dataset.name, "split": split, "root": dataset.root, "images": len(dataset),
                           "left out": dataset.problems})
    return dataset


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; a gloo group for the barriers."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return rank, world, int(os.environ.get("LOCAL_RANK", 0))


def barrier(world: int) -> None:
    """Wait for every rank. The wait polls, so Ctrl-C and SIGTERM stop a rank waiting here (a blocking barrier would
    hold them until the others arrive); a rank that stopped ends the wait with one line."""
    if world > 1:
        waiting = torch.distributed.barrier(async_op=True)
        while not waiting.is_completed():
            time.sleep(0.05)
        try:
            waiting.wait()
        except RuntimeError as error:
            reason = one_line(error).split("] ", 1)[-1].split(". ")[0]   # gloo's: "[<source>:<line>] <what>. <hint>"
            raise RuntimeError(f"another rank stopped ({reason}); everything finished so far is kept: rerun the same "
                               "command to resume") from None


def device_and_precision(run: RunConfig, local_rank: int) -> tuple[str, str]:
    """This rank's device (``--device``: ``auto`` and ``cuda`` are this rank's GPU, made the current one; ``auto`` is
    the CPU without one) and the precision it computes in (``--precision``; logged when the device changes it)."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if run.device == "auto" else run.device
    device = f"cuda:{local_rank}" if device == "cuda" else device
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    precision, note = effective_precision(run.precision, device)
    use_fp32_math(device)
    if note:
        LOG.info(note)
    return device, precision


def load_models(pool: ModelPool, cfg: PseudoLabelConfig) -> Setting:
    """The Skip-CAM and, when refinement is on, the SAM refiner of ``cfg`` from ``pool``; with ``--labeller
    sam3-text`` SAM 3's labeller in their place."""
    if cfg.labeller.labeller == "sam3-text":
        return Setting(SAM3TextLabeller.from_config(cfg.labeller, pool.class_set, pool.device), None)
    return pool.setting(cfg)


def load_settings(run: RunConfig, configs: list[PseudoLabelConfig], class_set: ClassSet, device: str, log: RunLog,
                  banner: tuple[str, str] = ("The pipeline runs", "the labels are")) -> list[Setting]:
    """The models of every configuration (each model loaded once), all built and checked before anything is written:
    the demo's weights (:func:`demo_weights`), compiled on ``--compile``, and the random-weights banner (``banner``:
    what runs and what is not meaningful) printed loudly and logged when any weights are random."""
    pool, settings, notes = ModelPool(class_set, device, run.points_per_batch), [], set()
    for cfg in configs:
        notes.update(demo_weights(cfg) if run.dataset == "demo" else [])
        settings.append(load_models(pool, cfg))
        if run.compile and not isinstance(settings[-1].cam, SAM3TextLabeller):
            compile_encoders(settings[-1].cam, settings[-1].refiner)
    if any(weights_of(s.cam, s.refiner)[1] for s in settings):
        why = "; ".join(sorted(notes)) or "requested"
        print(f"{BANNER}\n!! RANDOM WEIGHTS: {why}.\n!! {banner[0]} end to end with seeded random weights; {banner[1]} "
              f"NOT meaningful.\n{BANNER}", file=sys.stderr)
        log.detail(f"RANDOM WEIGHTS: {why}; the labels are not meaningful", level=logging.WARNING)
    return settings


def split_of(run: RunConfig) -> str:
    """The split to label: ``--split`` or the dataset's default."""
    return run.split or DEFAULT_SPLITS.get(run.dataset, "all")


def output_dir(run: RunConfig, split: str) -> Path:
    """``--out``, or ``outputs/<dataset>_<split>`` (``outputs/demo`` for the demo) in the checkout (an installed
    package: in the working directory)."""
    name = run.dataset if run.dataset == "demo" else f"{run.dataset}_{split}"
    return run.out or DATA_DIR.parent / "outputs" / name


def lock_output(out: Path, rank: int) -> contextlib.ExitStack:
    """This rank's locks on ``out`` (released when the returned stack closes, or by the OS when the process ends):
    its part, ``.lock-r<rank>``, and on rank 0 the folder, ``.lock``."""
    with contextlib.ExitStack() as locks:
        if rank == 0:
            locks.enter_context(OutputLock(out))
        locks.enter_context(OutputLock(out, part=f"r{rank:03d}"))
        return locks.pop_all()


def weights_of(cam: SkipCAM, refiner: SAMRefiner | None) -> tuple[dict, bool]:
    """The identity of the models' weights (``{"clip": ..., "sam": ...}``) and whether any is random."""
    if isinstance(cam, SAM3TextLabeller):
        return {"sam3": cam.weights}, cam.weights.get("kind") == "random"
    weights = {"clip": cam.weights, "sam": refiner.weights if refiner else None}
    return weights, any(w and w.get("kind") == "random" for w in weights.values())


def previous_failures(out: Path) -> dict[str, dict]:
    """Images an earlier run into ``out`` failed to label or read (any rank's ``failures-r*.json``), by id."""
    entries = {}
    for path in sorted(out.glob("failures-r*.json")):
        with contextlib.suppress(OSError, ValueError):  # an unreadable list: those images are not known to have failed
            entries.update({e["image_id"]: e for e in json.loads(path.read_text())
                            if isinstance(e, dict) and e.get("stage") in ("read", "label")})
    return entries


class ReleasesLocks:
    """A run used as a context manager: leaving its block releases ``locks``, its output locks."""

    locks: contextlib.ExitStack

    def __enter__(self) -> "ReleasesLocks":
        return self

    def __exit__(self, *exc) -> None:
        self.locks.close()


@dataclass
class StageOneRun(ReleasesLocks):
    """One rank's stage-one run. :meth:`setup` builds it (config, models, dataset, store, the work list),
    :meth:`label_images` labels the work list into the store, :meth:`finish` packs and reports.

    ``timed`` and ``progress_hook`` (called with the number of images done) are for benchmarks."""

    cfg: PseudoLabelConfig
    cam: SkipCAM
    refiner: SAMRefiner | None
    store: RunStore
    device: str
    rank: int
    world: int
    random_weights: bool
    log: RunLog                         # <out>/run.log
    todo: list[Sample]                  # this rank's images not yet in a shard
    already_done: int                   # this rank's images found in the shards
    failures: list[dict]                # images left out: by the dataset (rank 0), unreadable or failing ones
    retries: dict[str, dict]            # images of the work list that an earlier run failed on, their entries
    batch_size: int
    workers: int
    locks: contextlib.ExitStack         # this rank's output locks (lock_output), released on leaving the run's block
    labelled: int = 0
    timed: bool = False
    progress_hook: Callable[[int], None] | None = None
    stage_seconds: collections.Counter = field(default_factory=collections.Counter)
    start: float = field(default_factory=time.perf_counter)

    @classmethod
    def setup(cls, run: RunConfig, method: MethodOptions, log: RunLog) -> "StageOneRun":
        """Config, device, dataset, this rank's output locks, models and output store, and the images it still has
        to label (each recorded in ``log``). Use the result as a context manager: leaving it releases the locks."""
        split = split_of(run)
        rank, world, local_rank = distributed()
        device, precision = device_and_precision(run, local_rank)
        cfg = method.config("voc" if run.dataset == "demo" else run.dataset, split, precision)
        log.detail("configuration", cfg.to_dict())
        log.detail("run", {k: str(v) if isinstance(v, Path) else v for k, v in asdict(run).items()})
        dataset = logged_dataset(run, split, log)
        out = output_dir(run, split)
        with lock_output(out, rank) as locks:  # before any model loads; released again if setting up fails
            (setting,) = load_settings(run, [cfg], dataset.class_set, device, log)
            log.detail("weights", weights_of(setting.cam, setting.refiner)[0])
            if isinstance(setting.cam, SAM3TextLabeller):
                log.detail("licence", SAM3_LICENCE)
            stage_one = cls.with_models(run, cfg, dataset, setting.cam, setting.refiner, out, device, log, locks)
            log.detail("environment", {"device": device, "precision": precision, "compiled encoders": run.compile,
                                       "batch size": stage_one.batch_size, "workers": stage_one.workers,
                                       "world size": world, "torch threads": torch.get_num_threads(),
                                       "versions": stage_one.store.attrs["versions"]})
            LOG.info("%s; rank %d/%d: %d images to label (%d already done%s) -> %s; %s, %s, batches of %d",
                     dataset.describe(), rank, world, len(stage_one.todo), stage_one.already_done,
                     f", {len(stage_one.retries)} failed before and retried once" if stage_one.retries else "", out,
                     device, precision, stage_one.batch_size)
            return stage_one

    @classmethod
    def with_models(cls, run: RunConfig, cfg: PseudoLabelConfig, dataset: WeakDataset, cam: SkipCAM,
                    refiner: SAMRefiner | None, out: Path, device: str, log: RunLog, locks: contextlib.ExitStack
                    ) -> "StageOneRun":
        """A run of ``cfg`` on loaded models into ``out`` (its locks, :func:`lock_output`, taken over from ``locks``):
        its store ready to write (writable, emptied on ``--overwrite``, holding no labels of another configuration,
        and on rank 0, while the others wait, what an interrupted run left packed into shards) and this rank's images
        still to label (earlier failures last)."""
        rank, world, _ = distributed()
        weights, random_weights = weights_of(cam, refiner)
        # every shard's root attributes (names and encodings: pseudolabel/storage/format.py)
        image_dir = {"image_dir": str(Path(dataset.root).resolve())} if run.dataset in ("custom", "demo") else {}
        attrs = {"dataset": dataset.name, "split": cfg.split, "config": cfg.to_dict(), "weights": weights, **image_dir,
                 "random_weights": random_weights,
                 "versions": {p: version(p) for p in ("torch", "open_clip_torch", "segment-anything", "h5py", "numpy")}}
        store = RunStore(out, rank, dataset.class_set, attrs, run.shard_size)
        store.check_writable()
        if run.overwrite and rank == 0:
            store.clear()
        barrier(world)
        # what a rerun compares before resuming: the configuration, the weights and the class set
        store.check_config(run_identity(cfg.to_dict(), weights, dataset.class_set.to_json()), run.overwrite)
        if rank == 0 and (recovered := store.recover()):
            LOG.info("packed %d image(s) finished by an interrupted run", recovered)
        barrier(world)
        log.attach()                    # the output directory exists and is writable
        mine = dataset.samples[: run.limit][rank::world]   # limit None: all
        done = store.finished()
        failed_before = previous_failures(store.out)
        todo = [s for s in mine if s.image_id not in done]
        retries = {s.image_id: failed_before[s.image_id] for s in todo if s.image_id in failed_before}
        # images that failed before go last and alone (batch size 1): a known bad image never holds up a batch
        todo = [s for s in todo if s.image_id not in retries] + [s for s in todo if s.image_id in retries]
        return cls(cfg=cfg, cam=cam, refiner=refiner, store=store, device=device, rank=rank,
                   world=world, random_weights=random_weights, log=log, todo=todo, already_done=len(mine) - len(todo),
                   failures=[dict(p, stage="dataset") for p in dataset.problems] if rank == 0 else [], retries=retries,
                   batch_size=run.batch_size or default_batch_size(torch.device(device)),
                   workers=run.workers or default_workers(torch.device(device)), locks=locks.pop_all())

    def label_images(self) -> None:
        """Label the work list into the store (:func:`label_runs` of this run alone)."""
        for runs, labeller in labellers([self], [Setting(self.cam, self.refiner)], self.device, self.timed):
            label_runs(runs, labeller, self.progress_hook)

    def stage(self, record: LabelRecord | PendingRecord) -> None:
        """Stage one finished image (the writer thread, which waits here for a batch's copies from the GPU)."""
        self.store.stage(record.result() if isinstance(record, PendingRecord) else record)
        self.labelled += 1

    def record_failure(self, failure: ImageFailure) -> None:
        """Add a failure; an image that failed before keeps its count of attempts and the earlier reason."""
        LOG.warning("skipped %s: %s", failure.sample.image_id, failure.reason)
        entry = {"image_id": failure.sample.image_id, "path": failure.path, "reason": failure.reason,
                 "stage": failure.stage, "attempts": 1}
        if earlier := self.retries.get(failure.sample.image_id):
            entry["attempts"] = int(earlier.get("attempts", 1)) + 1
            if earlier.get("reason") != failure.reason:
                entry["earlier_reason"] = earlier.get("reason")
        self.failures.append(entry)

    def summary(self, wall: float) -> dict:
        """This rank's totals after ``wall`` seconds: images labelled, failures, throughput, ms per image by stage
        (:data:`pseudolabel.pipeline.STAGES`; the parts of the per-image stages under ``ms_per_image_detail``)."""
        per_image = {k: round(1000 * v / max(self.labelled, 1), 1) for k, v in self.stage_seconds.items()}
        return {"rank": self.rank, "images": self.labelled, "already_done": self.already_done,
                "failures": len(self.failures), "wall_seconds": round(wall, 2),
                "images_per_second": round(self.labelled / wall, 3) if wall else None,
                "ms_per_image": {k: per_image[k] for k in STAGES if k in per_image},
                "ms_per_image_detail": {k: v for k, v in per_image.items() if k not in STAGES},
                "device": self.device, "precision": self.cfg.precision, "batch_size": self.batch_size,
                "random_weights": self.random_weights}

    def finish(self) -> dict:
        """:meth:`close`, then print the totals (rank 0: the manifest's too). Returns the summary."""
        summary, manifest = self.close(time.perf_counter() - self.start)
        if manifest is not None:
            damaged = manifest["damaged"] and f", {len(manifest['damaged'])} damaged shard(s) set aside in damaged/"
            print(f"\nstage one done: {manifest['num_images']} images in {len(manifest['shards'])} shard(s), "
                  f"{len(manifest['failures'])} failure(s){damaged or ''} -> {self.store.out}")
        print(f"rank {self.rank}: {summary['images']} labelled this run ({self.already_done} already done), "
              f"{len(self.failures)} failed, {summary['wall_seconds']:.1f} s, ms/image by stage "
              f"{summary['ms_per_image']}")
        if self.random_weights:
            print(RANDOM_WEIGHTS_NOTE, file=sys.stderr)
        return summary

    def close(self, wall: float) -> tuple[dict, dict | None]:
        """Pack what is staged, write this rank's failures and its summary after ``wall`` seconds, and (rank 0, once
        every rank is here) the manifest. Returns the summary and the manifest (None on other ranks)."""
        tick = time.perf_counter()
        self.store.pack()
        self.stage_seconds["write"] += time.perf_counter() - tick
        summary = self.summary(wall)
        self.log.detail(f"{len(self.failures)} failure(s)", self.failures or None,
                        level=logging.WARNING if self.failures else logging.INFO)
        self.log.detail("summary (ms per image by stage, throughput)", summary)
        self.store.write_json(f"failures-r{self.rank:03d}.json", self.failures)
        self.store.write_json(f"summary-r{self.rank:03d}.json", summary)
        barrier(self.world)
        return summary, self.store.write_manifest(self.world) if self.rank == 0 else None


def labellers(runs: list[StageOneRun], settings: list[Setting], device: str, timed: bool = False
              ) -> list[tuple[list[StageOneRun], Labeller | SAM3TextLabeller]]:
    """The runs (``settings``: theirs, in order) by what labels them: one :class:`Labeller` of every CEP setting,
    which computes what they share once, and SAM 3's own labeller for each ``--labeller sam3-text`` run."""
    cep = [i for i, s in enumerate(settings) if not isinstance(s.cam, SAM3TextLabeller)]
    groups = [([runs[i] for i in cep], Labeller([settings[i] for i in cep], device, timed=timed))] if cep else []
    return groups + [([run], s.cam) for run, s in zip(runs, settings) if isinstance(s.cam, SAM3TextLabeller)]


def label_runs(runs: list[StageOneRun], labeller, progress_hook: Callable[[int], None] | None = None) -> None:
    """The labelling loop of one or more runs on one rank (a sweep's rows; ``labeller``'s settings are the runs', in
    order): the images some run still needs through ``labeller.label_all``, each finished image staged in its run's
    store by a background writer, a failure recorded in its run; the images an earlier run failed on go last, one at
    a time. ``progress_hook`` is called with the number of images done."""
    todo = [{s.image_id for s in run.todo} for run in runs]
    images = list({s.image_id: s for run in runs for s in run.todo}.values())
    retried = {image_id for run in runs for image_id in run.retries}
    fresh = [s for s in images if s.image_id not in retried]
    again = [s for s in images if s.image_id in retried]
    progress = tqdm(total=len(images), desc=f"rank {runs[0].rank}", unit="img", dynamic_ncols=True)
    with contextlib.ExitStack() as writing:
        writers = [writing.enter_context(BackgroundWriter(run.stage, depth=max(32, 4 * run.batch_size)))
                   for run in runs]
        try:
            for samples, batch_size in ((fresh, runs[0].batch_size), (again, 1)):
                for results in labeller.label_all(samples, batch_size, runs[0].workers, deferred=True, wanted=todo):
                    for run, writer, result in zip(runs, writers, results):
                        if isinstance(result, ImageFailure):
                            run.record_failure(result)
                        elif result is not None:
                            writer.put(result)
                    progress.update()
                    if progress_hook:
                        progress_hook(progress.n)
        finally:
            progress.close()
            for run, seconds in zip(runs, labeller.seconds):
                run.stage_seconds.update(seconds)
    for run, writer in zip(runs, writers):
        run.stage_seconds["write"] += writer.seconds


def run(argv: list[str] | None = None) -> dict:
    """Parse options, label every image of this rank's share, and return this rank's summary."""
    args = build_parser().parse_args(argv)
    run_config = RunConfig.from_args(args)
    console_logging()
    rank, world, _ = distributed()
    with RunLog(output_dir(run_config, split_of(run_config)), rank, world) as log, \
            StageOneRun.setup(run_config, MethodOptions.from_args(args), log) as stage_one:
        stage_one.label_images()
        return stage_one.finish()


@tool_main(OutputError, FileNotFoundError, ValueError, RuntimeError)
def main(argv: list[str] | None = None) -> int:
    """``tools/gen_pseudo.sh``: exit status 0, 2 (an error, one line) or 130 (interrupted)."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
