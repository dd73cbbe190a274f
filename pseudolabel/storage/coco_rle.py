"""Label maps as a COCO-style annotation file of RLE masks, the format annotation tools import (CVAT's "COCO 1.0",
FiftyOne's ``COCODetectionDataset``, Label Studio's COCO converter).

One annotation per image and foreground class present in its label map, like COCO-Stuff's semantic annotations:
``segmentation`` is the class's mask as compressed RLE (``pycocotools.mask.encode``, counts as text), with its
``area`` and ``bbox`` from pycocotools. Background (0) and ignore (255) pixels get no annotation. Categories are the
class set's foreground classes, with COCO's own category ids for the COCO class set and the class index otherwise.
Images are numbered 1..N in the order given and named by their file name in the dataset's image folder.
"""
from __future__ import annotations

import numpy as np

from pseudolabel.classes import IGNORE_INDEX, ClassSet

FORMAT_DESCRIPTION = "CEP pseudo labels: one RLE mask per image and class (background and ignore pixels have none)"


def category_ids(class_set: ClassSet) -> list[int]:
    """The category id of each foreground class (index order): COCO's ids when the class set has them, else the
    class index."""
    return list(class_set.category_ids) or list(range(1, class_set.num_classes))


def categories(class_set: ClassSet) -> list[dict]:
    """The ``categories`` entries of the class set's foreground classes."""
    return [{"id": category, "name": name, "supercategory": ""}
            for category, name in zip(category_ids(class_set), class_set.classes[1:])]


def class_masks(labels: np.ndarray, category_of: list[int]) -> list[dict]:
    """``category_id``, ``segmentation`` (compressed RLE), ``area`` and ``bbox`` of each foreground class present in
    ``labels``, by class index (``category_of[c - 1]`` is class ``c``'s category id)."""
    from pycocotools import mask as coco_mask  # imported on use: only this export needs it

    present = [int(c) for c in np.unique(labels) if 0 < c < IGNORE_INDEX]
    if not present:
        return []
    masks = np.asfortranarray(np.stack([labels == c for c in present], axis=-1).astype(np.uint8))
    rles = coco_mask.encode(masks)
    areas, boxes = coco_mask.area(rles), coco_mask.toBbox(rles)
    return [{"category_id": category_of[c - 1], "iscrowd": 0, "area": int(area), "bbox": [float(v) for v in box],
             "segmentation": {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}}
            for c, rle, area, box in zip(present, rles, areas, boxes)]


def coco_document(images: list[tuple[str, tuple[int, int]]], masks: list[list[dict]], class_set: ClassSet,
                  info: dict) -> dict:
    """The annotation file: ``images`` are ``(file name, (height, width))`` in order, ``masks[i]`` the
    :func:`class_masks` of image ``i``; ``info`` is added to COCO's ``info`` block."""
    image_entries, annotations = [], []
    for number, ((file_name, (height, width)), image_masks) in enumerate(zip(images, masks), start=1):
        image_entries.append({"id": number, "file_name": file_name, "height": int(height), "width": int(width)})
        annotations += [{"id": len(annotations) + k + 1, "image_id": number, **m} for k, m in enumerate(image_masks)]
    return {"info": {"description": FORMAT_DESCRIPTION, **info}, "licenses": [], "images": image_entries,
            "annotations": annotations, "categories": categories(class_set)}
