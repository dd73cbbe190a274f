"""Dataset readers: image-level labels for training, GT masks only for evaluation."""
from __future__ import annotations

from pathlib import Path

from pseudolabel.datasets.base import Sample, WeakDataset, data_root
from pseudolabel.datasets.coco import COCODataset
from pseudolabel.datasets.custom import CustomDataset
from pseudolabel.datasets.voc import VOCDataset

DATASETS = ("voc", "coco", "custom")
DEFAULT_SPLITS = {"voc": "train_aug", "coco": "train", "custom": "all"}


def build_dataset(name: str, root: str | Path | None = None, split: str | None = None, **options) -> WeakDataset:
    """A dataset by name. ``custom`` needs ``images``, ``labels`` and ``classes`` (and optional ``gt_dir``) options;
    ``root`` is then the images folder if ``images`` is not given."""
    split = split or DEFAULT_SPLITS.get(name)
    if name == "voc":
        return VOCDataset(root, split, **options)
    if name == "coco":
        return COCODataset(root, split, **options)
    if name == "custom":
        images = options.pop("images", None) or root
        if images is None or "labels" not in options or "classes" not in options:
            raise ValueError("the custom dataset needs --images DIR, --labels FILE (CSV/JSON) and --classes FILE")
        return CustomDataset(images, split=split, **options)
    raise ValueError(f"unknown dataset '{name}'; choose one of {DATASETS}")


__all__ = ["Sample", "WeakDataset", "VOCDataset", "COCODataset", "CustomDataset", "build_dataset", "data_root"]
