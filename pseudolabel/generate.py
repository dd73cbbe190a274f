"""Stage one: Skip-CAM maps and SAM-refined pseudo labels for every image of a dataset, written to HDF5 shards.

Run through ``tools/gen_pseudo.sh voc|coco|custom|demo`` (or ``python -m pseudolabel.generate``). Under ``torchrun``
each rank takes a disjoint share of the images and writes its own shards; rank 0 writes the manifest at the end.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pseudolabel.cam.clip_models import openai_weights_cached
from pseudolabel.classes import DATA_DIR, ClassSet, get_class_set
from pseudolabel.cli_options import add_dataclass_options, program_name
from pseudolabel.config import PseudoLabelConfig, config_from_args
from pseudolabel.datasets import DEFAULT_SPLITS, Sample, WeakDataset, build_dataset
from pseudolabel.image_io import ImageReadError, read_rgb
from pseudolabel.storage.class_stats import ClassStats
from pseudolabel.storage.run_log import RunLog
from pseudolabel.storage.run_store import OutputError, RunStore
from pseudolabel.sam.models import SAM_VARIANTS, cache_dir
from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner
from pseudolabel.storage.shards import LabelRecord
from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig

LOG = logging.getLogger("pseudolabel.generate")
DEMO_DIR = DATA_DIR / "demo"
BANNER = "!" * 78


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
                    "Rerunning the same command resumes an interrupted run.\n"
                    "The method, every option's role and the paper's tables as commands: docs/method.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=("voc", "coco", "custom", "demo"), help="what to label")
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, help="output directory (default: outputs/<dataset>_<split>, outputs/demo for "
                                              "the demo, in the checkout; in the working directory when installed)")
    run.add_argument("--split", help="split (default: voc train_aug, coco train, custom/demo all)")
    run.add_argument("--data-root", type=Path, help="dataset root (default: data/VOCdevkit/VOC2012, data/coco)")
    run.add_argument("--label-source", choices=("xml", "mask"), default="xml",
                     help="VOC image-level labels from Annotations XML (default) or from GT masks (as WeCLIP)")
    run.add_argument("--images", type=Path, help="custom: folder of images")
    run.add_argument("--labels", type=Path, help="custom: CSV (image_id,classes) or JSON tag list")
    run.add_argument("--classes", type=Path, help="custom: class list (.txt one per line, or .json)")
    run.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda")
    run.add_argument("--shard-size", type=int, default=200, help="images per shard file (default: 200)")
    run.add_argument("--workers", type=int, default=2, help="image-decoding threads (default: 2)")
    run.add_argument("--limit", type=int, help="only the first N images of the split (quick checks)")
    run.add_argument("--overwrite", action="store_true", help="delete earlier outputs in --out and start again")
    add_dataclass_options(parser, SkipCAMConfig, "Skip-CAM (stage one, part 1)")
    add_dataclass_options(parser, SAMRefineConfig, "SAM refinement (stage one, part 2)")
    return parser


def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a download host answers at all (the demo falls back to random weights when not)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
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


def load_dataset(args, name: str, split: str):
    if name == "demo":
        if not (DEMO_DIR / "tags.json").is_file():
            raise FileNotFoundError(f"the demo photos are not in '{DEMO_DIR}': they come with the source checkout "
                                    "(data/demo); run the demo from the checkout (tools/gen_pseudo.sh demo) or from a "
                                    "folder holding data/demo")
        return build_dataset("custom", DEMO_DIR / "images", split, labels=DEMO_DIR / "tags.json",
                             classes=get_class_set("voc"), name="demo")
    if name == "custom":
        return build_dataset("custom", args.images or args.data_root, split, labels=args.labels, classes=args.classes)
    options = {"label_source": args.label_source} if name == "voc" else {}
    return build_dataset(name, args.data_root, split, **options)


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; a gloo group for the barriers."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return rank, world, int(os.environ.get("LOCAL_RANK", 0))


def barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def prefetch(samples, workers: int):
    """Yield ``(sample, image or ImageReadError, seconds)`` in order, decoding ahead in threads."""
    def read(sample):
        start = time.perf_counter()
        try:
            return read_rgb(sample.image_path), time.perf_counter() - start
        except ImageReadError as error:
            return error, time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        queue = collections.deque()
        iterator = iter(samples)
        for sample in iterator:
            queue.append((sample, pool.submit(read, sample)))
            if len(queue) >= 2 * max(1, workers):
                break
        while queue:
            sample, future = queue.popleft()
            nxt = next(iterator, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(read, nxt)))
            yield (sample, *future.result())


def resolve_device(device: str, local_rank: int) -> str:
    """``--device``: ``auto`` is this rank's GPU when there is one, else the CPU."""
    if device == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return device


