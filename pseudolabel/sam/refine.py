"""SAM refinement of the initial label Y0 (docs/method.md#sam-refinement): grid points filtered by class, one
positive point per prompt (batched), multimask selection, the δ filter and the merge into a label map.

Two stages a caller can keep apart and reuse: :meth:`SAMRefiner.embed` (SAM's image encoder; an
:class:`ImageEmbedding` serves every refinement setting of the same SAM model) and :meth:`SAMRefiner.refine_batch`,
the one refinement path for one image or several, on any device (docs/design.md). Everything runs at the images'
full resolution in pieces of at most :data:`PIECE_BYTES` (decoding steps, merge bands); each mask and each pixel is
computed as in one piece, so the pieces never change a label, and at VOC and COCO sizes the pieces are whole.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi
import torch

from pseudolabel.canvas import crop
from pseudolabel.classes import IGNORE_INDEX
from pseudolabel.cli_options import DictConfig
from pseudolabel.transfer import upload

POINTS_PER_BATCH = 256  # --points-per-batch's default: prompts decoded together
# the most bytes of full-resolution work in one piece: a decoding step's masks (3 per prompt, one byte per pixel: 3
# prompts of a 6000x4000 image) or a merge band's per-class float32 scores
PIECE_BYTES = 256 << 20
KEPT_MASK_BYTES = 2 * PIECE_BYTES   # decoded masks a MaskCache keeps for later settings of a labelling step


def registered_sam_variants() -> tuple[str, ...]:
    """The names in the SAM registry (``pseudolabel/sam/models.py``), read when a parser is built: segment_anything
    is imported then, not with this module."""
    from pseudolabel.sam.models import SAM_VARIANTS

    return tuple(SAM_VARIANTS)


@dataclass
class SAMRefineConfig(DictConfig):
    """Stage one, part 2. Defaults and their reasons: docs/method.md#open-choices-and-their-flags."""

    enabled: bool = field(default=True, metadata={
        "group": "paper", "help": "refine Y0 with SAM (off: the output is Y0)", "flag": "refine"})
    sam_model: str = field(default="vit_b", metadata={
        "group": "paper", "help": "SAM variant (paper Table 6)", "choices": registered_sam_variants})
    sam_checkpoint: str | None = field(default=None, metadata={
        "group": "models",
        "help": "local SAM checkpoint; default: the official file in the cache, downloaded if absent; "
                "'random' = seeded random weights (pipeline checks only)"})
    sam_seed: int = field(default=0, metadata={
        "group": "models", "help": "seed of SAM's weights with --sam-checkpoint random"})
    grid_size: int = field(default=16, metadata={
        "group": "paper", "help": "n_h = n_w: candidate points at the cell centres", "min": 1})
    delta: float = field(default=0.5, metadata={
        "group": "paper", "help": "δ: keep a mask if its filter metric >= δ (Eq. 8)", "min": 0.0, "max": 1.0})
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


