"""A folder of inspection panels: which images (``--worst``: the lowest per-image IoU against GT), one PNG per image
(``visualize.render_panel``), and the entries of the HTML contact sheet (``html_report``)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pseudolabel.evaluation.sources import LabelSource
from pseudolabel.exits import prepare_output_dir
from pseudolabel.storage.format import image_key
from pseudolabel.storage.shards import ShardSet
from pseudolabel.viewer.html_report import ReportEntry
from pseudolabel.viewer.photos import PhotoFinder
from pseudolabel.viewer.visualize import class_coverage, image_iou, render_panel, save_panel


def panel_name(image_id: str) -> str:
    """File name of an image's panel: its shard key (flat, and distinct for distinct ids: '/' is escaped)."""
    return image_key(image_id) + ".png"


class GroundTruth:
    """GT label maps from a label source (``--gt``); an image the source lacks or cannot read has none (a warning)."""

    def __init__(self, source: LabelSource):
        self.source = source
        self.ids = set(source.ids())

    def read(self, image_id: str) -> np.ndarray | None:
        if image_id not in self.ids:
            return None
        try:
            return np.asarray(self.source.read(image_id))
        except Exception as error:  # noqa: BLE001  (one bad GT file: that panel has no GT tile)
            print(f"warning: GT of {image_id}: {error}", file=sys.stderr)
            return None


def image_score(labels: np.ndarray, gt: np.ndarray | None, num_classes: int) -> float | None:
    """Per-image IoU (percent) of a label map against GT; None without GT or when the sizes differ."""
    if gt is None or gt.shape != labels.shape:
        return None
    return image_iou(gt, labels, num_classes)


def worst_images(shards: ShardSet, image_ids: list[str], gt: GroundTruth, kind: str,
                 count: int) -> tuple[list[str], dict[str, float]]:
    """The ``count`` images (of those with GT) whose ``kind`` label scores lowest, lowest first, and every score."""
    scores = {}
    candidates = [i for i in image_ids if i in gt.ids]
    for image_id in tqdm(candidates, desc="scoring", file=sys.stderr):
        value = image_score(shards.read_label(image_id, kind), gt.read(image_id), shards.class_set.num_classes)
        if value is not None and not math.isnan(value):
            scores[image_id] = value
    return sorted(scores, key=lambda i: (scores[i], i))[:count], scores


def write_panels(shards: ShardSet, image_ids: list[str], out: Path, photos: PhotoFinder, gt: GroundTruth | None,
                 kind: str, scores: dict[str, float] | None = None, tile_height: int = 160) -> list[ReportEntry]:
    """Write ``<out>/<panel_name(id)>`` for each image; the HTML entries, scored by the ``kind`` label's IoU against
    GT (``scores``: already computed ones)."""
    class_set = shards.class_set
    random_weights = bool(shards.attrs.get("random_weights", False))
    scores = scores or {}
    prepare_output_dir(out)
    entries = []
    for image_id in tqdm(image_ids, desc="panels", file=sys.stderr):
        record = shards[image_id]
        photo = photos.read(image_id)
        truth = gt.read(image_id) if gt is not None else None
        panel = render_panel(record, class_set, photo=photo, gt=truth, random_weights=random_weights,
                             tile_height=tile_height)
        name = panel_name(image_id)
        save_panel(panel, out / name)
        value = scores[image_id] if image_id in scores else image_score(getattr(record, kind), truth,
                                                                          class_set.num_classes)
        coverage = {class_set.classes[c]: share for c, share in class_coverage(record.refined, record.class_ids).items()}
        notes = ["photo not found"] if photo is None else []
        if gt is not None and truth is None:
            notes.append("no GT")
        entries.append(ReportEntry(image_id, name, coverage, value, notes))
    return entries