def load_models(cfg: PseudoLabelConfig, class_set: ClassSet, device: str) -> tuple[SkipCAM, SAMRefiner | None]:
    """Skip-CAM and, when refinement is on, the SAM refiner."""
    cam = SkipCAM.from_config(cfg.cam, class_set, device)
    refiner = SAMRefiner.from_config(cfg.refine, device, cfg.cam.seed) if cfg.refine.enabled else None
    return cam, refiner


def split_of(args: argparse.Namespace) -> str:
    """The split to label: ``--split`` or the dataset's default."""
    return args.split or DEFAULT_SPLITS.get(args.dataset, "all")


def output_dir(args: argparse.Namespace, split: str) -> Path:
    """``--out``, or ``outputs/<dataset>_<split>`` (``outputs/demo`` for the demo) in the checkout (an installed
    package: in the working directory)."""
    name = args.dataset if args.dataset == "demo" else f"{args.dataset}_{split}"
    return args.out or DATA_DIR.parent / "outputs" / name


def shard_attributes(cfg: PseudoLabelConfig, dataset: WeakDataset, weights: dict, random_weights: bool,
                     with_image_dir: bool) -> dict:
    """The run's root attributes of every shard (names and encodings: ``pseudolabel/storage/format.py``)."""
    image_dir = {"image_dir": str(Path(dataset.root).resolve())} if with_image_dir else {}
    return {"dataset": dataset.name, "split": cfg.split, "config": cfg.to_dict(), "weights": weights, **image_dir,
            "random_weights": random_weights,
            "versions": {p: version(p) for p in ("torch", "open_clip_torch", "segment-anything", "h5py", "numpy")}}


def open_store(args: argparse.Namespace, out: Path, rank: int, world: int, class_set: ClassSet, attrs: dict,
               config: dict) -> RunStore:
    """This rank's output store, ready to write: writable, emptied on ``--overwrite``, holding no labels of another
    config, and (rank 0, while the others wait) what an interrupted run left packed into shards."""
    store = RunStore(out, rank, class_set, attrs, args.shard_size)
    store.check_writable()
    if args.overwrite and rank == 0:
        store.clear()
    barrier(world)
    store.check_config(config, args.overwrite)
    if rank == 0:
        recovered = store.recover()
        if recovered:
            LOG.info("packed %d image(s) finished by an interrupted run", recovered)
    barrier(world)
    return store


