"""The photo of a shard record, for panels and reports: from the folder or dataset the user names (``--images``),
else the image folder recorded in the shards (custom and demo datasets), else the dataset named in the shard
attributes. A photo that cannot be found or read is None (the panel shows a placeholder), never an error."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from pseudolabel.datasets.custom import find_image


class PhotoFinder:
    """Photos by image id. ``images``: a folder of ``<id>.<ext>`` or a dataset spec ``name:split`` (read under
    ``data_root``); None: what the shard attributes ``attrs`` record."""

    def __init__(self, attrs: dict, data_root: str | None, images: str | None):
        from pseudolabel.evaluation.sources import DATASET_SPEC

        self.folder: Path | None = None
        self.dataset = None
        spec = DATASET_SPEC.match(images) if images and not Path(images).exists() else None
        if images and spec is None:
            self.folder = Path(images)
            if not self.folder.is_dir():
                raise ValueError(f"--images '{images}' is neither a folder nor a dataset spec like voc:train")
        elif images is None and attrs.get("image_dir"):
            self.folder = Path(attrs["image_dir"])
            if not self.folder.is_dir():
                print(f"warning: the image folder recorded in the shards, '{self.folder}', does not exist; "
                      "pass --images DIR", file=sys.stderr)
        else:
            name, split = (spec["name"], spec["split"]) if spec else (attrs.get("dataset"), attrs.get("split"))
            try:
                from pseudolabel.datasets import build_dataset

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.dataset = build_dataset(str(name), data_root, str(split))
            except Exception as error:  # noqa: BLE001  (any dataset problem: panels get a placeholder)
                print(f"warning: photos unavailable: dataset {name}:{split} not readable ({error}); "
                      "pass --data-root DIR or --images DIR", file=sys.stderr)

    def path(self, image_id: str) -> Path | None:
        """The photo's file, or None when it cannot be found."""
        if self.folder is not None:
            return find_image(self.folder, image_id)
        if self.dataset is None:
            return None
        try:
            return Path(self.dataset.by_id(image_id).image_path)
        except KeyError:
            return None

    def read(self, image_id: str) -> np.ndarray | None:
        """The photo as ``(H, W, 3) uint8`` RGB, or None (not found, or unreadable: one warning naming the file)."""
        from pseudolabel.image_io import ImageReadError, read_rgb

        path = self.path(image_id)
        if path is None:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return read_rgb(path)
        except ImageReadError as error:
            print(f"warning: {error}", file=sys.stderr)
            return None
