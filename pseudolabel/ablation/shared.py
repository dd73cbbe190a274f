"""Image-major labelling of a sweep's rows on stage one's own stages (:mod:`pseudolabel.pipeline`,
``SkipCAM.frozen``/``cams_from_frozen``, ``SAMRefiner.embed``/``refine_embedded``): each image is decoded once, and
each product that rows share is computed once for it and reused by every row that can use it
(docs/ablations.md#what-is-shared):

=====================================  ================================================  ============================
product                                shared by rows with the same                      computed
=====================================  ================================================  ============================
CLIP model, SAM model                  model, weights and seed                           once per sweep
text embeddings                        CLIP model and prompt set                         once per sweep
CLIP frozen-block outputs              CLIP model, CAM input size and token budget,      once per image (per batch)
                                       precision
SAM image embedding                    SAM model, precision                              once per image (per batch)
Skip-CAM output (maps, scores, Y0)     Skip-CAM setting (every ``SkipCAMConfig`` field)  once per image
SAM masks of one prompt point          SAM model and point (a point's masks depend on    once per image and point
                                       nothing else)                                     (within a memory budget)
=====================================  ================================================  ============================

So rows differing in K, skip entry, τ, prompts or PAR share the frozen blocks; rows differing only in SAM settings
share the Skip-CAM output and the embedding; rows differing in δ, filter, mask selection or merge also share every
point's masks, and rows whose Y0 puts the same grid points on a class share those points' masks. What a row gets is
what a standalone ``gen_pseudo`` run computes (``tests/test_ablation.py`` compares the shards byte for byte), and its
time is what such a run would spend: each shared product's time is counted in every row that uses it.
"""
from __future__ import annotations

import collections
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pseudolabel.cam.clip_models import load_clip
from pseudolabel.cam.skipcam import CAMOutput, FrozenFeatures, SkipCAM
from pseudolabel.classes import ClassSet
from pseudolabel.config import PseudoLabelConfig
from pseudolabel.datasets import Sample
from pseudolabel.image_io import read_rgb
from pseudolabel.pipeline import label_record
from pseudolabel.sam.refine import (PIECE_BYTES, POINTS_PER_BATCH, ImageEmbedding, Refinement, SAMInput, SAMRefiner,
                                    load_predictor)
from pseudolabel.storage.shards import LabelRecord

LOG = logging.getLogger("pseudolabel.ablation")
KEPT_MASK_BYTES = 2 * PIECE_BYTES   # point masks kept for an image's later rows, per SAM model (512 MiB)


def clip_key(config: PseudoLabelConfig) -> tuple:
    """The CLIP model a row runs on."""
    return config.cam.clip_model, config.cam.clip_weights, config.cam.clip_seed


def frozen_key(config: PseudoLabelConfig) -> tuple:
    """What the frozen blocks' outputs depend on: the model, the CAM input size (``image_size`` within the token
    budget ``max_tokens``) and the precision."""
    return (*clip_key(config), config.cam.image_size, config.cam.max_tokens, config.precision)


def cam_key(config: PseudoLabelConfig) -> str:
    """A Skip-CAM setting: every field and the precision (rows equal in all have the same maps, scores and Y0)."""
    return json.dumps({**config.cam.to_dict(), "precision": config.precision}, sort_keys=True)


def sam_key(config: PseudoLabelConfig) -> tuple:
    """The SAM model a row runs on, in its precision (random weights seeded by ``sam_seed``, as in gen_pseudo)."""
    return config.refine.sam_model, config.refine.sam_checkpoint, config.refine.sam_seed, config.precision


