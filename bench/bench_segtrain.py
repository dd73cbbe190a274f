"""Stage-two speed: training iterations/s of the VOC configs on this machine, and data-loading images/s with labels
read from shards vs from palette PNGs (0, 2, 4 workers). One command, prints tables:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_segtrain.py [--iters 2] [--images 96] [--configs CONFIG ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402
import segtrain  # noqa: F401  (shims + registrations)
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules
from PIL import Image

from pseudolabel.classes import get_class_set, pascal_palette
from pseudolabel.image_io import write_label_png
from pseudolabel.storage.shards import LabelRecord, ShardWriter
from segtrain.pretrained import drop_pretrained

VOC_CONFIG = Path(__file__).resolve().parents[1] / "segtrain/configs/deeplabv3plus_r101-d8_4xb4-20k_voc12aug-pseudo-512x512.py"


def bench_training(config: Path, iters: int, batch: int = 2, crop: int = 512) -> tuple[float, str]:
    """Seconds per iteration (after one warm-up) of a config's model, random init, its optimizer as configured."""
    cfg = Config.fromfile(config)
    drop_pretrained(cfg.model)
    model = MODELS.build(cfg.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(rng.integers(0, 255, (3, crop, crop), dtype=np.uint8)) for _ in range(batch)]
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(crop, crop), ori_shape=(crop, crop), pad_shape=(crop, crop)))
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(rng.integers(0, 21, (1, crop, crop))).long())
        samples.append(sample)
    data = dict(inputs=inputs, data_samples=samples)
    model.train_step(data, optim)  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        model.train_step(data, optim)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters, device


def make_data(root: Path, count: int, size=(375, 500)) -> None:
    """JPEG images, palette PNG labels and one shard with the same labels."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "shards").mkdir()
    rng = np.random.default_rng(0)
    attrs = {"dataset": "voc", "split": "train", "config": {}, "versions": {}, "weights": {}, "random_weights": False}
    with ShardWriter(root / "shards" / "shard-r000-00000.h5", get_class_set("voc"), attrs) as writer:
        for i in range(count):
            image_id = f"img_{i:05d}"
            image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
            labels = np.zeros(size, np.uint8)   # blocky labels compress like real ones
            for _ in range(3):
                y, x = rng.integers(0, size[0] - 100), rng.integers(0, size[1] - 100)
                labels[y:y + 150, x:x + 200] = rng.integers(1, 21)
            write_label_png(root / "labels" / f"{image_id}.png", labels, pascal_palette())
            writer.write(LabelRecord(image_id=image_id, refined=labels, initial=labels,
                                     loc_maps_lowres=np.zeros((0, 2, 2), np.float32), loc_class_ids=(), class_ids=(),
                                     size=size))


def dataset(root: Path, source: str, full: bool):
    label = dict(type="LoadShardLabel") if source == "shards" else dict(type="LoadAnnotations")
    pipeline = [dict(type="LoadImageFromFile"), label] if full else [label]
    if full:
        pipeline += [dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
                     dict(type="RandomCrop", crop_size=(512, 512), cat_max_ratio=0.75),
                     dict(type="RandomFlip", prob=0.5), dict(type="PackSegInputs")]
    if source == "shards":
        return DATASETS.build(dict(type="ShardPseudoLabelDataset", shards_dir=str(root / "shards"),
                                   data_root=str(root), data_prefix=dict(img_path="JPEGImages"), pipeline=pipeline))
    return DATASETS.build(dict(type="ClassSetSegDataset", data_root=str(root), pipeline=pipeline, img_suffix=".jpg",
                               data_prefix=dict(img_path="JPEGImages", seg_map_path="labels")))


def bench_loading(root: Path, source: str, workers: int, full: bool) -> float:
    """Images per second through a DataLoader (batch 8), steady state: the second pass over persistent workers."""
    data = dataset(root, source, full)
    loader = torch.utils.data.DataLoader(data, batch_size=8, num_workers=workers, collate_fn=pseudo_collate,
                                         persistent_workers=workers > 0)
    for _ in loader:   # warm-up: workers start and open their files
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(data) / (time.perf_counter() - start)


def bench_label_transform(root: Path, source: str) -> float:
    """Microseconds per image for the label-loading transform alone (no dataset, loader or collate), best of 3."""
    data = dataset(root, source, full=False)
    transform, infos = data.pipeline.transforms[0], [data.get_data_info(i) for i in range(len(data))]
    transform(dict(infos[0], seg_fields=[]))  # opens the files
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for info in infos:
            transform(dict(info, seg_fields=[]))
        best = min(best, time.perf_counter() - start)
    return 1e6 * best / len(infos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2, help="timed training iterations")
    parser.add_argument("--images", type=int, default=96, help="images for the loading benchmark")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--configs", nargs="+", type=Path, default=[VOC_CONFIG],
                        help="configs whose model trains (default: the VOC DeepLabV3+ R101; e.g. also "
                             "segtrain/configs/segformer_mit-b5_4xb4-40k_voc12aug-pseudo-512x512.py)")
    args = parser.parse_args()
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}, CPUs: {torch.multiprocessing.cpu_count()}")
    if not args.skip_training:
        print("\n| model (random init) | device | batch x crop | s/iter | iter/s |\n|---|---|---|---|---|")
        for config in args.configs:
            seconds, device = bench_training(config, args.iters)
            print(f"| {config.stem} | {device} | 2 x 512^2 | {seconds:.2f} | {1 / seconds:.3f} |")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_data(root, args.images)
        print("\n| label transform alone | µs/image |\n|---|---|")
        for source, transform in (("shards", "LoadShardLabel"), ("png", "LoadAnnotations")):
            print(f"| {transform} ({source}) | {bench_label_transform(root, source):.0f} |")
        print(f"\n| pipeline | labels from | workers | images/s |\n|---|---|---|---|")
        for full in (False, True):
            for workers in (0, 2, 4):
                for source in ("shards", "png"):
                    rate = bench_loading(root, source, workers, full)
                    name = "full train pipeline (JPEG + label + aug)" if full else "label only"
                    print(f"| {name} | {source} | {workers} | {rate:.0f} |")


if __name__ == "__main__":
    main()
