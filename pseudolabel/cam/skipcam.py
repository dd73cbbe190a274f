"""Skip-CAM: localization maps from a frozen CLIP ViT with skip connections into the last block, refined by
class-aware attention affinity, plus the initial pseudo label Y0 (docs/method.md#skip-cam).

Stages whose products a caller can keep and reuse: :meth:`SkipCAM.preprocess` (the CLIP input), :meth:`SkipCAM.frozen`
(blocks 1..N-1 once per image, :class:`FrozenFeatures`, shared by every Skip-CAM setting of the same CLIP model and
input size), then :meth:`SkipCAM.label_batch` (one setting's maps, scores and Y0, :class:`CAMBatch`: the last block
once on a batch that replicates its input per class, so one backward gives every class's Grad-CAM gradient).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pseudolabel.cam.caa import affinity_from_attention, box_mask, minmax, refine_with_boxes
from pseudolabel.classes import ClassSet
from pseudolabel.cli_options import DictConfig
from pseudolabel.cam.clip_models import DEFAULT_CLIP_MODEL, clip_architecture, load_clip
from pseudolabel.loc_maps import resize_maps
from pseudolabel.cam.par import PARConfig, par_refine
from pseudolabel.cam.prompts import PROMPT_SET_ALIASES, PROMPT_SETS, canonical_prompt_set, prompt_texts, text_embeddings
from pseudolabel.canvas import crop, pad_stack
from pseudolabel.precision import encoder_precision
from pseudolabel.transfer import upload

LOG = logging.getLogger(__name__)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Defaults that depend on the dataset (the field defaults hold for every other one): the paper's τ is 0.7 on COCO.
DATASET_DEFAULTS = {"coco": {"tau": 0.7}}


def _default_text(name: str, default) -> str:
    """``--help``'s default of a field, with its per-dataset values (``0.4; coco: 0.7``)."""
    return "; ".join([str(default)] + [f"{d}: {v[name]}" for d, v in DATASET_DEFAULTS.items() if name in v])


