"""SAM refinement of the initial label Y0 (docs/method.md#sam-refinement): grid points filtered by class, one
positive point per prompt (batched), multimask selection, the δ filter and the merge into a label map.

Two stages a caller can keep apart and reuse: :meth:`SAMRefiner.embed` (SAM's image encoder, several images at once
on a GPU; an :class:`ImageEmbedding` serves every refinement setting of the same SAM model: grid, δ, filter, mask
selection, merge) and :meth:`SAMRefiner.refine_embedded` (prompts, masks, filter and merge of one setting). The
masks, filtering and merging run as torch operations on the model's device.

Everything runs at the image's full resolution, in pieces whose memory is bounded whatever the image size: prompts
are decoded, selected and filtered a few at a time (:data:`MASK_BYTES_PER_STEP`) and the merge runs in bands of rows
(:data:`MERGE_BYTES_PER_BAND`). Each mask and each pixel is computed exactly as in one piece, so the pieces never
change a label; at VOC and COCO sizes the pieces are whole.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi
import torch

from pseudolabel.classes import IGNORE_INDEX
from pseudolabel.cli_options import DictConfig

MASK_BYTES_PER_STEP = 256 << 20   # SAM's 3 masks per prompt, one byte per pixel: 3 prompts of a 6000x4000 image
MERGE_BYTES_PER_BAND = 256 << 20  # the merge's per-class float32 scores in one band of rows


@dataclass
class SAMRefineConfig(DictConfig):
    """Stage one, part 2. Defaults and their reasons: docs/method.md#open-choices-and-their-flags."""

    enabled: bool = field(default=True, metadata={"help": "refine Y0 with SAM (off: the output is Y0)",
                                                  "flag": "refine"})
    sam_model: str = field(default="vit_b", metadata={"help": "SAM variant (paper Table 6)",
                                                      "choices": ("vit_b", "vit_l", "vit_h", "vit_tiny_test")})
    sam_checkpoint: str | None = field(default=None, metadata={
        "help": "local SAM checkpoint; default: the official file in the cache, downloaded if absent; "
                "'random' = seeded random weights (pipeline checks only)"})
    grid_size: int = field(default=16, metadata={"help": "n_h = n_w: candidate points at the cell centres"})
    delta: float = field(default=0.5, metadata={"help": "δ: keep a mask if its filter metric >= δ (Eq. 8)"})
    filter_metric: str = field(default="iou", metadata={"help": "iou = |m∩R|/|m∪R|; containment = |m∩R|/|m|",
                                                        "choices": ("iou", "containment")})
    filter_scope: str = field(default="class", metadata={
        "help": "R = the whole class region, or its connected component holding the point",
        "choices": ("class", "component")})
    mask_select: str = field(default="region_iou", metadata={
        "help": "which of SAM's 3 masks: best IoU with R (ties: SAM score), SAM's score, or its third output "
                "(usually the largest)",
        "choices": ("region_iou", "sam_score", "largest")})
    merge: str = field(default="replace", metadata={
        "help": "replace: class support = union of accepted masks (else R); overwrite: R ∪ accepted masks",
        "choices": ("replace", "overwrite")})
    conflict_ignore: bool = field(default=False, metadata={"help": "pixels claimed by several classes -> 255"})
    uncertain_ignore: bool = field(default=False, metadata={"help": "pixels whose label differs from Y0 -> 255"})
    ensure_point_per_class: bool = field(default=False, metadata={
        "help": "a class with no grid point gets its localization peak as a prompt"})
    points_per_batch: int = field(default=64, metadata={"help": "prompts decoded together"})


def grid_points(height: int, width: int, n: int) -> np.ndarray:
    """Cell centres ``((j+.5)W/n, (i+.5)H/n)`` as ``(n*n, 2)`` xy, equal to SAM's ``build_point_grid(n) * [W, H]``."""
    centres = (np.arange(n) + 0.5) / n
    xs, ys = np.meshgrid(centres * width, centres * height)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


