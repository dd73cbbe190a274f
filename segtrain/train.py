"""Train a segmenter on stage-one shards with mmengine's Runner (``tools/train_seg.sh``; ``python -m segtrain.train``).

The work dir is locked first (one training per work dir; the lock file records the holder). Before the Runner starts,
the shards are verified and checked against the config (classes, dataset, images present; failures and random weights
are warned about), the pretrained backbone is fetched (or dropped with ``--no-pretrained``) and the package versions
are written to ``<work dir>/versions.json`` (mmengine writes the config there itself). A checkpoint to resume from or
to start from (``load_from``) must fit the model (:mod:`segtrain.checkpoint_fit`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import segtrain  # noqa: F401  (shims + registrations before mmseg builds anything)
from mmengine.config import Config, DictAction
from mmengine.runner import Runner, find_latest_checkpoint
from mmseg.registry import DATASETS

from pseudolabel.checkpoints import CheckpointError, refusal
from pseudolabel.cli_options import bounds_text, within
from pseudolabel.console import hide_foreign_log_lines
from pseudolabel.exits import OutputError, guard_write, tool_main
from pseudolabel.storage.lock import OutputLock
from pseudolabel.storage.shards import ShardError, open_shards
from segtrain.checkpoint_fit import CheckpointMismatchError, check_checkpoint_fits
from segtrain.config import read_config
from segtrain.datasets import ShardMismatchError, check_class_names, check_shards, class_names
from segtrain.pretrained import PretrainedUnavailableError, drop_pretrained, ensure_pretrained

PACKAGES = ("torch", "torchvision", "numpy", "mmengine", "mmcv-lite", "mmcv", "mmsegmentation", "h5py",
            "pydensecrf2", "cep-pseudolabel")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train an MMSegmentation model on stage-one pseudo-label shards.")
    parser.add_argument("config", help="mmseg config, e.g. segtrain/configs/deeplabv3plus_r101-d8_4xb4-20k_voc12aug-pseudo-512x512.py")
    parser.add_argument("--shards", help="stage-one shard directory (default: the config's shards_dir, stage one's "
                                         "default output, e.g. outputs/voc_train_aug from tools/gen_pseudo.sh voc)")
    parser.add_argument("--work-dir", help="checkpoints, logs, config copy (default: work_dirs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the work dir")
    parser.add_argument("--no-pretrained", action="store_true", help="random init instead of ImageNet weights")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                        help="'pytorch' under torchrun for several GPUs (train_seg.sh --gpus N does this)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config entries, e.g. train_cfg.max_iters=1000 train_dataloader.batch_size=2")
    return parser


CONFIG_BOUNDS = {"train_cfg.max_iters": (1, None), "train_cfg.val_interval": (1, None),
                 "train_dataloader.batch_size": (1, None), "train_dataloader.num_workers": (0, None)}
"""Numeric config entries (and their ``--cfg-options`` overrides) with their inclusive bounds."""


def check_config_bounds(cfg: Config, parser: argparse.ArgumentParser) -> None:
    """Refuse, as the parser's one-line error, a config entry of :data:`CONFIG_BOUNDS` outside its bounds."""
    for key, (low, high) in CONFIG_BOUNDS.items():
        value = cfg
        for part in key.split("."):
            value = value.get(part) if value is not None else None
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not within(value, low, high):
            parser.error(f"--cfg-options {key}={value}: must be an integer {bounds_text(low, high)}")


def load_config(args: argparse.Namespace) -> Config:
    """The config with the command-line overrides applied."""
    if not Path(args.config).is_file():
        raise FileNotFoundError(f"config '{args.config}' does not exist; see segtrain/configs/")
    cfg = read_config(args.config)
    cfg.merge_from_dict(args.cfg_options)
    if args.shards:
        cfg.train_dataloader.dataset.shards_dir = args.shards
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(args.config).stem)
    cfg.launcher = args.launcher
    cfg.resume = args.resume
    if args.no_pretrained:
        drop_pretrained(cfg.model)
    if args.launcher != "none":
        cfg.sync_bn = "torch"   # BN in the configs (CPU/one GPU); SyncBN across GPUs
    return cfg


def configured_class_names(dataset_cfg) -> tuple[str, ...] | None:
    """Class names a dataset's config gives (``metainfo.classes`` or ``class_set``), if any."""
    names = (dataset_cfg.get("metainfo") or {}).get("classes")
    if names is None and dataset_cfg.get("class_set"):
        return class_names(dataset_cfg["class_set"])
    return tuple(names) if names is not None else None


