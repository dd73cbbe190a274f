"""SAM 3 from the image tags (``--labeller sam3-text``): no CAM; SAM 3's text prompt for each tagged class (its
prompt name from the class list) gives instance masks and scores, and :func:`semantic_label` turns them into a
semantic label. Its records are ordinary shard records (:class:`~pseudolabel.storage.shards.LabelRecord`): the
label as both the refined label and Y0, each tagged class's score map as its localization map, so the evaluator,
viewer, export, stage two and the sweeps read them unchanged.

SAM 3 (``facebookresearch/sam3``, pip ``sam3``) is under the SAM License, not Apache-2.0: :data:`LICENCE` goes into
the run log and the shards and is printed when it runs. It is the optional extra ``.[sam3]``; without it
:func:`load_sam3` raises one line naming the extra.
"""
from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pseudolabel.classes import IGNORE_INDEX, ClassSet
from pseudolabel.labellers.config import LabellerConfig

LOG = logging.getLogger(__name__)
LICENCE = ("SAM 3 is under the SAM License (https://github.com/facebookresearch/sam3/blob/main/LICENSE), not "
           "Apache-2.0: labels made with it are subject to its terms")
EXTRA = 'SAM 3 is not installed: pip install ".[sam3]" (the optional extra; docs/stage_one.md#sam-3-from-the-tags)'


@dataclass
class Instances:
    """SAM 3's answer to one text prompt: instance masks ``(N, H, W)`` bool and scores ``(N,)``."""

    masks: np.ndarray
    scores: np.ndarray


def score_maps(instances: list[Instances], size: tuple[int, int], threshold: float) -> np.ndarray:
    """Per class (order of ``instances``), the score of its best instance at each pixel among those scoring at
    least ``threshold``; 0 where none covers the pixel. ``(K, H, W)`` float32."""
    maps = np.zeros((len(instances), *size), np.float32)
    for k, found in enumerate(instances):
        for mask, score in zip(found.masks, found.scores):
            if score >= threshold:
                np.maximum(maps[k], np.where(mask, np.float32(score), np.float32(0)), out=maps[k])
    return maps


def semantic_label(maps: np.ndarray, class_ids: tuple[int, ...], overlap: str = "score") -> np.ndarray:
    """The label from :func:`score_maps`: per pixel the tagged class with the highest score (the first of equal
    ones), background where no class has an instance; with ``overlap="ignore"`` a pixel claimed by several
    classes is 255."""
    if not class_ids:
        return np.zeros(maps.shape[1:], np.uint8)
    keys = np.asarray(class_ids, np.uint8)
    claimed = maps > 0
    labels = np.where(claimed.any(axis=0), keys[maps.argmax(axis=0)], 0).astype(np.uint8)
    if overlap == "ignore":
        labels[claimed.sum(axis=0) > 1] = IGNORE_INDEX
    return labels


def load_sam3(checkpoint: str | None, device: str):
    """SAM 3's image model with its processor (``sam3.model.sam3_image_processor.Sam3Processor``) and its weights
    identity; ``RuntimeError`` with :data:`EXTRA` when the package is missing."""
    try:
        from sam3.model.sam3_image_processor import Sam3Processor
        from sam3.model_builder import build_sam3_image_model
    except ImportError:
        raise RuntimeError(EXTRA) from None
    from pseudolabel.download import file_sha256

    if checkpoint == "random":  # the architecture untrained: speed and pipeline checks only
        LOG.warning("SAM 3 uses RANDOM weights: its labels are not meaningful")
        model = build_sam3_image_model(device=device, checkpoint_path=None, load_from_HF=False)
        identity = {"kind": "random", "model": "sam3"}
    else:
        model = build_sam3_image_model(device=device, checkpoint_path=checkpoint, load_from_HF=checkpoint is None)
        identity = {"kind": "file", "model": "sam3", "path": checkpoint, "sha256": file_sha256(checkpoint)} \
            if checkpoint else {"kind": "hub", "model": "sam3", "repo": "facebook/sam3"}
    return Sam3Processor(model, device=device, confidence_threshold=0.0), identity  # our threshold: the config's