class PointMasks:
    """SAM's masks and predicted IoUs per prompt point of one image on one SAM model, each point decoded once.

    Called with one image's points ``(P, 2)`` and ``decode`` behind it (:meth:`SharedMasksRefiner.point_masks`, inside
    the refiner's decoding steps, so the predictor holds the image). A point's masks are kept
    while rows that will ask for it remain (:meth:`expect`) and dropped after their last use, so a sweep holds only
    the points some later row of the image still needs (a 500x375 image's 3 masks take 560 KB a point), and never
    more than ``budget`` bytes of them: a point beyond it is decoded again when a later row asks (a 6000x4000
    image's 3 masks take 72 MB). The first row to ask gets the decoder's own tensors; the points kept for later
    rows are copies, so the decoder's batch is freed. ``asked`` counts the points asked for since it was reset;
    :attr:`seconds_per_point` is the decoding time per point over the image, so a row is charged for its points
    what a standalone run would spend on them, whoever decoded them (points decoded a few at a time cost more each
    than in full batches, and averaging spreads that over the rows)."""

    def __init__(self, decode, budget: int = KEPT_MASK_BYTES):
        self.decode, self.budget = decode, budget
        self.points: dict[tuple[float, float], tuple[torch.Tensor, torch.Tensor]] = {}
        self.uses: collections.Counter = collections.Counter()   # asks still to come, by point
        self.kept_bytes = 0
        self.seconds, self.decoded, self.asked = 0.0, 0, 0

    @property
    def seconds_per_point(self) -> float:
        return self.seconds / max(self.decoded, 1)

    def expect(self, xy: np.ndarray) -> None:
        """A row will ask for these points."""
        self.uses.update(_keys(xy))

    def __call__(self, xy: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        keys = _keys(xy)
        new = [k for k in dict.fromkeys(keys) if k not in self.points]
        fresh = {}
        if new:
            start = time.perf_counter()
            masks, iou = self.decode(np.array(new, dtype=np.float32).reshape(-1, 2))
            self.seconds += time.perf_counter() - start
            self.decoded += len(new)
            fresh = {k: (masks[i], iou[i]) for i, k in enumerate(new)}
        if new != keys:         # some points kept from an earlier row, or one point twice
            found = [self.points.get(k) or fresh[k] for k in keys]
            masks, iou = torch.stack([m for m, _ in found]), torch.stack([i for _, i in found])
        self._used(keys, fresh)
        return masks, iou

    def _used(self, keys: list, fresh: dict) -> None:
        """Count the asks; keep a new point while more are to come (within the budget), drop it after its last."""
        self.asked += len(keys)
        for k in keys:
            self.uses[k] -= 1
            if self.uses[k] <= 0:
                dropped = self.points.pop(k, None)
                self.kept_bytes -= dropped[0].nbytes if dropped else 0
                del self.uses[k]
            elif k in fresh and k not in self.points and self.kept_bytes + fresh[k][0].nbytes <= self.budget:
                self.points[k] = (fresh[k][0].clone(), fresh[k][1].clone())
                self.kept_bytes += fresh[k][0].nbytes


def _keys(xy) -> list[tuple[float, float]]:
    """Points as :class:`PointMasks` keys them: float32 xy, as the refiner decodes them."""
    return [(float(x), float(y)) for x, y in np.asarray(xy, np.float32)]


class SharedMasksRefiner(SAMRefiner):
    """A :class:`SAMRefiner` that takes its point masks from ``shared`` (the current image's :class:`PointMasks`)
    while one is set (the sweep refines one image at a time); every setting on one SAM model shares one predictor."""

    shared: PointMasks | None = None

    def point_masks(self, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared is None:
            return super().point_masks(xy)
        masks, iou = self.shared(xy[0].numpy())
        return masks[None], iou[None]

    def decode(self, xy: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's own masks ``(P, 3, H, W)`` and IoUs of one image's points (what :class:`PointMasks` keeps)."""
        masks, iou = super().point_masks(torch.from_numpy(xy)[None])
        return masks[0], iou[0]


class ModelPool:
    """Every model of a sweep loaded once, one :class:`SkipCAM` per Skip-CAM setting and one refiner per refinement
    setting on them. Building a setting checks it (e.g. K against the model's depth), so a sweep builds every row's
    before any image."""

    def __init__(self, class_set: ClassSet, device: str, points_per_batch: int = POINTS_PER_BATCH):
        self.class_set, self.device, self.points_per_batch = class_set, device, points_per_batch
        self.clip_models: dict[tuple, tuple] = {}
        self.texts: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.cams: dict[str, SkipCAM] = {}
        self.predictors: dict[tuple, tuple] = {}
        self.refiners: dict[tuple, SharedMasksRefiner] = {}

    def skipcam(self, config: PseudoLabelConfig) -> SkipCAM:
        key, cam = cam_key(config), config.cam
        if key not in self.cams:
            if clip_key(config) not in self.clip_models:
                self.clip_models[clip_key(config)] = load_clip(cam.clip_model, cam.clip_weights, self.device,
                                                               cam.clip_seed)
            model, tokenizer, weights = self.clip_models[clip_key(config)]
            text_key = (clip_key(config), cam.prompt_set)
            skipcam = SkipCAM(model, tokenizer, self.class_set, cam, self.device, weights, config.precision,
                              self.texts.get(text_key))
            self.texts[text_key] = (skipcam.fg_text, skipcam.bg_text)
            self.cams[key] = skipcam
        return self.cams[key]

    def refiner(self, config: PseudoLabelConfig) -> SharedMasksRefiner | None:
        if not config.refine.enabled:
            return None
        key = (sam_key(config), json.dumps(config.refine.to_dict(), sort_keys=True))
        if key not in self.refiners:
            if sam_key(config) not in self.predictors:
                self.predictors[sam_key(config)] = load_predictor(config.refine, self.device, config.precision)
            predictor, weights = self.predictors[sam_key(config)]
            self.refiners[key] = SharedMasksRefiner(predictor, config.refine, weights, self.points_per_batch)
        return self.refiners[key]


@dataclass
class RowSetting:
    """What one row runs: its configuration, Skip-CAM and refiner (from a :class:`ModelPool`)."""

    config: PseudoLabelConfig
    cam: SkipCAM
    refiner: SharedMasksRefiner | None


@dataclass
class SweepImage:
    """A decoded image and its network inputs, one per distinct CLIP input and SAM model of the sweep's rows."""

    sample: Sample
    image: np.ndarray                   # (H, W, 3) uint8
    clip_inputs: dict[tuple, torch.Tensor]
    sam_inputs: dict[tuple, SAMInput]
    seconds: float                      # decoding and preprocessing


@dataclass
class RowTime:
    """Seconds by stage a standalone run would spend on one image of a row. The share of the point decoding
    (``points`` at the image's rate) is known once every row has had the image."""

    seconds: collections.Counter = field(default_factory=collections.Counter)
    masks: PointMasks | None = None
    points: int = 0

    def by_stage(self) -> collections.Counter:
        decoding = self.points * self.masks.seconds_per_point if self.masks else 0.0
        return self.seconds + collections.Counter(sam=decoding, sam_decoder=decoding)


class SharedStages:
    """The sweep's stages over its rows' settings: :meth:`prepare` (threads), :meth:`encode` (per batch: each
    distinct frozen-block pass and SAM encoder once), then :class:`ImageWork` per image."""

    def __init__(self, settings: list[RowSetting], device: str):
        self.device = torch.device(device)
        # key -> the SkipCAM reading the most blocks' attentions, whose frozen pass serves every row of the key
        by_attention = sorted(settings, key=lambda s: s.config.cam.attn_blocks)
        self.frozen_by = {frozen_key(s.config): s.cam for s in by_attention}
        self.sam_by = {sam_key(s.config): s.refiner for s in settings if s.refiner is not None}  # key -> a refiner

    def prepare(self, sample: Sample) -> SweepImage:
        """Decode an image and compute every network input on the host (thread-safe)."""
        start = time.perf_counter()
        image = read_rgb(sample.image_path)
        clip_inputs = {key: cam.preprocess(image) for key, cam in self.frozen_by.items()}
        sam_inputs = {key: refiner.prepare(image) for key, refiner in self.sam_by.items()}
        return SweepImage(sample, image, clip_inputs, sam_inputs, time.perf_counter() - start)

    def encode(self, items: list[SweepImage]) -> list["ImageWork"]:
        """The batch step: every distinct frozen-block pass and SAM image encoder, on all images of the batch."""
        works = [ImageWork(item, self.device) for item in items]
        for key, cam in self.frozen_by.items():
            for work, timed in zip(works, per_item_seconds(cam.frozen, [item.clip_inputs[key] for item in items])):
                work.frozen[key] = timed
        for key, refiner in self.sam_by.items():
            for work, timed in zip(works, per_item_seconds(refiner.embed, [item.sam_inputs[key] for item in items])):
                work.embeddings[key] = timed
                work.point_masks[key] = PointMasks(refiner.decode, KEPT_MASK_BYTES)
        return works


def per_item_seconds(step, inputs: list) -> list[tuple]:
    """``step(inputs)``'s results, each with its share of the step's seconds."""
    start = time.perf_counter()
    results = step(inputs)
    each = (time.perf_counter() - start) / len(inputs)
    return [(result, each) for result in results]


class ImageWork:
    """One image's shared products: the batch step's (frozen features, embeddings) and, computed on first use, each
    Skip-CAM setting's output and each point's masks."""

    def __init__(self, item: SweepImage, device: torch.device):
        self.item, self.sample = item, item.sample
        self.pixels = torch.from_numpy(item.image).to(device) if device.type == "cuda" else item.image
        self.frozen: dict[tuple, tuple[FrozenFeatures, float]] = {}
        self.embeddings: dict[tuple, tuple[ImageEmbedding, float]] = {}
        self.point_masks: dict[tuple, PointMasks] = {}
        self.cam_outputs: dict[str, tuple[CAMOutput, float]] = {}

    def cam_output(self, setting: RowSetting) -> tuple[CAMOutput, float]:
        key = cam_key(setting.config)
        if key not in self.cam_outputs:
            features, _ = self.frozen[frozen_key(setting.config)]
            start = time.perf_counter()
            out = setting.cam.cams_from_frozen([self.pixels], [features], [self.sample.class_ids])[0]
            self.cam_outputs[key] = (out, time.perf_counter() - start)
        return self.cam_outputs[key]

    def refinement(self, setting: RowSetting, cam_out: CAMOutput, spent: RowTime) -> Refinement:
        key = sam_key(setting.config)
        embedding, encoder_seconds = self.embeddings[key]
        masks = self.point_masks[key]
        masks.asked, setting.refiner.shared = 0, masks
        start = time.perf_counter()
        try:
            refinement = setting.refiner.refine_embedded(embedding, cam_out.label, cam_out.score_maps,
                                                         cam_out.class_ids)
        finally:
            setting.refiner.shared = None
        filter_merge = refinement.timings["filter_merge"]
        spent.seconds.update(sam_encoder=encoder_seconds, sam=time.perf_counter() - start - refinement.timings[
            "sam_decoder"], filter_merge=filter_merge)
        spent.masks, spent.points = masks, masks.asked
        return refinement

    def expect(self, settings: list[RowSetting]) -> None:
        """Tell each SAM model's :class:`PointMasks` which points the image's rows will ask for, so each point is
        kept until its last use and no longer. A row whose Skip-CAM fails here is left to fail in :meth:`label`."""
        for setting in settings:
            if setting.refiner is None:
                continue
            try:
                cam_out, _ = self.cam_output(setting)
            except Exception:  # noqa: BLE001 - reported when the row is labelled
                continue
            xy, _ = setting.refiner.prompts(cam_out.y0, cam_out.score_maps, cam_out.class_ids)
            self.point_masks[sam_key(setting.config)].expect(xy)

    def label(self, setting: RowSetting) -> tuple[LabelRecord, RowTime]:
        """The record of one row and the time a standalone run would spend on it (gen_pseudo's stages)."""
        spent = RowTime(collections.Counter(decode=self.item.seconds, clip_frozen=self.frozen[
            frozen_key(setting.config)][1]))
        cam_out, cam_seconds = self.cam_output(setting)
        spent.seconds.update(skipcam=cam_seconds, **cam_out.timings)
        refinement = self.refinement(setting, cam_out, spent) if setting.refiner else None
        return label_record(self.sample, self.item.image.shape[:2], cam_out, refinement), spent


def sharing_plan(rows: list[tuple[str, PseudoLabelConfig]]) -> list[str]:
    """One line per row: which products it computes and which it takes from an earlier row."""
    first: dict[tuple, str] = {}
    lines = []
    for slug, config in rows:
        parts = [("CLIP frozen blocks", ("frozen", frozen_key(config))), ("Skip-CAM output", ("cam", cam_key(config)))]
        if config.refine.enabled:
            parts.append((f"SAM {config.refine.sam_model} image embedding and point masks", ("sam", sam_key(config))))
        said = []
        for what, key in parts:
            owner = first.setdefault(key, slug)
            said.append(f"{what}: {'computes' if owner == slug else 'reuses ' + repr(owner)}")
        lines.append(f"row '{slug}': " + "; ".join(said))
    return lines