def validation_class_names(cfg: Config) -> tuple[str, ...] | None:
    """Class names of the validation dataset (the GT the model is scored on), if the config has one."""
    val_loader = cfg.get("val_dataloader")
    if not val_loader:
        return None
    dataset_cfg = val_loader["dataset"]
    return configured_class_names(dataset_cfg) or DATASETS.get(dataset_cfg["type"]).METAINFO.get("classes")


NO_VALIDATION = "--cfg-options val_cfg=None val_dataloader=None val_evaluator=None"


def check_validation_gt(cfg: Config) -> None:
    """Fail before training when validation images lack their GT masks (else the first validation, hours in, does)."""
    val_loader = cfg.get("val_dataloader")
    if not val_loader:
        return
    dataset_cfg = val_loader["dataset"]
    fix = (f"For COCO, render the GT with tools/render_coco_gt.py --data-root {dataset_cfg.get('data_root')} (part of "
           f"tools/prepare_data.sh coco); to train without validation add {NO_VALIDATION}")
    listing = Path(dataset_cfg.get("data_root") or "") / dataset_cfg["ann_file"] if dataset_cfg.get("ann_file") else None
    if listing is not None and not listing.is_file():
        raise FileNotFoundError(f"validation image list {listing} does not exist. {fix}")
    dataset = DATASETS.build({**dataset_cfg, "pipeline": []})
    gt_paths = (dataset.get_data_info(index)["seg_map_path"] for index in range(len(dataset)))
    missing = [path for path in gt_paths if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(dataset)} validation images have no GT mask "
                                f"(e.g. {missing[0]}). {fix}")


def preflight(cfg: Config) -> dict:
    """Check the shards and the validation GT against the config before any model is built; returns the shards'
    attributes."""
    dataset_cfg = cfg.train_dataloader.dataset
    shards = open_shards(dataset_cfg.shards_dir)
    check_shards(shards, cfg.model.decode_head.num_classes, dataset_cfg.get("expected_dataset"),
                 configured_class_names(dataset_cfg))
    if (names := validation_class_names(cfg)) is not None:
        check_class_names(shards, names, "the validation set's")
    DATASETS.build({**dataset_cfg, "pipeline": []})   # lists the images: fails on images missing from the data root
    check_validation_gt(cfg)
    return shards.attrs


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_run_info(cfg: Config, shard_attrs: dict) -> None:
    """``<work dir>/versions.json``: package versions and what the shards were made with."""
    work_dir = Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    shards = {key: shard_attrs.get(key) for key in ("dataset", "split", "weights", "random_weights", "versions")}
    shards["class_set"] = shard_attrs["class_set"].name
    info = {"packages": package_versions(), "python": sys.version.split()[0], "argv": sys.argv,
            "shards_dir": str(cfg.train_dataloader.dataset.shards_dir), "shards": shards}
    path = work_dir / "versions.json"
    guard_write(lambda: path.write_text(json.dumps(info, indent=2, default=str)), path)


def starting_checkpoint(cfg: Config) -> tuple[str, str] | None:
    """``(checkpoint, role)`` the Runner will load weights from before training (as its ``load_or_resume``)."""
    if cfg.resume:
        found = cfg.get("load_from") or find_latest_checkpoint(cfg.work_dir)
        return (found, "the --resume") if found else None
    return (cfg.load_from, "the load_from") if cfg.get("load_from") else None


@tool_main(ShardMismatchError, ShardError, PretrainedUnavailableError, CheckpointError, CheckpointMismatchError,
           OutputError, FileNotFoundError, KeyError)
def main(argv: list[str] | None = None) -> int:
    """``tools/train_seg.sh``: exit status 0, 2 (an error, one line) or 130 (interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    local_rank_zero = os.environ.get("LOCAL_RANK", "0") == "0"
    cfg = load_config(args)
    check_config_bounds(cfg, parser)
    rank_zero = os.environ.get("RANK", "0") == "0"
    with OutputLock(cfg.work_dir, what="--work-dir") if rank_zero else contextlib.nullcontext():
        shard_attrs = preflight(cfg)
        if local_rank_zero and not args.no_pretrained:
            ensure_pretrained(cfg.model)   # other ranks wait inside mmengine's own download barrier
        if args.resume and find_latest_checkpoint(cfg.work_dir) is None:
            print(f"warning: --resume but no checkpoint in {cfg.work_dir}; starting from iteration 0", file=sys.stderr)
        if local_rank_zero:
            write_run_info(cfg, shard_attrs)
        runner = Runner.from_cfg(cfg)
        hide_foreign_log_lines(runner.logger)
        start = starting_checkpoint(cfg)
        try:
            if start:
                check_checkpoint_fits(runner.model, *start)
            runner.train()
        except pickle.UnpicklingError as error:  # a checkpoint fetched by mmengine (pretrained backbone)
            raise refusal(None, error) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
