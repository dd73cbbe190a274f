"""Where images, their image-level tags and their GT come from: one reader class per format (``VOCDataset``,
``COCODataset``, ``CustomDataset`` for a folder of photos with a CSV/JSON tag list), each a sequence of ``Sample``
(image path, foreground class ids, GT path) with the images it left out and why, and ``build_dataset`` to get one by
name. Stage one reads only the tags; GT label maps are read only for evaluation. Layouts: docs/datasets.md."""
from __future__ import annotations

from pathlib import Path

from pseudolabel.datasets.base import Sample, WeakDataset, data_root
from pseudolabel.datasets.coco import COCODataset
from pseudolabel.datasets.custom import CustomDataset, find_image
from pseudolabel.datasets.voc import VOCDataset

DATASETS = ("voc", "coco", "custom")
DEFAULT_SPLITS = {"voc": "train_aug", "coco": "train", "custom": "all"}


def build_dataset(dataset: str, root: str | Path | None = None, split: str | None = None, **options) -> WeakDataset:
    """A dataset by name: ``voc``, ``coco`` or ``custom`` (split None: its default split).

    Options: VOC ``label_source``; custom ``labels``, ``classes`` (file or ClassSet), optional ``images`` (else
    ``root`` is the images folder), ``gt_dir`` and ``name``. See docs/datasets.md.
    """
    split = split or DEFAULT_SPLITS.get(dataset)
    if dataset == "voc":
        return VOCDataset(root, split, **options)
    if dataset == "coco":
        return COCODataset(root, split, **options)
    if dataset == "custom":
        images = options.pop("images", None) or root
        if images is None or "labels" not in options or "classes" not in options:
            raise ValueError("the custom dataset needs --images DIR, --labels FILE (CSV/JSON) and --classes FILE")
        return CustomDataset(images, split=split, **options)
    raise ValueError(f"unknown dataset '{dataset}'; choose one of {DATASETS}")


__all__ = ["DATASETS", "DEFAULT_SPLITS", "Sample", "WeakDataset", "VOCDataset", "COCODataset", "CustomDataset",
           "build_dataset", "data_root", "find_image"]
