"""SAM 2.1 as CEP's refiner: the official ``sam2`` package's image encoder (batched) and its prompt encoder and mask
decoder, behind the methods and return conventions of :class:`~pseudolabel.sam.predictor.BatchedPointPredictor`, so
that :class:`~pseudolabel.sam.refine.SAMRefiner`'s mask choice, δ filter and merge apply unchanged.

What differs from SAM ViT-B, all as the package's ``SAM2ImagePredictor`` does it: the image is resized to the
model's square input (no aspect-preserving padding), points are given in the normalised frame times the input size,
the decoder also reads the encoder's two high-resolution feature maps, and the masks are the low-resolution logits
resized bilinearly to the image (hole filling and sprinkle removal stay off: they need the package's optional CUDA
extension). One positive point per prompt, SAM 2.1's three multimask outputs.

An embedding of :meth:`SAM2PointPredictor.encode` is one row per image holding the three feature maps flattened
(:meth:`SAM2PointPredictor.unpack` splits it), so it slices and concatenates along images like SAM ViT-B's
``(B, 256, 64, 64)`` embeddings.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pseudolabel import compat
from pseudolabel.canvas import canvas_shape
from pseudolabel.precision import encoder_precision
from pseudolabel.transfer import upload

PROMPTS_PER_STEP_CPU = 8  # prompts decoded together on a CPU (each takes 3 x 256 x 256 logits and 32-channel maps)


class SAM2Transform:
    """The refiner's view of ``sam2.utils.transforms.SAM2Transforms``: images stay as they are on the host (the
    package resizes float pixels in :meth:`SAM2PointPredictor.encode`), points go to the model's input frame."""

    def __init__(self, transforms) -> None:
        self.transforms = transforms

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8, unchanged: the resize runs on float pixels inside the encoder step."""
        return image

    def apply_coords_torch(self, coords: Tensor, original_size: tuple[int, int]) -> Tensor:
        """``(..., 2)`` xy pixel coordinates of an image of ``original_size`` -> the model's input frame."""
        return self.transforms.transform_coords(coords, normalize=True, orig_hw=tuple(original_size))


