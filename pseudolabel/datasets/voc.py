"""PASCAL VOC 2012 (``VOCdevkit/VOC2012``) with the optional SBD augmentation (``SegmentationClassAug``)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pseudolabel.classes import IGNORE_INDEX, get_class_set
from pseudolabel.datasets.base import Sample, WeakDataset, data_root, problem, progress, require_dir
from pseudolabel.image_io import ImageReadError, find_file, read_label_png

VOC_SPLITS = ("train", "train_aug", "val")
LABEL_SOURCES = ("xml", "mask")
FIX_ROOT = ("Put the dataset there (VOCdevkit/VOC2012 with JPEGImages, Annotations, ImageSets/Segmentation), "
            "pass --data-root, or run: tools/prepare_data.sh voc")
FIX_TRAIN_AUG = ("train_aug needs the SBD augmentation: put train_aug.txt (10,582 ids) in ImageSets/Segmentation and "
                 "the SegmentationClassAug/ PNGs next to SegmentationClass/ (tools/prepare_data.sh voc fetches both, "
                 "or prints where to get them), or use --split train")


def xml_class_names(path: Path) -> list[str]:
    """Object names of a VOC annotation (all objects, ``difficult`` ones included: they are present)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise ValueError(f"{path}: unreadable annotation XML ({error}); re-extract Annotations/") from None
    return [(obj.findtext("name") or "").strip() for obj in root.iter("object")]


def split_ids(split_file: Path) -> list[str]:
    """Image ids of a split list: one id per line, or DeepLab-style lines ``/JPEGImages/<id>.jpg /Seg.../<id>.png``."""
    lines = (line.split() for line in split_file.read_text(encoding="utf-8-sig").splitlines())
    return [Path(parts[0]).stem for parts in lines if parts]


def mask_class_ids(labels: np.ndarray, num_classes: int, path: Path) -> tuple[int, ...]:
    """Foreground classes present in a GT mask (what WeCLIP uses as image-level labels)."""
    values = np.unique(labels)
    values = values[(values != 0) & (values != IGNORE_INDEX)]
    if values.size and values.max() >= num_classes:
        raise ValueError(f"{path}: label value {int(values.max())} outside 0..{num_classes - 1} (and 255)")
    return tuple(int(v) for v in values)


class VOCDataset(WeakDataset):
    """VOC 2012 split ``train`` (1,464), ``train_aug`` (10,582, needs SBD) or ``val`` (1,449).

    ``label_source="xml"`` takes image-level labels from ``Annotations/<id>.xml`` (true weak supervision);
    ``"mask"`` takes them from the GT masks, as WeCLIP does, for comparisons with peers.
    """

    def __init__(self, root: str | Path | None = None, split: str = "train_aug", label_source: str = "xml"):
        if split not in VOC_SPLITS:
            raise ValueError(f"unknown VOC split '{split}'; choose one of {VOC_SPLITS}")
        if label_source not in LABEL_SOURCES:
            raise ValueError(f"unknown label source '{label_source}'; choose one of {LABEL_SOURCES}")
        root = Path(root) if root else data_root() / "VOCdevkit" / "VOC2012"
        require_dir(root, "PASCAL VOC 2012", FIX_ROOT)
        class_set = get_class_set("voc")
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            fix = FIX_TRAIN_AUG if split == "train_aug" else FIX_ROOT
            if split == "train_aug" and (root / "SegmentationClassAug").is_dir():
                fix = "SegmentationClassAug/ is there but its id list is not. " + fix
            raise FileNotFoundError(f"split file '{split_file}' does not exist. {fix}")
        ids = split_ids(split_file)
        samples, problems = [], []
        for image_id in progress(ids, f"voc:{split} labels"):
            image_path = find_file(root / "JPEGImages", f"{image_id}.jpg")
            if image_path is None:
                problems.append(problem(image_id, root / "JPEGImages" / f"{image_id}.jpg",
                                        f"listed in {split_file} but the image is missing"))
                continue
            gt_path = self._gt_path(root, image_id)
            class_ids = self._labels(root, image_id, gt_path, label_source, class_set)
            if not class_ids:
                problems.append(problem(image_id, image_path, f"no foreground class in its {label_source} labels; "
                                                              "an image-level label is required"))
                continue
            samples.append(Sample(image_id, image_path, class_ids, gt_path))
        super().__init__("voc", split, class_set, root, samples, problems)

    @staticmethod
    def _gt_path(root: Path, image_id: str) -> Path | None:
        found = (find_file(root / folder, f"{image_id}.png") for folder in ("SegmentationClass", "SegmentationClassAug"))
        return next((path for path in found if path is not None), None)

    @staticmethod
    def _labels(root: Path, image_id: str, gt_path: Path | None, label_source: str, class_set) -> tuple[int, ...]:
        if label_source == "mask":
            if gt_path is None:
                raise FileNotFoundError(f"no GT mask for '{image_id}' in {root}/SegmentationClass(Aug); "
                                        "use label_source='xml' or add the SBD masks (tools/prepare_data.sh voc)")
            try:
                return mask_class_ids(read_label_png(gt_path), class_set.num_classes, gt_path)
            except ImageReadError as error:
                raise ValueError(str(error)) from None
        xml_path = find_file(root / "Annotations", f"{image_id}.xml") or root / "Annotations" / f"{image_id}.xml"
        if not xml_path.is_file():
            raise FileNotFoundError(f"annotation '{xml_path}' is missing; "
                                    "re-extract Annotations/ or use label_source='mask'")
        ids = set()
        for name in xml_class_names(xml_path):
            try:
                ids.add(class_set.index(name))
            except KeyError as error:
                raise ValueError(f"{xml_path}: {error.args[0]}; fix the <name> of that object") from None
        ids.discard(0)
        return tuple(sorted(ids))