class SAM3Segmenter:
    """``segment(image, prompt) -> Instances`` on SAM 3's processor; the image is encoded once for all its tags."""

    def __init__(self, processor) -> None:
        self.processor, self.image, self.state = processor, None, None

    def __call__(self, image: np.ndarray, prompt: str) -> Instances:
        from PIL import Image

        if self.image is not image:
            self.image, self.state = image, self.processor.set_image(Image.fromarray(image))
        self.processor.reset_all_prompts(self.state)
        state = self.processor.set_text_prompt(prompt, self.state)
        return Instances(state["masks"][:, 0].cpu().numpy(), state["scores"].float().cpu().numpy())


class SAM3TextLabeller:
    """Labels images with SAM 3 prompted with their tags; ``label_all`` and ``seconds`` as
    :class:`pseudolabel.pipeline.Labeller`'s of one setting (per image a list of its record or
    :class:`~pseudolabel.pipeline.ImageFailure`, in order). ``segment(image, prompt) -> Instances`` is SAM 3
    (:meth:`from_config`) or, in tests, any function."""

    def __init__(self, segment: Callable[[np.ndarray, str], Instances], class_set: ClassSet, cfg: LabellerConfig,
                 weights: dict | None = None) -> None:
        self.segment, self.class_set, self.cfg, self.weights = segment, class_set, cfg, weights or {}
        self.seconds = [collections.Counter()]     # one setting's, by stage
        self.licence = LICENCE

    @classmethod
    def from_config(cls, cfg: LabellerConfig, class_set: ClassSet, device: str = "cpu") -> "SAM3TextLabeller":
        """SAM 3 loaded (:func:`load_sam3`); prints and logs its licence."""
        processor, weights = load_sam3(cfg.sam3_checkpoint, device)
        print(LICENCE, flush=True)
        LOG.warning(LICENCE)
        return cls(SAM3Segmenter(processor), class_set, cfg, {**weights, "licence": "SAM License"})

    def label(self, sample, image: np.ndarray):
        """The shard record of one image: its tags prompted one by one, their score maps and label."""
        from pseudolabel.storage.class_stats import ClassStats
        from pseudolabel.storage.shards import LabelRecord

        start = time.perf_counter()
        class_ids = tuple(sample.class_ids)
        found = [self.segment(image, self.class_set.prompt_names[c - 1]) for c in class_ids]
        maps = score_maps(found, image.shape[:2], self.cfg.sam3_score_threshold)
        labels = semantic_label(maps, class_ids, self.cfg.sam3_overlap)
        self.seconds[0]["sam3"] += time.perf_counter() - start
        stats = ClassStats.measure(class_ids, labels, labels, None, None)
        return LabelRecord(image_id=sample.image_id, refined=labels, initial=labels, loc_maps_lowres=maps,
                           loc_class_ids=class_ids, class_ids=class_ids, size=tuple(image.shape[:2]),
                           class_stats=stats)

    def label_all(self, samples: list, batch_size: int = 1, workers: int = 1, deferred: bool = False,
                  wanted: list | None = None) -> Iterator[list]:
        """Every sample's ``[record or failure]``, in order (images one at a time; ``batch_size``, ``workers``,
        ``deferred`` and ``wanted`` are :class:`pseudolabel.pipeline.Labeller`'s and change nothing here)."""
        from pseudolabel.image_io import read_rgb
        from pseudolabel.pipeline import ImageFailure, failure_reason, is_fatal

        for sample in samples:
            try:
                yield [self.label(sample, read_rgb(sample.image_path))]
            except Exception as error:  # noqa: BLE001 - any per-image error: recorded, the run goes on
                if is_fatal(error):
                    raise
                yield [ImageFailure(sample, str(sample.image_path), failure_reason(error), "sam3")]