def load_predictor(cfg: SAMRefineConfig, device="cpu", precision: str = "fp32") -> tuple:
    """The point predictor of ``cfg``'s SAM model (SAM 2.1 has its own) in ``precision``, and its weights' identity."""
    from pseudolabel.sam.models import SAM_VARIANTS, load_sam
    from pseudolabel.sam.predictor import BatchedPointPredictor

    model, weights = load_sam(cfg.sam_model, cfg.sam_checkpoint, device, cfg.sam_seed)
    predictor = SAM_VARIANTS[cfg.sam_model].predictor or BatchedPointPredictor
    return predictor(model, precision=precision), weights


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
class RefinedBatch:
    """What :meth:`SAMRefiner.refine_batch` made of several images, on the device except the prompt counts."""

    labels: torch.Tensor                # (B, H, W) uint8 canvas of the refined label maps
    prompts: list[tuple[int, ...]]      # per image, the prompt points of each class
    masks_accepted: torch.Tensor        # (B, K) int64: per image and class, the points whose mask passed δ
    timings: dict[str, float] = field(default_factory=dict)    # seconds by stage, for the whole batch
    reused_seconds: float = 0.0         # decoding time of the masks taken from a MaskCache (in timings' sam_decoder)

    def refinements(self, sizes: list[tuple[int, int]]) -> list[Refinement]:
        """One :class:`Refinement` per image of size ``sizes[i]`` (host copies), each with an equal share of the
        timings."""
        labels, accepted = self.labels.cpu().numpy(), self.masks_accepted.cpu().numpy()
        share = {k: v / len(sizes) for k, v in self.timings.items()}
        return [Refinement(crop(labels[i], size).copy(), prompts, tuple(int(a) for a in accepted[i, :len(prompts)]),
                           dict(share)) for i, (size, prompts) in enumerate(zip(sizes, self.prompts))]


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
    """Refines Y0 with a :class:`~pseudolabel.sam.predictor.BatchedPointPredictor` (or anything with its interface:
    ``transform``, ``device``, ``encode``, ``set_batch``, ``predict_points``)."""

    def __init__(self, predictor, cfg: SAMRefineConfig, weights: dict | None = None,
                 points_per_batch: int = POINTS_PER_BATCH):
        """``points_per_batch``: prompts decoded together, over all images of a batch (a runtime setting: the masks do
        not depend on it)."""
        self.predictor, self.cfg, self.weights, self.points_per_batch = predictor, cfg, weights or {}, points_per_batch

    @classmethod
    def from_config(cls, cfg: SAMRefineConfig, device="cpu", precision: str = "fp32",
                    points_per_batch: int = POINTS_PER_BATCH) -> "SAMRefiner":
        """``precision``: of SAM's image encoder on CUDA (:mod:`pseudolabel.precision`)."""
        predictor, weights = load_predictor(cfg, device, precision)
        return cls(predictor, cfg, weights, points_per_batch)

    @property
    def device(self) -> torch.device:
        return torch.device(self.predictor.device)

    # -- the image side -----------------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> SAMInput:
        """The image resized for SAM's encoder (``SamPredictor.set_image``'s transform), on the host."""
        pixels = torch.from_numpy(np.ascontiguousarray(self.predictor.transform.apply_image(image).transpose(2, 0, 1)))
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

    # -- refinement -----------------------------------------------------------------------------------------------
    def refine_embedded(self, embedding: ImageEmbedding, y0, scores, class_ids) -> Refinement:
        """:meth:`refine_batch` of one image: Y0 ``(H, W)`` uint8 and the ``[bg, classes]`` scores (arrays or
        tensors), its embedding and classes."""
        y0 = torch.as_tensor(y0).to(self.device)
        scores = torch.as_tensor(scores).to(self.device).float()
        size = tuple(y0.shape)
        return self.refine_batch([embedding], y0[None], scores[None], [size], [class_ids]).refinements([size])[0]

    def refine_batch(self, embeddings: list[ImageEmbedding], y0: torch.Tensor, scores: torch.Tensor,
                     sizes: list[tuple[int, int]], class_ids_list: list, cache: "MaskCache | None" = None
                     ) -> RefinedBatch:
        """Refine several images at once on their canvases: ``y0 (B, H, W)`` uint8 and ``scores (B, 1+K, H, W)``
        (padded class channels -inf), each image's size and classes. One wait for the device (Y0 at the grid points,
        for the prompts); the prompts decoded a chunk at a time (a row of the grid, :meth:`_batch_prompts`), the
        images together, :meth:`prompts_per_step` at a time, as many for each image in a step; selection, the δ
        filter and the merge (:meth:`merge_batch`) on the canvases. ``cache``: the decoding steps of other settings
        on the same images (:class:`MaskCache`), not decoded again."""
        class_ids = [tuple(c) for c in class_ids_list]
        widest = max(len(c) for c in class_ids)
        if not self.cfg.enabled:
            return RefinedBatch(y0.clone(), [(0,) * len(c) for c in class_ids],
                                torch.zeros(len(class_ids), widest, dtype=torch.int64, device=y0.device))
        start = time.perf_counter()
        device, canvas = y0.device, tuple(y0.shape[-2:])
        keys = upload([c + (IGNORE_INDEX,) * (widest - len(c)) for c in class_ids], device, torch.uint8)
        regions = y0[:, None] == keys[:, :, None, None]  # (B, K, H, W); a padded class (255) has no pixel
        xy, owner, chunks = self._batch_prompts(y0, scores, regions, sizes, class_ids)
        components = self._components(y0, class_ids, xy, owner) if self.cfg.filter_scope == "component" else None
        accepted = torch.zeros_like(regions)
        passed = torch.zeros(len(sizes) * widest + 1, dtype=torch.int64, device=device)  # + 1: padding's
        decode = reused = 0.0
        held = None
        for step in _decoding_steps(chunks, self.prompts_per_step(*canvas)):
            images = step.held[: len(step.taken)]
            points = torch.from_numpy(np.stack([_padded(xy[i][t], step.prompts, xy[i][t][-1])
                                                for i, t in zip(images, step.taken)]))
            key = (id(self.predictor), canvas, tuple(id(embeddings[i]) for i in step.held), points.numpy().tobytes())
            found = cache.steps.get(key) if cache is not None else None
            if found is None:
                tick = time.perf_counter()
                if step.held != held:
                    self.predictor.set_batch([embeddings[i].features for i in step.held],
                                             [embeddings[i].input_size for i in step.held],
                                             [sizes[i] for i in step.held], canvas)
                    held = step.held
                masks, iou_pred = self.predictor.predict_points(points.float())
                found = (masks, iou_pred, time.perf_counter() - tick)
                decode += found[2]
                if cache is not None:
                    cache.keep(key, found)
            else:
                reused += found[2]
            masks, iou_pred = found[:2]
            who = np.stack([_padded(owner[i][t], step.prompts, -1) for i, t in zip(images, step.taken)])  # -1: padding
            flat = np.where(who >= 0, np.array(images)[:, None] * widest + who, len(passed) - 1)
            flat_device = upload(flat.ravel(), device)
            picked = flat_device.clamp(max=len(passed) - 2)  # padding reads some class's region; it is dropped below
            if components is not None:
                component_maps, component_of_point = components
                point_ids = np.stack([_padded(component_of_point[i][t], step.prompts, 0)
                                      for i, t in zip(images, step.taken)]).ravel()
                point_regions = component_maps.flatten(2).flatten(0, 1)[picked] == upload(point_ids, device)[:, None]
            else:
                point_regions = regions.flatten(2).flatten(0, 1)[picked]
            chosen, keep = self._select_and_filter(masks.flatten(0, 1).flatten(-2), iou_pred.flatten(0, 1),
                                                   point_regions)
            keep &= upload(who.ravel() >= 0, device)
            passed.index_add_(0, flat_device, keep.long())
            chosen = (chosen & keep[:, None]).view(len(images), step.prompts, *canvas).view(torch.uint8)
            order = np.argsort(flat.ravel(), kind="stable")     # the step's prompts by (image, class), padding last
            targets, starts = np.unique(flat.ravel()[order], return_index=True)
            grouped = chosen.flatten(0, 1).index_select(0, upload(order, device))
            for target, begin, end in zip(targets, starts, [*starts[1:], len(order)]):
                if target < len(passed) - 1:
                    accepted.view(-1, *canvas)[target] |= grouped[begin:end].amax(dim=0).view(torch.bool)
        labels = self.merge_batch(y0, scores, keys, regions, accepted)
        timings = {"sam_decoder": decode + reused, "filter_merge": time.perf_counter() - start - decode}
        prompts = [tuple(int(n) for n in np.bincount(o, minlength=len(c))) for o, c in zip(owner, class_ids)]
        return RefinedBatch(labels, prompts, passed[:-1].view(len(sizes), widest), timings, reused)

    def prompts_per_step(self, height: int, width: int) -> int:
        """Prompts decoded, selected and filtered together on a batch's canvas of ``height x width``:
        ``points_per_batch``, fewer when their masks would take more than :data:`PIECE_BYTES`."""
        return max(1, min(self.points_per_batch, PIECE_BYTES // (3 * height * width)))

    def _select_and_filter(self, masks, iou_pred, regions) -> tuple[torch.Tensor, torch.Tensor]:
        """Chosen mask per point and whether it passes δ. ``regions (B, H, W)``: R for each point."""
        flat, regions = masks.flatten(2), regions.flatten(1)
        inter, area = _count_true(flat & regions[:, None]), _count_true(flat)
        region_area = _count_true(regions)[:, None]
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

    def merge_batch(self, y0: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor, regions: torch.Tensor,
                    accepted: torch.Tensor) -> torch.Tensor:
        """Compose the label maps from each class's support (conflicts go to the larger refined score,
        docs/method.md#merge-and-conflicts): ``y0 (B, H, W)``, ``scores (B, 1+K, H, W)``, class keys ``(B, K)``,
        ``regions`` and ``accepted`` ``(B, K, H, W)`` (a class padded in is in neither). Runs in bands of rows whose
        per-class float32 scores take at most :data:`PIECE_BYTES` (each pixel on its own, so the same
        result; one band at VOC and COCO sizes)."""
        batch, classes, height, width = regions.shape
        has_mask = accepted.flatten(2).any(dim=2)[..., None, None]
        rows = max(1, PIECE_BYTES // (4 * batch * max(1, classes) * width))
        bands = [self._merge_band(y0[:, top: top + rows], scores[:, :, top: top + rows], keys,
                                  regions[:, :, top: top + rows], accepted[:, :, top: top + rows], has_mask)
                 for top in range(0, height, rows)]
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=1)

    def _merge_band(self, y0, scores, keys, regions, accepted, has_mask) -> torch.Tensor:
        """:meth:`merge_batch` on one band of rows (``has_mask``: whether each class kept a mask anywhere)."""
        if self.cfg.merge == "replace":
            support = torch.where(has_mask, accepted, regions)
        else:
            support = accepted | regions
        claims = support.sum(dim=1)
        winner = torch.where(support, scores[:, 1:1 + keys.shape[1]], -torch.inf).argmax(dim=1)
        labels = torch.where(claims > 0, keys.gather(1, winner.flatten(1)).view_as(winner), 0).to(torch.uint8)
        if self.cfg.conflict_ignore:
            labels = torch.where(claims > 1, IGNORE_INDEX, labels)
        if self.cfg.uncertain_ignore:
            labels = torch.where((labels != y0) & (labels != IGNORE_INDEX), IGNORE_INDEX, labels)
        return labels

    # -- prompts --------------------------------------------------------------------------------------------------
    def _batch_prompts(self, y0: torch.Tensor, scores: torch.Tensor, regions: torch.Tensor, sizes, class_ids
                       ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Every image's prompt points ``(P, 2)`` xy, the class index of each and its chunk, from one host copy: Y0
        at the grid points, in grid order, a chunk per row of the grid, and, with ``ensure_point_per_class``, each
        class's highest score in its Y0 region (``regions (B, K, H, W)``), the prompt of a class without a grid
        point, in a last chunk. A decoding step's masks depend on its points only, so settings that prompt the same
        points of a grid row share that row's steps whatever class each point prompts (:class:`MaskCache`)."""
        height, width = y0.shape[-2:]
        grids = [grid_points(*size, self.cfg.grid_size) for size in sizes]
        at = np.concatenate([i * height * width + np.floor(p[:, 1]).astype(int) * width + np.floor(p[:, 0]).astype(int)
                             for i, p in enumerate(grids)])
        wanted = [y0.flatten()[upload(at, y0.device)].long()]
        ensure = self.cfg.ensure_point_per_class
        if ensure:
            best = torch.where(regions, scores[:, 1:1 + regions.shape[1]], -torch.inf).flatten(2).argmax(dim=2)
            wanted += [best.flatten(), regions.flatten(2).any(dim=2).long().flatten()]
        host = torch.cat(wanted).cpu().numpy()  # the one wait: prompts are host work
        on_label = np.split(host[: len(at)], np.cumsum([len(p) for p in grids])[:-1])
        best, present = host[len(at):].reshape(2, len(sizes), -1) if ensure else (None, None)
        xy, owner, chunks = [], [], []
        for i, (points, labels, ids) in enumerate(zip(grids, on_label, class_ids)):
            lookup = np.full(256, -1, np.int64)
            lookup[list(ids)] = np.arange(len(ids))
            classes = lookup[labels]
            on = np.flatnonzero(classes >= 0)
            peaks = [k for k in range(len(ids)) if ensure and present[i, k] and not (classes[on] == k).any()]
            peak_xy = [(best[i, k] % width + 0.5, best[i, k] // width + 0.5) for k in peaks]
            xy.append(np.concatenate([points[on], np.array(peak_xy, points.dtype).reshape(-1, 2)]))
            owner.append(np.concatenate([classes[on], np.array(peaks, np.int64)]))
            chunks.append(np.concatenate([on // self.cfg.grid_size, np.full(len(peaks), self.cfg.grid_size)]))
        return xy, owner, chunks

    @staticmethod
    def _components(y0: torch.Tensor, class_ids, xy, owner) -> tuple[torch.Tensor, list[np.ndarray]]:
        """The component scope's regions: each class's connected components ``(B, K, H, W)`` on the device and the
        component of each prompt point, per image."""
        y0_host = y0.cpu().numpy()
        components = np.zeros((*y0.shape[:1], max(len(c) for c in class_ids), *y0.shape[1:]), np.int32)
        point_ids = []
        for i, ids in enumerate(class_ids):
            for k, c in enumerate(ids):
                components[i, k] = ndi.label(y0_host[i] == c)[0]
            point_ids.append(np.array([components[i, k, int(y), int(x)] for (x, y), k in zip(xy[i], owner[i])],
                                      np.int32))
        return upload(components, y0.device), point_ids


class MaskCache:
    """The decoding steps of one labelling step's settings (:meth:`SAMRefiner.refine_batch`), kept for the settings
    after the first: a step of the same predictor, images (their embeddings, in the same order, on the same canvas)
    and points gives the same masks, so a setting whose prompts equal an earlier one's (δ, filter, mask selection or
    merge rows) decodes nothing again, and its labels are still exactly its own on every device. At most
    :data:`KEPT_MASK_BYTES` of masks are kept; a step beyond them is decoded again."""

    def __init__(self):
        self.budget, self.kept_bytes = KEPT_MASK_BYTES, 0
        self.steps: dict[tuple, tuple[torch.Tensor, torch.Tensor, float]] = {}  # key -> masks, IoUs, seconds

    def keep(self, key: tuple, decoded: tuple[torch.Tensor, torch.Tensor, float]) -> None:
        size = decoded[0].nbytes
        if self.kept_bytes + size <= self.budget:
            self.steps[key] = decoded
            self.kept_bytes += size


@dataclass
class _Step:
    """One decoding step of :meth:`SAMRefiner.refine_batch`, within one chunk of the prompts: the images holding
    prompts in the chunk, most first (the images the predictor holds for the step), and the prompts ``taken`` of the
    first ``len(taken)`` of them, each padded to ``prompts``."""

    held: list[int]
    taken: list[slice]
    prompts: int


def _decoding_steps(chunks: list[np.ndarray], limit: int) -> list[_Step]:
    """Steps decoding every image's prompts chunk by chunk (``chunks[i]``: the chunk of each of image i's prompts,
    ascending), so that what a step decodes depends on its chunk's prompts only. Within a chunk, at most ``limit``
    prompts (or one per image) per step, every image with prompts left taking as many, so an image's padding stays
    within a step."""
    steps = []
    for chunk in np.unique(np.concatenate(chunks)):
        spans = {i: (int(at[0]), len(at)) for i, c in enumerate(chunks) if len(at := np.flatnonzero(c == chunk))}
        held = sorted(spans, key=lambda i: -spans[i][1])     # stable: ties in batch order
        first = 0
        while (images := sum(1 for i in held if spans[i][1] > first)):
            prompts = max(1, min(limit // images, spans[held[0]][1] - first))
            steps.append(_Step(held, [slice(spans[i][0] + first, spans[i][0] + min(first + prompts, spans[i][1]))
                                      for i in held[:images]], prompts))
            first += prompts
    return steps


def _count_true(masks: torch.Tensor) -> torch.Tensor:
    """The True entries along the last axis of a bool tensor, as float64. Counted in uint8 over segments of 255
    entries, then summed: torch sums a bool or uint8 tensor into a wider type by first copying all of it in that type,
    which takes ten times as long on a CPU."""
    entries = masks.view(torch.uint8)
    whole = entries.shape[-1] // 255 * 255
    segments = entries[..., :whole].unflatten(-1, (-1, 255)).sum(dim=-1, dtype=torch.uint8)
    return (segments.sum(dim=-1, dtype=torch.int32) + entries[..., whole:].sum(dim=-1, dtype=torch.int32)).double()


def _padded(values: np.ndarray, length: int, fill) -> np.ndarray:
    """``values`` extended to ``length`` along its first axis with ``fill``."""
    return np.concatenate([values, np.full((length - len(values), *values.shape[1:]), fill, values.dtype)])
