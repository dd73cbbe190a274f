"""SAM 2.1 as CEP's refiner: :class:`~pseudolabel.sam.predictor.BatchedPointPredictor` with the official ``sam2``
package's image encoder (batched), prompt encoder and mask decoder (through
:class:`~pseudolabel.sam.decoder.SharedImageMaskDecoder`; docs/stage_one.md#speed-and-memory-on-a-cpu), so that
:class:`~pseudolabel.sam.refine.SAMRefiner`'s mask choice, δ filter and merge apply unchanged.

What differs from SAM ViT-B, all as the package's ``SAM2ImagePredictor`` does it: the image is resized to the
model's square input (no aspect-preserving padding), points are given in the normalised frame times the input size,
the decoder also reads the encoder's two high-resolution feature maps, and the masks are the low-resolution logits
resized bilinearly to the image (hole filling and sprinkle removal stay off: they need the package's optional CUDA
extension). An embedding of :meth:`SAM2PointPredictor.encode` is one row per image holding the feature maps
flattened (:meth:`SAM2PointPredictor.unpack` splits it), so it slices and concatenates along images like SAM
ViT-B's ``(B, 256, 64, 64)`` embeddings.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pseudolabel import compat
from pseudolabel.precision import encoder_precision
from pseudolabel.sam.decoder import SharedImageMaskDecoder
from pseudolabel.sam.predictor import BatchedPointPredictor, MaskResize, mask_resize
from pseudolabel.transfer import upload


class SAM2Transform:
    """The refiner's ``transform`` of SAM 2.1: images stay as they are on the host (the package resizes float pixels
    in :meth:`SAM2PointPredictor.encode`)."""

    @staticmethod
    def apply_image(image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8, unchanged."""
        return image


class SAM2PointPredictor(BatchedPointPredictor):
    """Single positive points on SAM 2.1: :class:`~pseudolabel.sam.predictor.BatchedPointPredictor` with SAM 2.1's
    image encoder, features, mask resize and prompt encoder."""

    def __init__(self, sam_model, prompts_per_substep: int | None = None, threads: int | None = None,
                 precision: str = "fp32", mask_threshold: float = 0.0) -> None:
        """``sam_model``: a ``sam2.modeling.sam2_base.SAM2Base``. ``prompts_per_substep``, ``threads``: see
        :func:`~pseudolabel.sam.predictor.decode_in_steps`. ``precision``: of the image encoder on CUDA;
        the decoder computes in float32."""
        compat.apply()  # before sam2 imports torchvision
        from sam2.utils.transforms import SAM2Transforms

        self.model, self.prompt_encoder, self.mask_threshold = sam_model, sam_model.sam_prompt_encoder, mask_threshold
        self.prompts_per_substep, self.threads, self.precision = prompts_per_substep, threads, precision
        self.decoder = SharedImageMaskDecoder(sam_model.sam_mask_decoder)
        self.transforms = SAM2Transforms(resolution=sam_model.image_size, mask_threshold=mask_threshold,
                                         max_hole_area=0.0, max_sprinkle_area=0.0)
        self.transform = SAM2Transform()
        self.held = None

    def unpack(self, features: Tensor) -> tuple[list[Tensor], Tensor]:
        """Packed rows ``(n, D)`` -> the high-resolution maps ``[(n, 32, 256, 256), (n, 64, 128, 128)]`` (empty when
        the model does not use them) and the image embeddings ``(n, 256, 64, 64)``."""
        side = self.model.sam_image_embedding_size
        shapes = [(self.prompt_encoder.embed_dim, side, side)]  # (channels, height, width) in the packed order
        if self.model.use_high_res_features_in_sam:
            decoder = self.model.sam_mask_decoder
            shapes = [(decoder.conv_s0.out_channels, 4 * side, 4 * side),
                      (decoder.conv_s1.out_channels, 2 * side, 2 * side)] + shapes
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

    def _resizes(self, low_res: int) -> tuple[list[MaskResize], None]:
        """Each held image's mask resize (the whole low-resolution grid bilinearly to the image); the whole grid is
        decoded."""
        return [mask_resize(low_res, low_res, (low_res, low_res), size, self.device)
                for size in self.held.original_sizes], None

    def _point_prompts(self, xy: Tensor) -> Tensor:
        """The prompt encoder's sparse embeddings ``(n P, T, D)`` of positive points ``xy (n, P, 2)`` (each image's
        own pixel coordinates)."""
        coords = torch.cat([self.transforms.transform_coords(upload(points, self.device), normalize=True, orig_hw=size)
                            for points, size in zip(xy, self.held.original_sizes)])[:, None]
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=self.device)
        return self.prompt_encoder(points=(coords, labels), boxes=None, masks=None)[0]
