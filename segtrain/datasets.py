"""An mmseg dataset whose images come from a data root and whose labels come from stage-one shards."""
from __future__ import annotations

import warnings
from pathlib import Path

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from pseudolabel.classes import BUILTIN_CLASS_SETS, ClassSet, class_name_key, get_class_set, pascal_palette
from pseudolabel.datasets.custom import find_image
from pseudolabel.storage.format import LABEL_KINDS, REFINED
from pseudolabel.storage.shards import ShardSet, open_shards


class ShardMismatchError(ValueError):
    """The shards do not fit the training config (dataset, classes, images)."""


def check_shards(shards: ShardSet, num_classes: int | None = None, expected_dataset: str | None = None,
                 class_names: tuple[str, ...] | None = None) -> None:
    """Raise :class:`ShardMismatchError` when the shards do not fit the config; warn about failures and random
    weights. ``class_names`` (the config's) are compared with :func:`check_class_names`."""
    where = f"shards in '{shards.directory}'"
    shard_classes = tuple(shards.class_set.classes)
    if num_classes is not None and num_classes != len(shard_classes):
        raise ShardMismatchError(
            f"{where} have {len(shard_classes)} classes ({shards.class_set.name}) but the config trains "
            f"num_classes={num_classes}; use the config for that class set or regenerate the shards")
    dataset = shards.attrs.get("dataset")
    if expected_dataset is not None and dataset != expected_dataset:
        raise ShardMismatchError(
            f"{where} were made for dataset '{dataset}' but the config expects '{expected_dataset}'; pass the "
            f"matching --shards directory or set expected_dataset in the config")
    if class_names is not None:
        check_class_names(shards, class_names, "the config's")
    if shards.failures:
        warnings.warn(f"{where}: stage one recorded {len(shards.failures)} failed image(s) (e.g. "
                      f"{shards.failures[0].get('image_id')}: {shards.failures[0].get('reason')}); they are not "
                      f"trained on. See manifest.json.", stacklevel=2)
    if shards.attrs.get("random_weights"):
        warnings.warn("!" * 20 + f" {where} were made with RANDOM model weights: their labels are noise and a "
                      "segmenter trained on them learns nothing useful (fine for tests/demos only) " + "!" * 20,
                      stacklevel=2)


def check_class_names(shards: ShardSet, class_names: tuple[str, ...], whose: str) -> None:
    """Raise :class:`ShardMismatchError` unless ``class_names`` are the shards' classes in their order (ignoring case,
    spaces and punctuation)."""
    shard_classes = tuple(shards.class_set.classes)
    differing = [(a, b) for a, b in zip(shard_classes, class_names) if class_name_key(a) != class_name_key(b)]
    if len(class_names) != len(shard_classes) or differing:
        raise ShardMismatchError(
            f"shards in '{shards.directory}' have classes {list(shard_classes)} but {whose} class names are "
            f"{list(class_names)} (first difference: {differing[:1] or 'count'}); use the config for that class set "
            f"or regenerate the shards")


@DATASETS.register_module()
class ShardPseudoLabelDataset(BaseSegDataset):
    """Images listed in the shards (or in ``ann_file``), read from ``data_root/data_prefix['img_path']``; labels
    from the shards via the ``LoadShardLabel`` transform.

    Args:
        shards_dir: stage-one output directory (``shard-*.h5``).
        num_classes: classes the model trains (checked against the shards); None skips the check.
        class_set: the class set the config trains (``voc``, ``coco`` or a class list file): its names, in order, must
            be the shards' (checked with or without a validation set); None skips the check.
        expected_dataset: dataset name the shards must have been made for (``voc``, ``coco``, ...); None skips it.
        label_kind: ``refined`` (SAM-refined, default) or ``initial`` (Skip-CAM ``Y0``).
        Other arguments as for mmseg's ``BaseSegDataset`` (``data_root``, ``data_prefix=dict(img_path=...)``,
        ``img_suffix``, ``ann_file``, ``pipeline``). Class names and palette default to the shards'.
    """

    def __init__(self, shards_dir: str, num_classes: int | None = None, expected_dataset: str | None = None,
                 label_kind: str = REFINED, metainfo: dict | None = None, class_set: str | None = None, **kwargs):
        if label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind must be one of {LABEL_KINDS}, got {label_kind!r}")
        self.shards_dir = str(shards_dir)
        self.label_kind = label_kind
        shards = open_shards(self.shards_dir)
        metainfo = dict(metainfo or {})
        if class_set is not None:
            metainfo.setdefault("classes", class_names(class_set))
        check_shards(shards, num_classes, expected_dataset, metainfo.get("classes"))
        classes = tuple(shards.class_set.classes)
        metainfo.setdefault("classes", classes)
        metainfo.setdefault("palette", pascal_palette()[:len(classes)].tolist())
        self._shard_ids = list(shards.keys())
        super().__init__(metainfo=metainfo, **kwargs)

    def load_data_list(self) -> list[dict]:
        image_dir = Path(self.data_prefix.get("img_path") or self.data_root or ".")
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image folder '{image_dir}' does not exist; set data_root/data_prefix "
                                    f"in the config (or --cfg-options train_dataloader.dataset.data_root=...)")
        ids = self._shard_ids
        if self.ann_file:
            listed = [line.split()[0] for line in Path(self.ann_file).read_text().splitlines() if line.strip()]
            known = set(self._shard_ids)
            absent = [i for i in listed if i not in known]
            if absent:
                raise ShardMismatchError(f"{len(absent)} image(s) of {self.ann_file} have no label in "
                                         f"'{self.shards_dir}' (e.g. {absent[:3]}); regenerate the shards for that split")
            ids = listed
        data_list, missing = [], []
        for image_id in ids:
            path = image_dir / f"{image_id}{self.img_suffix}"
            path = path if path.is_file() else find_image(image_dir, image_id)
            if path is None:
                missing.append(image_id)
                continue
            data_list.append(dict(img_path=str(path), shard_id=image_id, shards_dir=self.shards_dir,
                                  label_kind=self.label_kind, label_map=self.label_map,
                                  reduce_zero_label=self.reduce_zero_label, seg_fields=[]))
        if missing:
            raise ShardMismatchError(
                f"{len(missing)} of {len(ids)} image(s) listed in the shards '{self.shards_dir}' are missing from "
                f"'{image_dir}' (e.g. {missing[:3]}); point data_root/data_prefix at the images stage one used")
        return data_list


def class_names(class_set: str) -> tuple[str, ...]:
    """Class names of a built-in class set (``voc``, ``coco``) or of a class list file."""
    found = get_class_set(class_set) if class_set in BUILTIN_CLASS_SETS else ClassSet.from_file(class_set)
    return tuple(found.classes)


@DATASETS.register_module()
class ClassSetSegDataset(BaseSegDataset):
    """mmseg's ``BaseSegDataset`` (images + GT index PNGs) with class names and palette from a built-in class set
    (``voc``/``coco``) or a class list file, so validation and test configs need no literal class lists."""

    def __init__(self, class_set: str = "voc", metainfo: dict | None = None, **kwargs):
        classes = class_names(class_set)
        metainfo = dict(metainfo or {})
        metainfo.setdefault("classes", tuple(classes))
        metainfo.setdefault("palette", pascal_palette()[:len(classes)].tolist())
        super().__init__(metainfo=metainfo, **kwargs)