@dataclass
class StageOneRun:
    """One rank's stage-one run. :meth:`setup` builds it (config, models, dataset, store, the work list),
    :meth:`label_images` labels the work list into the store, :meth:`finish` packs and reports."""

    args: argparse.Namespace
    cfg: PseudoLabelConfig
    dataset: WeakDataset
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
    failures: list[dict]                # images left out: by the dataset (rank 0) and unreadable ones
    stage_seconds: collections.Counter = field(default_factory=collections.Counter)
    start: float = field(default_factory=time.perf_counter)

    @classmethod
    def setup(cls, args: argparse.Namespace, log: RunLog) -> "StageOneRun":
        """Config, device, dataset, models and output store of this rank, and the images it still has to label
        (each recorded in ``log``)."""
        split = split_of(args)
        cfg = config_from_args(args, "voc" if args.dataset == "demo" else args.dataset, split)
        log.detail("configuration", cfg.to_dict())
        notes = demo_weights(cfg) if args.dataset == "demo" else []
        rank, world, local_rank = distributed()
        device = resolve_device(args.device, local_rank)
        dataset = load_dataset(args, args.dataset, split)
        log.detail("dataset", {"name": dataset.name, "split": split, "root": dataset.root, "images": len(dataset),
                               "left out": dataset.problems})
        out = output_dir(args, split)
        cam, refiner = load_models(cfg, dataset.class_set, device)
        weights = {"clip": cam.weights, "sam": refiner.weights if refiner else None}
        random_weights = any(w and w.get("kind") == "random" for w in weights.values())
        log.detail("weights", weights)
        if random_weights:
            print(f"{BANNER}\n!! RANDOM WEIGHTS: {'; '.join(notes) or 'requested'}.\n!! The pipeline runs end to end "
                  f"with seeded random weights; the labels are NOT meaningful.\n{BANNER}", file=sys.stderr)
            log.detail(f"RANDOM WEIGHTS: {'; '.join(notes) or 'requested'}; the labels are not meaningful",
                       level=logging.WARNING)
        attrs = shard_attributes(cfg, dataset, weights, random_weights,
                                 with_image_dir=args.dataset in ("custom", "demo"))
        log.detail("environment", {"device": device, "world size": world, "torch threads": torch.get_num_threads(),
                                   "versions": attrs["versions"]})
        store = open_store(args, out, rank, world, dataset.class_set, attrs, {**cfg.to_dict(), "weights": weights})
        log.attach()                    # the output directory exists and is writable
        mine = dataset.samples[: args.limit][rank::world] if args.limit else dataset.samples[rank::world]
        done = store.finished()
        todo = [s for s in mine if s.image_id not in done]
        LOG.info("%s; rank %d/%d: %d images to label (%d already done) -> %s", dataset.describe(), rank, world,
                 len(todo), len(mine) - len(todo), out)
        return cls(args=args, cfg=cfg, dataset=dataset, cam=cam, refiner=refiner, store=store, device=device,
                   rank=rank, world=world, random_weights=random_weights, log=log, todo=todo,
                   already_done=len(mine) - len(todo),
                   failures=[dict(p, stage="dataset") for p in dataset.problems] if rank == 0 else [])

    def label_images(self) -> None:
        """The labelling loop: every image of the work list, decoded ahead in threads, labelled and staged in the
        store; an unreadable image becomes a failure."""
        progress = tqdm(total=len(self.todo), desc=f"rank {self.rank}", unit="img", dynamic_ncols=True)
        for sample, image, decode_seconds in prefetch(self.todo, self.args.workers):
            self.stage_seconds["decode"] += decode_seconds
            if isinstance(image, ImageReadError):
                self.failures.append({"image_id": sample.image_id, "path": image.path, "reason": image.reason,
                                      "stage": "read"})
                LOG.warning("skipped %s: %s", sample.image_id, image.reason)
            else:
                record = self.label(sample, image)
                tick = time.perf_counter()
                self.store.stage(record)
                self.stage_seconds["write"] += time.perf_counter() - tick
            progress.update()
        progress.close()

    def label(self, sample: Sample, image: np.ndarray) -> LabelRecord:
        """Skip-CAM's Y0 and localization maps, then SAM refinement (when on), of one decoded image."""
        cam_out = self.cam(image, sample.class_ids)
        self.stage_seconds["skipcam"] += sum(cam_out.timings.values())
        refinement = self.refiner.refine(image, cam_out.y0, cam_out.scores, sample.class_ids) if self.refiner \
            else None
        self.stage_seconds["sam"] += sum(refinement.timings.values()) if refinement else 0.0
        refined = refinement.labels if refinement else cam_out.y0
        stats = ClassStats.measure(sample.class_ids, cam_out.y0, refined, refinement and refinement.prompts,
                                   refinement and refinement.masks_accepted)
        return LabelRecord(image_id=sample.image_id, refined=refined, initial=cam_out.y0,
                           loc_maps_lowres=cam_out.loc_maps_lowres, loc_class_ids=cam_out.class_ids,
                           class_ids=sample.class_ids, size=image.shape[:2], class_stats=stats)

    def summary(self, wall: float) -> dict:
        """This rank's totals after ``wall`` seconds: images labelled, failures, throughput, ms per image by stage."""
        labelled = len(self.todo) - sum(f["stage"] == "read" for f in self.failures)
        return {"rank": self.rank, "images": labelled, "already_done": self.already_done,
                "failures": len(self.failures), "wall_seconds": round(wall, 2),
                "images_per_second": round(labelled / wall, 3) if wall else None,
                "ms_per_image": {k: round(1000 * v / max(labelled, 1), 1) for k, v in self.stage_seconds.items()},
                "device": self.device, "random_weights": self.random_weights}

    def finish(self) -> dict:
        """Pack what is staged, write this rank's failures and summary, the manifest (rank 0, once every rank is
        done) and print the totals. Returns the summary."""
        tick = time.perf_counter()
        self.store.pack()
        self.stage_seconds["write"] += time.perf_counter() - tick
        wall = time.perf_counter() - self.start
        summary = self.summary(wall)
        self.log.detail(f"{len(self.failures)} failure(s)", self.failures or None,
                        level=logging.WARNING if self.failures else logging.INFO)
        self.log.detail("summary (ms per image by stage, throughput)", summary)
        self.store.write_json(f"failures-r{self.rank:03d}.json", self.failures)
        self.store.write_json(f"summary-r{self.rank:03d}.json", summary)
        barrier(self.world)
        if self.rank == 0:
            manifest = self.store.write_manifest(self.world)
            print(f"\nstage one done: {manifest['num_images']} images in {len(manifest['shards'])} shard(s), "
                  f"{len(manifest['failures'])} failure(s) -> {self.store.out}")
        print(f"rank {self.rank}: {summary['images']} labelled this run ({self.already_done} already done), "
              f"{len(self.failures)} failed, {wall:.1f} s, ms/image by stage {summary['ms_per_image']}")
        if self.random_weights:
            print("NOTE: produced with RANDOM weights (recorded as random_weights=True in the shards).",
                  file=sys.stderr)
        return summary


def run(argv: list[str] | None = None) -> dict:
    """Parse options, label every image of this rank's share, and return this rank's summary."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    rank, world, _ = distributed()
    with RunLog(output_dir(args, split_of(args)), rank, world) as log:
        stage_one = StageOneRun.setup(args, log)
        stage_one.label_images()
        return stage_one.finish()


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except (OutputError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