@dataclass
class Refinement:
    """What the refiner made of one image: the label map and, per class (order of ``class_ids``), the prompts and the
    masks that passed δ (stage one stores them for the label-quality report)."""

    labels: np.ndarray                  # (H, W) uint8 refined label map
    prompts: tuple[int, ...]            # prompt points of each class
    masks_accepted: tuple[int, ...]     # of those, the points whose chosen mask passed the δ filter
    timings: dict[str, float] = field(default_factory=dict)    # seconds by stage


@dataclass
class SAMInput:
    """One image prepared for SAM's encoder on the host (thread-safe, :meth:`SAMRefiner.prepare`)."""

    pixels: torch.Tensor                # (3, h, w) uint8: resized so that the long side is the encoder's input size
    original_size: tuple[int, int]      # (H, W)


@dataclass
class ImageEmbedding:
    """SAM's image-encoder output for one image, on the model's device (:meth:`SAMRefiner.embed`)."""

    features: torch.Tensor              # (1, 256, 64, 64) float32
    input_size: tuple[int, int]         # (h, w) of SAMInput.pixels
    original_size: tuple[int, int]      # (H, W)


class SAMRefiner:
    """Refines Y0 with a SAM predictor (``segment_anything.SamPredictor`` or anything with its interface; the
    staged methods :meth:`embed` and :meth:`refine_embedded` need a
    :class:`~pseudolabel.sam.predictor.BatchedPointPredictor`)."""

    def __init__(self, predictor, cfg: SAMRefineConfig, weights: dict | None = None):
        self.predictor, self.cfg, self.weights = predictor, cfg, weights or {}

    @classmethod
    def from_config(cls, cfg: SAMRefineConfig, device="cpu", seed: int = 0, precision: str = "fp32") -> "SAMRefiner":
        """``precision``: autocast of SAM's image encoder on CUDA (:mod:`pseudolabel.precision`)."""
        from pseudolabel.sam.models import load_sam
        from pseudolabel.sam.predictor import BatchedPointPredictor

        model, weights = load_sam(cfg.sam_model, cfg.sam_checkpoint, device, seed)
        return cls(BatchedPointPredictor(model, precision=precision), cfg, weights)

    @property
    def device(self) -> torch.device:
        return torch.device(self.predictor.device)

    # -- the image side -----------------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> SAMInput:
        """The image resized for SAM's encoder (``SamPredictor.set_image``'s transform), on the host."""
        pixels = torch.from_numpy(self.predictor.transform.apply_image(image)).permute(2, 0, 1).contiguous()
        return SAMInput(pixels, tuple(image.shape[:2]))

    def embed(self, images: list) -> list[ImageEmbedding]:
        """SAM image embeddings of images (``(H, W, 3)`` uint8 arrays or :class:`SAMInput`). On a GPU they go
        through the encoder together; on a CPU one at a time, so an embedding never depends on the other images."""
        inputs = [x if isinstance(x, SAMInput) else self.prepare(x) for x in images]
        chunks = [[x] for x in inputs] if self.device.type == "cpu" else [inputs] if inputs else []
        embeddings = []
        for chunk in chunks:
            features = self.predictor.encode([x.pixels for x in chunk])
            embeddings += [ImageEmbedding(features[i: i + 1], tuple(x.pixels.shape[-2:]), x.original_size)
                           for i, x in enumerate(chunk)]
        return embeddings

    def prompts(self, y0: np.ndarray, scores, class_ids) -> tuple[np.ndarray, np.ndarray]:
        """Prompt points ``(P, 2)`` xy and the index (into ``class_ids``) of the class each one prompts, in the order
        of ``class_ids``. ``scores`` (array or tensor) is read only by ``ensure_point_per_class``."""
        height, width = y0.shape
        points = grid_points(height, width, self.cfg.grid_size)
        on_label = y0[np.floor(points[:, 1]).astype(int), np.floor(points[:, 0]).astype(int)]
        xy, owner = [], []
        for k, c in enumerate(class_ids):
            mine = points[on_label == c]
            if len(mine) == 0 and self.cfg.ensure_point_per_class and (y0 == c).any():
                peak = np.where(y0 == c, _host(scores[1 + k]), -np.inf).argmax()
                mine = np.array([[peak % width + 0.5, peak // width + 0.5]])
            xy.append(mine)
            owner.extend([k] * len(mine))
        return np.concatenate(xy).reshape(-1, 2), np.array(owner, dtype=np.int64)

    def point_masks(self, xy: np.ndarray, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's 3 masks ``(B, 3, H, W) bool`` and predicted IoUs ``(B, 3)`` for one positive point each."""
        coords = self.predictor.transform.apply_coords_torch(
            torch.as_tensor(xy, dtype=torch.float32, device=self.predictor.device), size)
        labels = torch.ones(len(xy), 1, dtype=torch.int64, device=coords.device)
        masks, iou_pred, _ = self.predictor.predict_torch(coords[:, None, :], labels, multimask_output=True)
        return masks, iou_pred

    def prompts_per_step(self, height: int, width: int) -> int:
        """Prompts decoded, selected and filtered together: ``points_per_batch``, fewer when their masks would take
        more than :data:`MASK_BYTES_PER_STEP`."""
        return max(1, min(self.cfg.points_per_batch, MASK_BYTES_PER_STEP // (3 * height * width)))

    def _select_and_filter(self, masks, iou_pred, regions) -> tuple[torch.Tensor, torch.Tensor]:
        """Chosen mask per point and whether it passes δ. ``regions (B, H, W)``: R for each point."""
        flat, regions = masks.flatten(2), regions.flatten(1)
        count = lambda m: m.view(torch.uint8).sum(dim=-1, dtype=torch.int32).double()  # noqa: E731  (fast popcount)
        inter, area, region_area = count(flat & regions[:, None]), count(flat), count(regions)[:, None]
        iou = inter / (area + region_area - inter).clamp(min=1)
        if self.cfg.mask_select == "region_iou":
            best = iou == iou.max(dim=1, keepdim=True).values
            choice = torch.where(best, iou_pred.double(), -torch.inf).argmax(dim=1)
        elif self.cfg.mask_select == "sam_score":
            choice = iou_pred.argmax(dim=1)
        else:
            choice = torch.full((len(masks),), 2, dtype=torch.long, device=masks.device)
        rows = torch.arange(len(masks), device=masks.device)
        metric = iou if self.cfg.filter_metric == "iou" else inter / area.clamp(min=1)
        return masks[rows, choice], metric[rows, choice] >= self.cfg.delta

    def refine(self, image: np.ndarray, y0, scores, class_ids) -> Refinement:
        """Refine Y0 (``(H, W) uint8``) given the image, the ``[bg, classes]`` scores (arrays or tensors) and the
        image's classes: ``set_image`` on the predictor, then :meth:`refine_embedded`'s steps."""
        class_ids = tuple(class_ids)
        if not self.cfg.enabled:
            return _unrefined(y0, class_ids)
        start = time.perf_counter()
        self.predictor.set_image(image)
        return self._refine_current(y0, scores, class_ids, time.perf_counter() - start)

    def refine_embedded(self, embedding: ImageEmbedding, y0, scores, class_ids) -> Refinement:
        """:meth:`refine` from an image embedding (:meth:`embed`) instead of the image."""
        class_ids = tuple(class_ids)
        if not self.cfg.enabled:
            return _unrefined(y0, class_ids)
        self.predictor.set_features(embedding.features, embedding.input_size, embedding.original_size)
        return self._refine_current(y0, scores, class_ids, 0.0)

    def _refine_current(self, y0, scores, class_ids: tuple[int, ...], encoder_seconds: float) -> Refinement:
        """Prompts, masks, filter and merge for the predictor's current image."""
        timings = {"sam_encoder": encoder_seconds}
        start = time.perf_counter()
        device = self.device
        y0_host = _host(y0)
        y0 = torch.as_tensor(y0, device=device)
        scores = torch.as_tensor(scores, device=device)
        height, width = y0.shape
        xy, owner = self.prompts(y0_host, scores, class_ids)
        regions = torch.stack([y0 == c for c in class_ids])
        components = [ndi.label(y0_host == c)[0] for c in class_ids] if self.cfg.filter_scope == "component" \
            else None
        accepted = torch.zeros_like(regions)
        passed = torch.zeros(len(class_ids), dtype=torch.int64, device=device)
        decode = 0.0
        step = self.prompts_per_step(height, width)
        for begin in range(0, len(xy), step):
            batch, who = xy[begin: begin + step], owner[begin: begin + step]
            tick = time.perf_counter()
            masks, iou_pred = self.point_masks(batch, (height, width))
            decode += time.perf_counter() - tick
            if components is None:
                point_regions = regions[torch.as_tensor(who, device=device)]
            else:
                point_regions = torch.from_numpy(np.stack([
                    components[k] == components[k][int(y), int(x)] for (x, y), k in zip(batch, who)])).to(device)
            chosen, keep = self._select_and_filter(masks.to(device), iou_pred.to(device), point_regions)
            # prompts come class by class, so each class's are one slice (no data-dependent indexing to wait for)
            for k, first, stop in _runs(who):
                accepted[k] |= (chosen[first:stop] & keep[first:stop, None, None]).any(dim=0)
                passed[k] += keep[first:stop].sum()
        labels = self.merge(y0, scores, class_ids, regions, accepted).cpu().numpy()
        timings.update(sam_decoder=decode, filter_merge=time.perf_counter() - start - decode)
        prompts = np.bincount(owner, minlength=len(class_ids))
        return Refinement(labels, tuple(int(p) for p in prompts), tuple(int(p) for p in passed.tolist()), timings)

    def merge(self, y0: torch.Tensor, scores: torch.Tensor, class_ids, regions: torch.Tensor,
              accepted: torch.Tensor) -> torch.Tensor:
        """Compose the label map from each class's support: conflicts go to the larger refined score
        (docs/method.md#merge-and-conflicts). Runs in bands of rows (each pixel on its own, so the same result)."""
        height, width = y0.shape
        has_mask = accepted.flatten(1).any(dim=1)[:, None, None]
        rows = max(1, MERGE_BYTES_PER_BAND // (4 * max(1, len(class_ids)) * width))
        return torch.cat([self._merge_band(y0[top: top + rows], scores[:, top: top + rows], class_ids,
                                           regions[:, top: top + rows], accepted[:, top: top + rows], has_mask)
                          for top in range(0, height, rows)])

    def _merge_band(self, y0, scores, class_ids, regions, accepted, has_mask) -> torch.Tensor:
        if self.cfg.merge == "replace":
            support = torch.where(has_mask, accepted, regions)
        else:
            support = accepted | regions
        claims = support.sum(dim=0)
        winner = torch.where(support, scores[1:1 + len(class_ids)], -torch.inf).argmax(dim=0)
        keys = torch.tensor(class_ids, dtype=torch.uint8, device=support.device)
        labels = torch.where(claims > 0, keys[winner], 0).to(torch.uint8)
        if self.cfg.conflict_ignore:
            labels = torch.where(claims > 1, IGNORE_INDEX, labels)
        if self.cfg.uncertain_ignore:
            labels = torch.where((labels != y0) & (labels != IGNORE_INDEX), IGNORE_INDEX, labels)
        return labels


def _unrefined(y0, class_ids: tuple[int, ...]) -> Refinement:
    """Refinement off: the label is Y0."""
    return Refinement(_host(y0).copy(), (0,) * len(class_ids), (0,) * len(class_ids))


def _host(x) -> np.ndarray:
    """An array or tensor as a host array."""
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _runs(owner: np.ndarray):
    """``(value, start, stop)`` of each run of equal values in ``owner``."""
    if len(owner) == 0:
        return
    edges = np.flatnonzero(np.diff(owner)) + 1
    for start, stop in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(owner)]])):
        yield int(owner[start]), int(start), int(stop)