class SAM2PointPredictor:
    """Single positive points on SAM 2.1 with :class:`~pseudolabel.sam.predictor.BatchedPointPredictor`'s interface:
    :meth:`encode`, :meth:`set_features` / :meth:`set_image` with :meth:`predict_torch` (one image), and
    :meth:`set_batch` with :meth:`predict_points` (several)."""

    def __init__(self, sam_model, prompts_per_step: int | None = None, precision: str = "fp32",
                 mask_threshold: float = 0.0) -> None:
        """``sam_model``: a ``sam2.modeling.sam2_base.SAM2Base``. ``prompts_per_step``: prompts decoded together
        (default :data:`PROMPTS_PER_STEP_CPU` on a CPU, all on a GPU). ``precision``: autocast of the image encoder
        on CUDA; the decoder computes in float32."""
        compat.apply()  # before sam2 imports torchvision
        from sam2.utils.transforms import SAM2Transforms

        self.model, self.precision, self.mask_threshold = sam_model, precision, mask_threshold
        self.prompts_per_step = prompts_per_step
        self.transforms = SAM2Transforms(resolution=sam_model.image_size, mask_threshold=mask_threshold,
                                         max_hole_area=0.0, max_sprinkle_area=0.0)
        self.transform = SAM2Transform(self.transforms)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        self.is_image_set, self.features, self.original_size = False, None, None
        self.batch_features, self.batch_sizes, self.canvas = None, None, None

    # -- the image side -----------------------------------------------------------------------------------------
    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """``(channels, height, width)`` of the decoder's inputs: the high-resolution maps (if the model uses them)
        and the image embedding, in the order the packed rows hold them."""
        side = self.model.sam_image_embedding_size
        shapes = [(self.model.sam_prompt_encoder.embed_dim, side, side)]
        if self.model.use_high_res_features_in_sam:
            decoder = self.model.sam_mask_decoder
            shapes = [(decoder.conv_s0.out_channels, 4 * side, 4 * side),
                      (decoder.conv_s1.out_channels, 2 * side, 2 * side)] + shapes
        return shapes

    def unpack(self, features: Tensor) -> tuple[list[Tensor], Tensor]:
        """Packed rows ``(n, D)`` -> the high-resolution maps ``[(n, 32, 256, 256), (n, 64, 128, 128)]`` (empty when
        the model does not use them) and the image embeddings ``(n, 256, 64, 64)``."""
        shapes = self.feature_shapes()
        parts = features.split([c * h * w for c, h, w in shapes], dim=1)
        maps = [part.view(len(features), *shape) for part, shape in zip(parts, shapes)]
        return maps[:-1], maps[-1]

    @torch.no_grad()
    def encode(self, images: list[Tensor]) -> Tensor:
        """Packed SAM 2.1 embeddings ``(B, D)`` float32 of ``(3, H, W)`` uint8 images, all in one encoder pass:
        the package's resize and normalisation, ``forward_image`` (which applies the decoder's projections of the
        high-resolution maps) and the no-memory embedding of a single image."""
        batch = torch.stack([self.transforms.transforms(image.to(self.device, non_blocking=True).float() / 255)
                             for image in images])
        with encoder_precision(self.device, self.precision):
            maps = self.model.forward_image(batch)["backbone_fpn"][-self.model.num_feature_levels:]
        maps = [m.float() for m in maps]
        if self.model.directly_add_no_mem_embed:
            maps[-1] = maps[-1] + self.model.no_mem_embed.view(1, -1, 1, 1)
        if not self.model.use_high_res_features_in_sam:
            maps = maps[-1:]
        return torch.cat([m.flatten(1) for m in maps], dim=1)

    def set_image(self, image: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` uint8 image and make it the current one."""
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        self.set_features(self.encode([pixels]), tuple(image.shape[:2]), tuple(image.shape[:2]))

    def set_features(self, features: Tensor, input_size: tuple[int, int], original_size: tuple[int, ...]) -> None:
        """Make packed ``features (1, D)`` (from :meth:`encode`) the current image, of ``original_size``
        (``input_size`` is there for the interface: SAM 2.1's input is always square)."""
        self.reset_image()
        self.features, self.original_size, self.is_image_set = features, tuple(original_size), True

    def set_batch(self, features: Tensor, input_sizes: list[tuple[int, int]],
                  original_sizes: list[tuple[int, int]], canvas: tuple[int, int] | None = None) -> None:
        """Hold several images for :meth:`predict_points`: packed ``features (n, D)``, their sizes and the masks'
        canvas (default: the smallest that holds every image)."""
        self.reset_image()
        self.batch_features, self.batch_sizes = features, [tuple(s) for s in original_sizes]
        self.canvas = tuple(canvas) if canvas is not None else canvas_shape(self.batch_sizes)

    # -- the prompt side ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_torch(self, point_coords: Tensor, point_labels: Tensor, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False):
        """SAM 2.1's 3 thresholded masks ``(B, 3, H, W)`` of the current image, their predicted IoUs ``(B, 3)``
        and low-resolution logits, for one positive point per prompt (``point_coords (B, 1, 2)`` in the input
        frame, :attr:`transform`)."""
        single_points = (point_coords.shape[1] == 1 and bool((point_labels == 1).all()) and boxes is None
                         and mask_input is None and multimask_output and not return_logits)
        if not single_points:
            raise NotImplementedError("SAM2PointPredictor decodes single positive points with 3 masks only; use "
                                      "sam2.sam2_image_predictor.SAM2ImagePredictor for other prompts")
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        masks = torch.empty(len(point_coords), 3, *self.original_size, dtype=torch.bool, device=self.device)
        iou, low_res = self._decode_image(self.features, point_coords, masks)
        return masks, iou, low_res

    @torch.no_grad()
    def predict_points(self, xy: Tensor) -> tuple[Tensor, Tensor]:
        """Masks of one positive point per prompt for the first ``n`` images of :meth:`set_batch`: ``xy (n, P, 2)``
        (each image's own pixel coordinates) -> 3 thresholded masks ``(n, P, 3, H, W)`` on the canvas (False beyond
        each image) and their predicted IoUs ``(n, P, 3)``."""
        images, prompts = xy.shape[:2]
        masks = torch.zeros(images, prompts, 3, *self.canvas, dtype=torch.bool, device=self.device)
        ious = []
        for i, (points, (height, width)) in enumerate(zip(xy, self.batch_sizes)):
            coords = self.transform.apply_coords_torch(upload(points, self.device), (height, width))[:, None]
            image_masks = torch.empty(prompts, 3, height, width, dtype=torch.bool, device=self.device)
            ious.append(self._decode_image(self.batch_features[i: i + 1], coords, image_masks, (height, width))[0])
            masks[i, :, :, :height, :width] = image_masks
        return masks, torch.stack(ious)

    def _decode_image(self, features: Tensor, coords: Tensor, masks: Tensor,
                      size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Decode ``coords (B, 1, 2)`` on one image's packed ``features (1, D)`` a step of prompts at a time,
        thresholded masks of the image's ``size`` into ``masks``; returns the predicted IoUs and low-res logits."""
        size = size or self.original_size
        high_res, embedding = self.unpack(features)
        dense_pe = self.model.sam_prompt_encoder.get_dense_pe()
        step = self.prompts_per_step or (PROMPTS_PER_STEP_CPU if self.device.type == "cpu" else len(coords))
        ious, logits = [], []
        for start in range(0, len(coords), step):
            points = coords[start: start + step]
            labels = torch.ones(points.shape[:2], dtype=torch.int, device=self.device)
            sparse, dense = self.model.sam_prompt_encoder(points=(points, labels), boxes=None, masks=None)
            low_res, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=embedding, image_pe=dense_pe, sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, multimask_output=True, repeat_image=len(points) > 1,
                high_res_features=high_res or None)
            resized = self.transforms.postprocess_masks(low_res, size)
            torch.gt(resized, self.mask_threshold, out=masks[start: start + step])
            ious.append(iou)
            logits.append(low_res)
        return torch.cat(ious), torch.cat(logits)
