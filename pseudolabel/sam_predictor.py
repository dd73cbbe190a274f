"""A ``SamPredictor`` for many single-point prompts on one image, with the same masks at a fraction of the CPU cost.

:class:`BatchedPointPredictor` is a drop-in ``segment_anything.SamPredictor``. When ``predict_torch`` gets what the
refinement asks for (one positive point per prompt, no box or mask input, 3 masks, thresholded), it runs
:class:`~pseudolabel.sam_decoder.SharedImageMaskDecoder` and :class:`MaskResize`, which compute the same function
as SAM's decoder and ``postprocess_masks`` in a cheaper order; any other request goes to ``SamPredictor`` itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from torch import Tensor

from pseudolabel.sam_decoder import SharedImageMaskDecoder


def _resize_taps(low: int, canvas: int, kept: int, out: int, taps: int = 4) -> tuple[Tensor, Tensor]:
    """One axis of SAM's ``postprocess_masks`` as a banded matrix: ``(out, taps)`` indices into the ``low``
    low-resolution samples and their weights. The matrix comes from running the same ``F.interpolate`` calls on an
    identity (so it is exactly theirs), then keeping each row's window of ``taps`` consecutive entries."""
    eye = torch.eye(low)[None, None]
    matrix = F.interpolate(eye, size=(canvas, low), mode="bilinear", align_corners=False)[..., :kept, :]
    matrix = F.interpolate(matrix, size=(out, low), mode="bilinear", align_corners=False)[0, 0]  # (out, low)
    first = (matrix != 0).float().argmax(dim=1)
    index = first[:, None] + torch.arange(taps)
    weight = torch.where(index < low, matrix.gather(1, index.clamp(max=low - 1)), torch.zeros(()))
    if not torch.equal((matrix != 0).sum(dim=1), (weight != 0).sum(dim=1)):
        raise AssertionError("bilinear resize wider than the tap window")  # two bilinear resizes touch <= 3 samples
    return torch.where(weight != 0, index, first[:, None]), weight  # zero-weight taps re-read the first sample


class MaskResize:
    """SAM's ``postprocess_masks`` (bilinear to the square canvas, crop the padding, bilinear to the original size)
    as one separable banded linear map from the low-resolution logits, a few multiply-adds per output pixel instead
    of going through the 1024x1024 canvas.

    ``used`` is the number of low-resolution rows and columns the map reads; logits beyond them need not exist.
    """

    def __init__(self, low_res: int, canvas: int, input_size: tuple[int, int], original_size: tuple[int, int],
                 device: torch.device | str = "cpu") -> None:
        self.rows = [t.to(device) for t in _resize_taps(low_res, canvas, input_size[0], original_size[0])]
        self.cols = [t.to(device) for t in _resize_taps(low_res, canvas, input_size[1], original_size[1])]
        self.used = (int(self.rows[0].max()) + 1, int(self.cols[0].max()) + 1)

    def __call__(self, logits: Tensor) -> Tensor:
        """``(..., used rows, used cols)`` low-resolution logits -> ``(..., H, W)`` logits at the original size."""
        rows = self._along_rows(logits, *self.rows).transpose(-1, -2).contiguous()
        return self._along_rows(rows, *self.cols).transpose(-1, -2)

    @staticmethod
    def _along_rows(x: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        return sum(x.index_select(-2, index[:, t]) * weight[:, t, None] for t in range(index.shape[1]))


class BatchedPointPredictor(SamPredictor):
    """``SamPredictor`` whose ``predict_torch`` decodes single positive points through the shared-image decoder.

    The masks equal ``SamPredictor``'s up to float32 rounding (a logit within about 1e-6 of the threshold may flip;
    ``tests/test_sam_decoder.py`` and ``bench/bench_sam_refine.py`` measure it). The third output, the
    low-resolution logits, covers only the part of SAM's canvas that holds the image.
    """

    def __init__(self, sam_model, prompts_per_step: int | None = None) -> None:
        """``prompts_per_step``: prompts decoded together; default 1 on a CPU (cache-friendly), all on a GPU."""
        super().__init__(sam_model)
        self.decoder = SharedImageMaskDecoder(sam_model.mask_decoder)
        self.prompts_per_step = prompts_per_step
        self.resize: MaskResize | None = None

    @torch.no_grad()
    def set_torch_image(self, transformed_image: Tensor, original_image_size: tuple[int, ...]) -> None:
        super().set_torch_image(transformed_image, original_image_size)
        encoder = self.model.image_encoder
        low_res = 4 * self.features.shape[-1]
        self.resize = MaskResize(low_res, encoder.img_size, self.input_size, self.original_size, self.device)
        _, dense = self.model.prompt_encoder(points=None, boxes=None, masks=None)
        used_grid = tuple(-(-n // 4) for n in self.resize.used)
        self.decoder.set_image(self.features, self.model.prompt_encoder.get_dense_pe(), dense, used_grid)

    @torch.no_grad()
    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                      return_logits=False):
        single_points = (point_coords is not None and point_coords.shape[1] == 1 and bool((point_labels == 1).all())
                         and boxes is None and mask_input is None and multimask_output and not return_logits)
        if not single_points:
            return super().predict_torch(point_coords, point_labels, boxes, mask_input, multimask_output,
                                         return_logits)
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        sparse, _ = self.model.prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=None)
        step = self.prompts_per_step or (1 if self.device.type == "cpu" else len(sparse))
        masks, iou_predictions, low_res = [], [], []
        used_rows, used_cols = self.resize.used
        for chunk in sparse.split(step):
            logits, iou = self.decoder(chunk)
            masks.append(self.resize(logits[..., :used_rows, :used_cols]) > self.model.mask_threshold)
            iou_predictions.append(iou)
            low_res.append(logits)
        return torch.cat(masks), torch.cat(iou_predictions), torch.cat(low_res)
