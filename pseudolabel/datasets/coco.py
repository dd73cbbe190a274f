"""MS COCO 2014 with image-level labels from the instances JSON and the 81-class (background + 80) mapping."""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pseudolabel.classes import IGNORE_INDEX, get_class_set, pascal_palette
from pseudolabel.datasets.base import Sample, WeakDataset, data_root, problem, progress, require_dir
from pseudolabel.image_io import find_file, write_label_png

LOGGER = logging.getLogger(__name__)
COCO_SPLITS = ("train", "val")
FIX_ROOT = ("Put train2014/, val2014/ and annotations/instances_{train,val}2014.json there, pass --data-root, "
            "or run: tools/prepare_data.sh coco")


class COCODataset(WeakDataset):
    """COCO 2014 ``train`` (82,081 annotated images) or ``val`` (40,137).

    Image-level labels: every annotated category of the image, crowd annotations included (a crowd of people still
    shows people); category ids map to class indices 1..80 through ``category_ids`` of ``pseudolabel/class_lists/coco.json``.
    Images without any annotation are left out (``problems``). GT masks, for evaluation only: VOC-style PNGs in
    ``SegmentationClass/<split>2014/`` when present (what peers use), otherwise rendered from the instances.
    The instances JSON is read once; its annotations are kept only while some image needs its mask rendered.
    """

    def __init__(self, root: str | Path | None = None, split: str = "train"):
        if split not in COCO_SPLITS:
            raise ValueError(f"unknown COCO split '{split}'; choose one of {COCO_SPLITS}")
        root = Path(root) if root else data_root() / "coco"
        require_dir(root, "MS COCO 2014", FIX_ROOT)
        ann_file = root / "annotations" / f"instances_{split}2014.json"
        if not ann_file.is_file():
            raise FileNotFoundError(f"annotation file '{ann_file}' does not exist. {FIX_ROOT}")
        class_set = get_class_set("coco")
        self.category_to_class = {cat: i + 1 for i, cat in enumerate(class_set.category_ids)}
        coco = load_instances(ann_file)
        unknown = set(coco.getCatIds()) - set(self.category_to_class)
        if unknown:
            raise ValueError(f"{ann_file}: unknown category ids {sorted(unknown)}; "
                             "expected the 80 COCO 2014 categories")
        png_dir = root / "SegmentationClass" / f"{split}2014"
        samples, problems, self._coco_ids = [], [], {}
        for coco_id in progress(sorted(coco.getImgIds()), f"coco:{split} labels"):
            file_name = coco.imgs[coco_id]["file_name"]
            name = Path(file_name).stem
            image_path = find_file(root / f"{split}2014", file_name) or root / f"{split}2014" / file_name
            categories = {ann["category_id"] for ann in coco.imgToAnns.get(coco_id, [])}
            class_ids = tuple(sorted(self.category_to_class[cat] for cat in categories))
            if not class_ids:
                problems.append(problem(name, image_path, "no annotated object; an image-level label is required"))
            elif not image_path.is_file():
                problems.append(problem(name, image_path, f"listed in {ann_file.name} but the image is missing"))
            else:
                gt_path = find_file(png_dir, f"{name}.png")
                samples.append(Sample(name, image_path, class_ids, gt_path))
                self._coco_ids[name] = coco_id
        self._coco = coco if any(sample.gt_path is None for sample in samples) else None
        super().__init__("coco", split, class_set, root, samples, problems)

    def read_gt(self, image_id: str) -> np.ndarray | None:
        """GT label map: the VOC-style PNG when present, else rendered from the instance annotations."""
        if self.by_id(image_id).gt_path is not None:
            return super().read_gt(image_id)
        return self._render_mask(self._coco_ids[image_id])

    def write_gt_pngs(self) -> tuple[int, Path]:
        """Write the GT of every image as a VOC-style palette PNG in ``SegmentationClass/<split>2014/`` (the layout
        peers and ``segtrain``'s COCO config validate on) and the list of those images as
        ``SegmentationClass/<split>2014.txt``. PNGs already there are kept, so an interrupted run resumes. Images
        without any annotation have no GT and are not listed. Returns the number of PNGs written and the list."""
        png_dir = self.root / "SegmentationClass" / f"{self.split}2014"
        png_dir.mkdir(parents=True, exist_ok=True)
        missing = [sample for sample in self.samples if sample.gt_path is None]
        palette = pascal_palette()
        for sample in tqdm(missing, desc=f"coco:{self.split} GT PNGs", unit="img", disable=len(missing) < 100):
            path = png_dir / f"{sample.image_id}.png"
            partial = path.with_name(f".{path.stem}.partial.png")  # renamed into place when complete
            write_label_png(partial, self._render_mask(self._coco_ids[sample.image_id]), palette)
            partial.replace(path)
        listing = png_dir.with_suffix(".txt")
        listing.write_text("".join(f"{sample.image_id}\n" for sample in self.samples))
        return len(missing), listing

    def _render_mask(self, coco_image_id: int) -> np.ndarray:
        """Semantic mask of one image from its instances: uint8, 0 background, crowd regions 255.

        Objects are painted in order of decreasing area, so a small object on top of a large one stays visible.
        """
        info = self._coco.imgs[coco_image_id]
        labels = np.zeros((info["height"], info["width"]), np.uint8)
        for ann in sorted(self._coco.imgToAnns.get(coco_image_id, []), key=lambda a: -a["area"]):
            mask = self._coco.annToMask(ann).astype(bool)
            labels[mask] = IGNORE_INDEX if ann.get("iscrowd") else self.category_to_class[ann["category_id"]]
        return labels


def load_instances(ann_file: Path):
    """The pycocotools ``COCO`` index of an instances JSON (its progress prints go to the log instead of stdout)."""
    from pycocotools.coco import COCO  # imported on use: only COCO needs it

    LOGGER.info("loading COCO instances %s (large: this takes a while)", ann_file)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    except json.JSONDecodeError as error:
        raise ValueError(f"{ann_file}: not valid JSON ({error}); re-download the 2014 annotations") from None