@dataclass
class SkipCAMConfig(DictConfig):
    """Stage one, part 1. Defaults and their reasons: docs/method.md#open-choices-and-their-flags;
    ``for_dataset`` adds the per-dataset ones.

    ``clip_model`` is stored as the config that runs (``ViT-B-16`` with OpenAI's weights becomes
    ``ViT-B-16-quickgelu``) and ``prompt_set`` by its canonical name (``clipes`` becomes ``prompt1``), so a rerun
    spelled differently resumes the same outputs.
    """

    num_skips: int = field(default=3, metadata={
        "group": "paper", "help": "K skip connections: outputs of blocks N-2..N-1-K are fused with block N-1's "
                                  "(0 = plain CLIP-ES Grad-CAM)", "min": 0})
    skip_fusion: str = field(default="sum", metadata={"help": "how skip features are fused",
                                                      "choices": ("sum", "mean")})
    skip_entry: str = field(default="input", metadata={
        "help": "where skips enter (docs/method.md#skip-fusion): input = into the last block's input; output = added "
                "to its output before pooling; average = last block run on each feature, CAMs averaged",
        "choices": ("input", "output", "average")})
    tau: float = field(default=0.4, metadata={
        "group": "paper", "help": "CAA box confidence threshold τ", "default_text": _default_text("tau", 0.4),
        "min": 0.0, "max": 1.0})
    bg_power: float = field(default=1.0, metadata={"help": "background score = (1 - max_c M_c) ** bg_power"})
    use_par: bool = field(default=True, metadata={"help": "refine the scores with PAR (WeCLIP's label path)",
                                                  "flag": "par"})
    par_max_side: int = field(default=320, metadata={
        "help": "PAR runs with the image's long side scaled to this (WeCLIP's 320 crops); 0 = full resolution",
        "min": 0})
    prompt_set: str = field(default="prompt1", metadata={
        "group": "paper",
        "help": "text prompts, the paper's Table 9 settings: prompt1 = CLIP-ES's 'a clean origami {}.' and class names "
                "(clipes is another name for it), prompt2 = CLIP's 7 templates, prompt3 = prompt1 with synonyms or "
                "attributes added to the class names, prompt4 = both (docs/stage_one.md)",
        "choices": tuple(PROMPT_SETS) + tuple(PROMPT_SET_ALIASES)})
    attn_blocks: int = field(default=8, metadata={"help": "last blocks whose attention forms the CAA affinity",
                                                  "min": 1})
    image_size: str = field(default="full", metadata={
        "help": "CAM input size: 'full' = each side rounded up to a multiple of 16, or a long-side length e.g. 512"})
    max_tokens: int = field(default=1600, metadata={
        "help": "token budget of the CAM input (docs/method.md#preprocessing): a larger input is scaled down, "
                "aspect kept, and the log says so; 1600 = 40x40 tokens, so no VOC (<= 500x500) or COCO "
                "(<= 640x640) image is scaled; 0 = no budget", "min": 0})
    clip_model: str = field(default=DEFAULT_CLIP_MODEL, metadata={
        "group": "models",
        "help": "open_clip model config name. OpenAI's weights (openai, or OpenAI's .pt archive) always run on the "
                "QuickGELU config they were trained with (ViT-B-16 -> ViT-B-16-quickgelu); a plain state dict runs "
                "on the config named here"})
    clip_weights: str = field(default="openai", metadata={
        "group": "models",
        "help": "'openai' (download, cached), a local checkpoint file (OpenAI .pt or open_clip state dict), or "
                "'random' (seeded; pipeline checks only)"})
    clip_seed: int = field(default=0, metadata={
        "group": "models", "help": "seed of CLIP's weights with --clip-weights random"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size != "full" and not (self.image_size.isdigit() and int(self.image_size) > 0):
            raise ValueError(f"--image-size {self.image_size}: give 'full' or the long side in pixels, e.g. 512")
        self.clip_model = clip_architecture(self.clip_model, self.clip_weights)
        self.prompt_set = canonical_prompt_set(self.prompt_set)

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> "SkipCAMConfig":
        """The config for a dataset: its defaults (τ 0.7 on COCO, the field default 0.4 elsewhere), then
        ``overrides``."""
        return cls(**{**DATASET_DEFAULTS.get(dataset, {}), **overrides})


@dataclass
class FrozenFeatures:
    """What CLIP's frozen blocks 1..N-1 give for one image, on the model's device: every Skip-CAM setting of the
    same CLIP model and CAM input size (K, skip entry, τ, prompts, PAR, ...) starts from it."""

    outputs: list[torch.Tensor]         # N-1 block outputs, each (1+hw, D)
    attentions: list[torch.Tensor]      # head-averaged attentions of the last attn_blocks-1, each (1+hw, 1+hw)
    grid: tuple[int, int]               # (h, w) tokens


@dataclass
class CAMOutput:
    """Skip-CAM result for one image (see docs/design.md). The scores and Y0 stay on the device that computed them
    (``score_maps``, ``label``), so SAM refinement on a GPU reads them there; ``scores`` and ``y0`` are host copies."""

    class_ids: tuple[int, ...]
    loc_maps_lowres: np.ndarray         # (K, h, w) float32
    score_maps: torch.Tensor            # (1+K, H, W) float32: [bg, classes...] after bg power and PAR
    label: torch.Tensor                 # (H, W) uint8: Y0
    timings: dict[str, float] = field(default_factory=dict)

    @cached_property
    def scores(self) -> np.ndarray:
        """``(1+K, H, W)`` float32 scores on the host."""
        return self.score_maps.cpu().numpy()

    @cached_property
    def y0(self) -> np.ndarray:
        """``(H, W)`` uint8 Y0 on the host."""
        return self.label.cpu().numpy()

    @property
    def loc_maps(self) -> np.ndarray:
        """``(K, H, W)`` localization maps at image resolution (CLIP-ES ``attn_highres``)."""
        return resize_maps(self.loc_maps_lowres, tuple(self.label.shape))


@dataclass
class CAMBatch:
    """Skip-CAM results of several images on the device (:meth:`SkipCAM.label_batch`): each image's classes and
    localization maps, and canvases (:mod:`pseudolabel.canvas`) of every image's scores and Y0."""

    class_ids: list[tuple[int, ...]]
    sizes: list[tuple[int, int]]        # (H, W) of each image
    loc_maps: list[torch.Tensor]        # (K, h, w) float32 each
    scores: torch.Tensor                # (B, 1+K, H, W) float32: [bg, classes...] after bg power and PAR; padding -inf
    labels: torch.Tensor                # (B, H, W) uint8: Y0; padding 0
    timings: dict[str, float] = field(default_factory=dict)     # seconds by stage, for the whole batch

    def outputs(self) -> list[CAMOutput]:
        """One :class:`CAMOutput` per image (the localization maps copied to the host together; the scores and Y0
        are views of the canvases), each with an equal share of the batch's timings."""
        host = torch.cat([m.flatten() for m in self.loc_maps]).cpu().numpy()
        maps = np.split(host, np.cumsum([m.numel() for m in self.loc_maps])[:-1])
        share = {k: v / len(self.sizes) for k, v in self.timings.items()}
        return [CAMOutput(ids, m.reshape(lowres.shape), crop(scores, (1 + len(ids), *size)), crop(label, size),
                          dict(share))
                for ids, m, lowres, scores, label, size in zip(self.class_ids, maps, self.loc_maps, self.scores,
                                                               self.labels, self.sizes)]


def block_forward(block, x: torch.Tensor, normed: torch.Tensor, need_attention: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One open_clip ResidualAttentionBlock on ``x`` from its LN1 output ``normed`` (``block.ln_1(x)``, the caller's,
    so that Grad-CAM can take its gradient) and, with ``need_attention``, its head-averaged attention (without it,
    ``nn.MultiheadAttention`` runs fused attention and returns None)."""
    out, attention = block.attn(normed, normed, normed, need_weights=need_attention, average_attn_weights=True)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x))), attention


class SkipCAM:
    """Skip-CAM localization maps and the initial label Y0 for images with known image-level classes."""

    def __init__(self, model, tokenizer, class_set: ClassSet, cfg: SkipCAMConfig, device="cpu", weights=None,
                 precision: str = "fp32", text: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``precision``: of the CLIP blocks on CUDA (:mod:`pseudolabel.precision`; a CPU uses fp32).
        ``text``: the foreground and background text embeddings of ``cfg.prompt_set`` when another SkipCAM on the
        same model has them (``fg_text``, ``bg_text``), else computed here."""
        self.model, self.cfg, self.class_set, self.precision = model, cfg, class_set, precision
        self.device = torch.device(device)
        self.visual = model.visual
        self.blocks = list(self.visual.transformer.resblocks)
        if not 0 <= cfg.num_skips <= len(self.blocks) - 2:
            raise ValueError(f"num_skips must be in 0..{len(self.blocks) - 2} for a {len(self.blocks)}-block ViT")
        if not 1 <= cfg.attn_blocks <= len(self.blocks):
            raise ValueError(f"attn_blocks must be in 1..{len(self.blocks)}")
        self.patch = self.visual.conv1.kernel_size[0]
        self.logit_scale = float(model.logit_scale.exp())  # 100 for OpenAI's weights, as CLIP-ES hard-codes
        self.weights = weights or {}
        if text is None:
            foreground, background = prompt_texts(class_set, cfg.prompt_set)
            text = (text_embeddings(model, tokenizer, foreground, self.device),
                    text_embeddings(model, tokenizer, background, self.device))
        self.fg_text, self.bg_text = text
        self.par_cfg = PARConfig()

    @classmethod
    def from_config(cls, cfg: SkipCAMConfig, class_set: ClassSet, device="cpu", precision: str = "fp32") -> "SkipCAM":
        """A SkipCAM on the CLIP model and weights ``cfg`` names (:func:`~pseudolabel.cam.clip_models.load_clip`)."""
        model, tokenizer, weights = load_clip(cfg.clip_model, cfg.clip_weights, device, cfg.clip_seed)
        return cls(model, tokenizer, class_set, cfg, device, weights, precision)

    # -- preprocessing ------------------------------------------------------------------------------------------
    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Token rows and columns of an image before the budget: the image (``full``) or its long side scaled to
        ``image_size``, each side rounded up to a multiple of the patch size (docs/method.md#preprocessing)."""
        if self.cfg.image_size != "full":
            scale = int(self.cfg.image_size) / max(height, width)
            height, width = height * scale, width * scale
        return math.ceil(height / self.patch), math.ceil(width / self.patch)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """CAM input size (h, w): the token grid scaled down, aspect kept, to at most ``max_tokens`` tokens (the
        attention's memory grows with the square of the token count), times the patch size."""
        rows, cols = self.token_grid(height, width)
        budget = self.cfg.max_tokens
        if budget and rows * cols > budget:  # the sides scaled by one factor, rounded to the largest grid that fits
            scale = math.sqrt(budget / (rows * cols))
            grids = [(max(1, round_r(rows * scale)), max(1, round_c(cols * scale)))
                     for round_r in (round, math.floor) for round_c in (round, math.floor)]
            rows, cols = max((g for g in grids if g[0] * g[1] <= budget), key=lambda g: g[0] * g[1])
        return rows * self.patch, cols * self.patch

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Bicubic resize to the CAM input size and CLIP normalisation: ``(3, h, w)`` on the host (thread-safe)."""
        h, w = self.input_size(*image.shape[:2])
        if (h, w) != tuple(self.patch * n for n in self.token_grid(*image.shape[:2])):
            LOG.info("CAM input of a %dx%d image scaled to %dx%d by the token budget (--max-tokens %d); its labels "
                     "keep the full size", image.shape[1], image.shape[0], w, h, self.cfg.max_tokens)
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC), np.float32) / np.float32(255)
        # numpy, not torch: the decoding threads run this at once, and each torch operation would start a team of
        # intra-op threads per calling thread (numpy's float32 arithmetic gives the same bits)
        normalised = (resized - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch + class tokens with the positional embedding interpolated to the token grid: ``(B, 1+hw, D)``."""
        v = self.visual
        x = v.conv1(pixels)
        b, d, h, w = x.shape
        x = x.reshape(b, d, h * w).transpose(1, 2)
        pos = v.positional_embedding.to(x.dtype)
        side = int(round((pos.shape[0] - 1) ** 0.5))
        grid = pos[1:].reshape(1, side, side, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        # CLIP-ES (and WeCLIP) round the interpolated embedding to fp16 on every device (clip/model.py
        # upsample_pos_emb); so do we, so that K=0 maps equal theirs.
        pos = torch.cat([pos[:1], grid.reshape(d, h * w).T], dim=0).half().to(x.dtype)
        cls = v.class_embedding.to(x.dtype).expand(b, 1, d)
        return v.ln_pre(torch.cat([cls, x], dim=1) + pos)

    # -- the two passes -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def frozen_blocks(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Outputs of blocks 1..N-1 (one forward for all classes) and the attentions CAA reads, those of the last
        ``attn_blocks - 1`` of them; the blocks before compute fused attention without weights."""
        x = self.embed(pixels)
        frozen = self.blocks[:-1]
        first_read = len(frozen) - (self.cfg.attn_blocks - 1)
        outputs, attentions = [], []
        for index, block in enumerate(frozen):
            x, attention = block_forward(block, x, block.ln_1(x), need_attention=index >= first_read)
            outputs.append(x)
            if attention is not None:
                attentions.append(attention)
        return outputs, attentions

    def _grad_cams(self, rows: torch.Tensor, extra: torch.Tensor | None, target, grid: tuple[int, int]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad-CAMs ``(R, h, w)`` of the last block on ``rows (R, 1+hw, D)`` (plus ``extra`` on its output), row r
        for the class ``target`` picks for it: ``target(logits (R, E))`` sums each row's probability of its class,
        so one backward gives every row's gradient. Also returns the block's attention ``(R, 1+hw, 1+hw)``."""
        block = self.blocks[-1]
        with torch.enable_grad():
            normed = block.ln_1(rows).detach().requires_grad_(True)
            z, attention = block_forward(block, rows, normed)
            if extra is not None:
                z = z + extra
            pooled = self.visual.ln_post(z[:, 1:]).mean(dim=1) @ self.visual.proj
            pooled = pooled / pooled.norm(dim=-1, keepdim=True)
            (grad,) = torch.autograd.grad(target(self.logit_scale * pooled.float()), normed)
        weights = grad[:, 1:].float().mean(dim=1, keepdim=True)
        cams = F.relu((normed[:, 1:].detach().float() * weights).sum(dim=-1))
        return cams.reshape(len(rows), *grid), attention.detach().float()

    def _affinity(self, features: list[FrozenFeatures], last_attention: torch.Tensor) -> torch.Tensor:
        """CAA's affinity ``(n, hw, hw)`` of several images from their frozen blocks' attentions and the last block's
        ``(n, 1+hw, 1+hw)``."""
        first = len(features[0].attentions) - (self.cfg.attn_blocks - 1)
        if first < 0:
            raise ValueError(f"attn_blocks={self.cfg.attn_blocks} needs the attentions of {self.cfg.attn_blocks - 1} "
                             f"frozen blocks; the frozen features hold {len(features[0].attentions)}")
        kept = [torch.stack(block).float() for block in zip(*(f.attentions[first:] for f in features))]
        return affinity_from_attention(torch.stack(kept + [last_attention], dim=-3))

    def class_cams_batch(self, features: list[FrozenFeatures], class_ids: list[tuple[int, ...]]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Min-max normalised CAMs per ``skip_entry`` (docs/method.md#skip-fusion) and the CAA affinity of several
        images of one CAM input size: the last block and its gradients for every (image, class) pair in one forward
        and backward. Returns the CAMs ``(R, h, w)``, rows image by image and class by class (``R`` = all classes of
        all images), and each image's affinity ``(n, hw, hw)``."""
        grid, rows = features[0].grid, sum(len(c) for c in class_ids)
        counts = upload([len(c) for c in class_ids], self.device)
        target = self._row_classes(class_ids)
        # [X_{N-1}, X_{N-2}, ..., X_{N-1-K}], each (n, 1+hw, D)
        block_outputs = [torch.stack([f.outputs[-1 - k] for f in features]) for k in range(self.cfg.num_skips + 1)]

        def fused(parts: list[torch.Tensor]) -> torch.Tensor:
            total = torch.stack(parts).sum(dim=0)
            return total / len(block_outputs) if self.cfg.skip_fusion == "mean" else total

        def grad_cams(x: torch.Tensor, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            per_row = [None if t is None else t.repeat_interleave(counts, dim=0, output_size=rows) for t in (x, extra)]
            return self._grad_cams(*per_row, target, grid)

        if self.cfg.skip_entry == "input":
            cams, last_attention = grad_cams(fused(block_outputs))
        elif self.cfg.skip_entry == "output":
            skips = fused(block_outputs[1:]) if len(block_outputs) > 1 else None
            cams, last_attention = grad_cams(block_outputs[0], skips)
        else:  # average: one CAM per fused feature, averaged after normalisation
            per_feature = [grad_cams(x) for x in block_outputs]
            cams, last_attention = torch.stack([minmax(c) for c, _ in per_feature]).mean(dim=0), per_feature[0][1]
        # pytorch-grad-cam, as CLIP-ES calls it, min-max scales a CAM twice (docs/method.md#last-block-and-grad-cam)
        return minmax(minmax(cams)), self._affinity(features, last_attention[torch.cumsum(counts, 0) - counts])

    def _row_classes(self, class_ids: list[tuple[int, ...]]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The gradient target of :meth:`class_cams_batch`'s rows: row r (image i, its k-th class) takes the softmax
        over image i's classes and the background words and its k-th entry. Logits come against every class's
        text, then each row's own are gathered (the others masked)."""
        widest = max(len(c) for c in class_ids)
        background = len(self.bg_text)
        columns, valid, own = [], [], []
        for ids in class_ids:
            row = [c - 1 for c in ids] + [0] * (widest - len(ids))
            row += list(range(len(self.fg_text), len(self.fg_text) + background))
            mask = [True] * len(ids) + [False] * (widest - len(ids)) + [True] * background
            columns += [row] * len(ids)
            valid += [mask] * len(ids)
            own += range(len(ids))
        columns, valid = upload(columns, self.device), upload(valid, self.device)
        own = upload(own, self.device)[:, None]
        text = torch.cat([self.fg_text, self.bg_text])

        def target(logits: torch.Tensor) -> torch.Tensor:
            chosen = (logits @ text.T).gather(1, columns).masked_fill(~valid, -torch.inf)
            return chosen.softmax(dim=-1).gather(1, own).sum()
        return target

    # -- labels -------------------------------------------------------------------------------------------------
    def par_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` PAR runs at: the long side scaled to ``par_max_side``, or the image's own size (``0``, or no
        larger)."""
        side = self.cfg.par_max_side
        if not side or max(height, width) <= side:
            return height, width
        scale = side / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def initial_labels_batch(self, images: list[torch.Tensor], loc_maps: list[torch.Tensor],
                             class_ids: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``[bg, classes]`` at image resolution (background power, then PAR at :meth:`par_size` and back)
        and Y0 of several images, on the maps' device: ``images[i] (H, W, 3) uint8``, ``loc_maps[i] (K, h, w)``. PAR
        runs for all at once (:func:`~pseudolabel.cam.par.par_refine`). Returns the scores ``(B, 1+K, H, W)``
        (padded channels and pixels -inf) and Y0 ``(B, H, W)`` on canvases (:mod:`pseudolabel.canvas`)."""
        scores = []
        for image, lowres in zip(images, loc_maps):
            maps = _resize(lowres, image.shape[:2])
            background = (1.0 - maps.amax(dim=0).clamp(min=0.0)) ** self.cfg.bg_power
            scores.append(torch.cat([background[None], maps]))
        if self.cfg.use_par:
            sizes = [self.par_size(*s.shape[-2:]) for s in scores]
            # the pixels rounded as PIL's reduction of a uint8 image gives them
            pixels = [_resize(i.permute(2, 0, 1).float(), z).round_().clamp_(0, 255) for i, z in zip(images, sizes)]
            refined = par_refine(pixels, [_resize(s, z) for s, z in zip(scores, sizes)], self.par_cfg)
            scores = [_resize(r, s.shape[-2:]) for r, s in zip(refined, scores)]
        canvas = pad_stack(scores, -torch.inf)
        widest = canvas.shape[1]
        keys = upload([(0, *ids) + (0,) * (widest - 1 - len(ids)) for ids in class_ids], canvas.device, torch.uint8)
        winner = canvas.argmax(dim=1)
        return canvas, keys.gather(1, winner.flatten(1)).view_as(winner)

    # -- the stages -----------------------------------------------------------------------------------------------
    def frozen(self, pixels: list[torch.Tensor]) -> list[FrozenFeatures]:
        """Frozen-block features of preprocessed images (:meth:`preprocess`), on the device. On a GPU the images of
        one CAM input size go through together; on a CPU one at a time, so an image's features (and labels) never
        depend on the other images of its batch (batching gains nothing there)."""
        one_by_one = self.device.type == "cpu"
        results: list[FrozenFeatures | None] = [None] * len(pixels)
        for indices in [[i] for i in range(len(pixels))] if one_by_one else _groups([p.shape[-2:] for p in pixels]):
            batch = torch.stack([pixels[i].to(self.device, non_blocking=True) for i in indices])
            with encoder_precision(self.device, self.precision):
                outputs, attentions = self.frozen_blocks(batch)
            grid = (batch.shape[-2] // self.patch, batch.shape[-1] // self.patch)
            for row, index in enumerate(indices):
                results[index] = FrozenFeatures([o[row] for o in outputs], [a[row] for a in attentions], grid)
        return results

    def label_batch(self, images: list[np.ndarray | torch.Tensor], features: list[FrozenFeatures],
                    class_ids_list: list) -> CAMBatch:
        """Skip-CAM maps, scores and Y0 of several images from their :class:`FrozenFeatures`, in few kernels and one
        wait for the device: the last block and its gradients for all (image, class) pairs of a CAM input size in
        one forward and backward (:meth:`class_cams_batch`), one host copy of every CAM for CAA's boxes (OpenCV's
        contours), background and PAR for all images at once (:meth:`initial_labels_batch`). ``images``:
        ``(H, W, 3)`` uint8 arrays or tensors (on a GPU, a tensor already there saves a copy). Equal to each image's
        own :meth:`label_batch` up to float rounding; :meth:`CAMBatch.outputs` splits the result by image."""
        # a read-only array (np.asarray of a PIL image) is copied: torch wraps writable ones only
        images = [torch.as_tensor(image if isinstance(image, torch.Tensor) else np.require(image, requirements="W"))
                  .to(self.device, non_blocking=True) for image in images]
        class_ids = [_class_ids(c) for c in class_ids_list]
        members = _groups([f.grid for f in features])
        timings = {}
        start = time.perf_counter()
        with encoder_precision(self.device, self.precision):
            grouped = [self.class_cams_batch([features[i] for i in m], [class_ids[i] for i in m]) for m in members]
        cams = [c.float() for c, _ in grouped]
        timings["last_block_grad"] = time.perf_counter() - start
        start = time.perf_counter()
        host = torch.cat([c.flatten() for c in cams]).cpu().numpy()  # the batch's one wait: CAA's boxes need OpenCV
        sizes = [c.numel() for c in cams]
        host_cams = [m for h, c in zip(np.split(host, np.cumsum(sizes)[:-1]), cams) for m in h.reshape(c.shape)]
        boxes = upload(np.concatenate([box_mask(m, self.cfg.tau).ravel() for m in host_cams]), self.device)
        rows = upload([r for m in members for r, i in enumerate(m) for _ in class_ids[i]], self.device)
        loc_maps: list[torch.Tensor | None] = [None] * len(features)
        for m, c, (_, affinity), b, r in zip(members, cams, grouped, boxes.split(sizes),
                                             rows.split([len(c) for c in cams])):
            refined = refine_with_boxes(c, affinity, b.view(c.shape), r).float()
            for index, maps in zip(m, refined.split([len(class_ids[i]) for i in m])):
                loc_maps[index] = maps
        timings["caa"] = time.perf_counter() - start
        start = time.perf_counter()
        scores, labels = self.initial_labels_batch(images, loc_maps, class_ids)
        timings["bg_par"] = time.perf_counter() - start
        return CAMBatch(class_ids, [tuple(i.shape[:2]) for i in images], loc_maps, scores, labels, timings)

    def __call__(self, image: np.ndarray | Image.Image, class_ids) -> CAMOutput:
        """Skip-CAM for one image (``(H, W, 3)`` uint8 RGB or PIL) and its foreground class indices: :meth:`frozen`
        and :meth:`label_batch` of it alone."""
        image = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        return self.label_batch([image], self.frozen([self.preprocess(image)]), [class_ids]).outputs()[0]


def _class_ids(class_ids) -> tuple[int, ...]:
    """An image's classes, sorted; an image without one is an error."""
    if not class_ids:
        raise ValueError("Skip-CAM needs at least one image-level class per image")
    return tuple(sorted(class_ids))


def _groups(keys: list) -> list[list[int]]:
    """The indices of equal keys, group by group in the order of their first index."""
    groups: dict = {}
    for index, key in enumerate(keys):
        groups.setdefault(tuple(key), []).append(index)
    return list(groups.values())


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, h, w)`` -> ``(C, *size)`` bilinear (half-pixel centres), antialiased where it shrinks (as PIL's
    reductions; without, as cv2's enlargements); ``maps`` itself at their own size."""
    size = tuple(size)
    if size == tuple(maps.shape[-2:]):
        return maps
    shrinks = size[0] < maps.shape[-2] or size[1] < maps.shape[-1]
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False, antialias=shrinks)[0]
