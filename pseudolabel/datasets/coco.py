"""MS COCO 2014 with image-level labels from the instances JSON and the 81-class (background + 80) mapping."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from pseudolabel.classes import IGNORE_INDEX, get_class_set
from pseudolabel.datasets.base import Sample, WeakDataset, data_root, require_dir

COCO_SPLITS = ("train", "val")
FIX_ROOT = ("Put train2014/, val2014/ and annotations/instances_{train,val}2014.json there, pass --data-root, "
            "or run: tools/prepare_data.sh coco")


class COCODataset(WeakDataset):
    """COCO 2014 ``train`` (82,081) or ``val`` (40,137).

    Image-level labels: every annotated category of the image (crowd annotations included). GT masks for evaluation:
    VOC-style PNGs in ``SegmentationClass/<split>2014/`` when that folder exists (what peers use), otherwise rendered
    from the instances (larger objects first, so small ones stay visible; crowd regions = 255).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train"):
        if split not in COCO_SPLITS:
            raise ValueError(f"unknown COCO split '{split}'; choose one of {COCO_SPLITS}")
        from pycocotools.coco import COCO

        root = Path(root) if root else data_root() / "coco"
        require_dir(root, "MS COCO 2014", FIX_ROOT)
        ann_file = root / "annotations" / f"instances_{split}2014.json"
        if not ann_file.is_file():
            raise FileNotFoundError(f"annotation file '{ann_file}' does not exist. {FIX_ROOT}")
        class_set = get_class_set("coco")
        self.category_to_class = {cat: i + 1 for i, cat in enumerate(class_set.category_ids)}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.coco = COCO(str(ann_file))
        unknown = set(self.coco.getCatIds()) - set(self.category_to_class)
        if unknown:
            raise ValueError(f"{ann_file}: unknown category ids {sorted(unknown)}; expected the 80 COCO 2014 categories")
        self.png_dir = root / "SegmentationClass" / f"{split}2014"
        samples, problems = [], []
        for image_id in sorted(self.coco.getImgIds()):
            info = self.coco.imgs[image_id]
            name = Path(info["file_name"]).stem
            image_path = root / f"{split}2014" / info["file_name"]
            anns = self.coco.imgToAnns.get(image_id, [])
            class_ids = tuple(sorted({self.category_to_class[a["category_id"]] for a in anns}))
            if not class_ids:
                problems.append({"image_id": name, "path": str(image_path),
                                 "reason": "no annotated object; an image-level label is required"})
                continue
            gt_path = self.png_dir / f"{name}.png"
            samples.append(Sample(name, image_path, class_ids, gt_path if gt_path.is_file() else None))
        self._coco_ids = {Path(self.coco.imgs[i]["file_name"]).stem: i for i in self.coco.getImgIds()}
        super().__init__("coco", split, class_set, root, samples, problems)

    def read_gt(self, image_id: str) -> np.ndarray | None:
        """GT label map: the VOC-style PNG when present, else rendered from the instance annotations."""
        sample = self.by_id(image_id)
        if sample.gt_path is not None:
            return super().read_gt(image_id)
        return self.render_mask(self._coco_ids[image_id])

    def render_mask(self, coco_image_id: int) -> np.ndarray:
        """Semantic mask of one image from its instances (uint8, 0 background, 255 crowd)."""
        info = self.coco.imgs[coco_image_id]
        labels = np.zeros((info["height"], info["width"]), np.uint8)
        anns = sorted(self.coco.imgToAnns.get(coco_image_id, []), key=lambda a: -a["area"])
        for ann in anns:
            mask = self.coco.annToMask(ann).astype(bool)
            labels[mask] = IGNORE_INDEX if ann.get("iscrowd") else self.category_to_class[ann["category_id"]]
        return labels
