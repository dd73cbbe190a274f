"""SAM's masks of many single-point prompts on one or several images, with SAM's result at a fraction of the CPU cost.

:class:`BatchedPointPredictor` runs SAM's image encoder on several images at once (``encode``, in the run's
precision on a GPU), holds several images' embeddings (``set_batch``) and decodes one positive point per prompt on
all of them together (``predict_points``), the masks on a canvas as large as the largest image
(:mod:`pseudolabel.canvas`). The decoder is :class:`~pseudolabel.sam.decoder.SharedImageMaskDecoder` and the resize
:class:`MaskResize`, which compute the same function as SAM's decoder and ``postprocess_masks`` in a cheaper order
(for SAM 2.1's predictor too, its subclass). Stock ``segment_anything.SamPredictor`` is the tests' reference.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from pseudolabel import compat

compat.apply()  # before segment_anything imports torchvision
from segment_anything.utils.transforms import ResizeLongestSide  # noqa: E402

from pseudolabel.canvas import canvas_shape  # noqa: E402
from pseudolabel.precision import encoder_precision  # noqa: E402
from pseudolabel.sam.decoder import SharedImageMaskDecoder  # noqa: E402
from pseudolabel.transfer import upload  # noqa: E402

RESIZE_CACHE = 32  # mask resizes kept (one per input/original size pair; VOC has a handful of sizes)


def _resize_matrix(low: int, canvas: int, kept: int, out: int) -> Tensor:
    """One axis of SAM's ``postprocess_masks`` as a matrix ``(out, low)`` on the ``low`` low-resolution samples: the
    same ``F.interpolate`` calls run on an identity, so it is exactly theirs."""
    eye = torch.eye(low)[None, None]
    matrix = F.interpolate(eye, size=(canvas, low), mode="bilinear", align_corners=False)[..., :kept, :]
    return F.interpolate(matrix, size=(out, low), mode="bilinear", align_corners=False)[0, 0]


def decode_in_steps(decode: Callable[[int, int], tuple], count: int, device: torch.device,
                    prompts_per_substep: int | None = None, threads: int | None = None) -> list[tuple]:
    """``decode(start, stop)`` over the ``count`` prompts of one decoding call in sub-steps, the outputs in order: on
    a CPU sub-steps of about ``prompts_per_substep`` (default 4), sizes within one of each other and as many for each
    of ``threads`` threads (default: torch's thread count; so a grid row's few prompts still use every thread), each
    single-threaded (the shared-image decoder's many small products keep one thread busy far better than two; the
    masks do not depend on the split, ``tests/test_sam_decoder.py``); elsewhere one step of all prompts by default."""
    on_cpu = device.type == "cpu"
    size = prompts_per_substep or (4 if on_cpu else count)
    threads = (threads or torch.get_num_threads()) if on_cpu else 1
    steps = max(1, min(count, threads * max(1, round(count / (threads * size)))))
    bounds = [round(i * count / steps) for i in range(steps + 1)]
    step = lambda index: decode(bounds[index], bounds[index + 1])  # noqa: E731
    if min(threads, steps) <= 1:
        return [step(index) for index in range(steps)]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(threads, steps)) as pool:
            return list(pool.map(step, range(steps)))
    finally:
        torch.set_num_threads(torch_threads)


class MaskResize:
    """SAM's ``postprocess_masks`` of one image (bilinear to the square canvas, crop the padding, bilinear to the
    original size) as a separable banded linear map from the low-resolution logits: two sparse (CSR) matrix products,
    a few multiply-adds per output pixel instead of going through the 1024x1024 canvas (on 2 CPU cores 0.7 ms for a
    prompt's 3 masks of a 500x375 image, gathers of the same taps 4.1 ms).

    ``used`` is the number of low-resolution rows and columns the map reads; logits beyond them need not exist.
    ``size`` is the original size. With ``canvas == low_res`` and the whole canvas kept it is one bilinear resize
    (SAM 2.1's ``postprocess_masks``).
    """

    def __init__(self, low_res: int, canvas: int, input_size: tuple[int, int], original_size: tuple[int, int],
                 device: torch.device | str = "cpu") -> None:
        rows, cols = (_resize_matrix(low_res, canvas, kept, out)  # on the host: no wait for a GPU
                      for kept, out in zip(input_size, original_size))
        self.used = tuple(int(matrix.ne(0).any(dim=0).nonzero().max()) + 1 for matrix in (rows, cols))
        self.size = tuple(original_size)
        with warnings.catch_warnings():  # torch calls its CSR support "beta"; the products used here are plain
            warnings.simplefilter("ignore", UserWarning)
            self.row_matrix = upload(rows[:, : self.used[0]], device).to_sparse_csr()  # (H, rows)
            self.col_matrix_t = upload(cols[:, : self.used[1]], device).to_sparse_csr().t()  # (cols, W)

    def __call__(self, logits: Tensor) -> Tensor:
        """``(..., used rows, used cols)`` low-resolution logits -> ``(..., H, W)`` logits at the original size."""
        (rows, cols), (height, width) = self.used, self.size
        lead, x = logits.shape[:-2], logits.reshape(-1, rows, cols)
        x = (x.reshape(-1, cols) @ self.col_matrix_t).view(-1, rows, width)  # columns first: (K, rows, W)
        x = self.row_matrix @ x.transpose(0, 1).reshape(rows, -1)  # (H, K * W)
        return x.view(height, *lead, width).movedim(0, -2)  # a view: the caller's next pass reads it once


@dataclass
class HeldImages:
    """The images a predictor's ``set_batch`` holds. Holding the same again (the same embedding tensors, sizes and
    canvas: each refinement setting of one image in a sweep) costs nothing."""

    features: list[Tensor] = field(compare=False)   # each image's embedding, compared by identity (``ids``)
    input_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    canvas: tuple[int, int]             # the masks' canvas
    ids: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = tuple(id(f) for f in self.features)  # the held tensors stay alive, so their ids are not reused


@functools.lru_cache(maxsize=RESIZE_CACHE)
def mask_resize(low_res: int, canvas: int, input_size: tuple[int, int], original_size: tuple[int, int],
                device: torch.device) -> MaskResize:
    """The :class:`MaskResize` of an image size, cached."""
    return MaskResize(low_res, canvas, input_size, original_size, device)


class BatchedPointPredictor:
    """SAM's image encoder and its masks of single positive points through the shared-image decoder, for several
    images at once; :class:`~pseudolabel.sam.sam2_predictor.SAM2PointPredictor` shares its decoding.

    The masks equal ``SamPredictor``'s up to float32 rounding (a logit within about 1e-6 of the threshold may flip;
    ``tests/test_sam_decoder.py`` and ``bench/bench_sam_refine.py`` measure it).
    """

    def __init__(self, sam_model, prompts_per_substep: int | None = None, threads: int | None = None,
                 precision: str = "fp32") -> None:
        """``prompts_per_substep``, ``threads``: see :func:`decode_in_steps`. ``precision``: of the image encoder on
        CUDA (:mod:`pseudolabel.precision`); the prompt decoder always computes in float32."""
        self.model, self.prompt_encoder = sam_model, sam_model.prompt_encoder
        self.mask_threshold = sam_model.mask_threshold
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.decoder = SharedImageMaskDecoder(sam_model.mask_decoder)
        self.prompts_per_substep, self.threads, self.precision = prompts_per_substep, threads, precision
        self.held: HeldImages | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def encode(self, transformed_images: list[Tensor]) -> Tensor:
        """SAM's image embeddings ``(B, 256, 64, 64)`` float32 of images resized by ``self.transform``
        (``(3, h, w)`` uint8 tensors, long side ``img_size``), all in one encoder pass."""
        batch = torch.cat([self.model.preprocess(image.to(self.device, non_blocking=True)[None])
                           for image in transformed_images])
        with encoder_precision(self.device, self.precision):
            features = self.model.image_encoder(batch)
        return features.float()

    def unpack(self, features: Tensor) -> tuple[list[Tensor], Tensor]:
        """Embeddings of :meth:`encode` -> the decoder's high-resolution maps (none for SAM) and image embeddings."""
        return [], features

    @torch.no_grad()
    def set_batch(self, features: list[Tensor], input_sizes: list[tuple[int, int]],
                  original_sizes: list[tuple[int, int]], canvas: tuple[int, int] | None = None) -> None:
        """Hold several images for :meth:`predict_points` (:class:`HeldImages`): each one's embedding (one row of
        :meth:`encode`), their sizes after ``self.transform`` and before, and the masks' canvas (default: the
        smallest that holds every image)."""
        originals = [tuple(s) for s in original_sizes]
        held = HeldImages(list(features), [tuple(s) for s in input_sizes], originals,
                          tuple(canvas) if canvas is not None else canvas_shape(originals))
        if held == self.held:
            return
        self.held = held
        high_res, embeddings = self.unpack(torch.cat(features))
        self.resizes, used_grid = self._resizes(4 * embeddings.shape[-1])
        _, dense = self.prompt_encoder(points=None, boxes=None, masks=None)
        self.decoder.set_images(embeddings, self.prompt_encoder.get_dense_pe(), dense, used_grid, high_res or None)

    def _resizes(self, low_res: int) -> tuple[list[MaskResize], tuple[int, int] | None]:
        """Each held image's mask resize (SAM's ``postprocess_masks``) and the token grid that they read."""
        resizes = [mask_resize(low_res, self.model.image_encoder.img_size, i, o, self.device)
                   for i, o in zip(self.held.input_sizes, self.held.original_sizes)]
        return resizes, tuple(-(-max(r.used[axis] for r in resizes) // 4) for axis in (0, 1))

    @torch.no_grad()
    def predict_points(self, xy: Tensor) -> tuple[Tensor, Tensor]:
        """Masks of one positive point per prompt for the first ``n`` images of :meth:`set_batch`: ``xy (n, P, 2)``
        (host, float32, each image's own pixel coordinates) -> SAM's 3 thresholded masks ``(n, P, 3, H, W)`` on the
        canvas (False beyond each image) and their predicted IoUs ``(n, P, 3)``. The prompts (of every image) go
        through the decoder in sub-steps as :func:`decode_in_steps` spreads them, and the masks are resized prompt by
        prompt: on 2 CPU cores 0.7 ms for a prompt's 3 masks of a 500x375 image against 1.1 ms for 4 prompts at once,
        and a prompt's float32 logits are all the resize holds."""
        images, prompts = xy.shape[:2]
        sparse = self._point_prompts(xy)
        sparse = sparse.view(images, prompts, *sparse.shape[1:])
        outputs = self.decoder.decoder.num_multimask_outputs
        masks = torch.zeros(images, prompts, outputs, *self.held.canvas, dtype=torch.bool, device=sparse.device)
        iou = sparse.new_empty(images, prompts, outputs)

        def decode(start: int, stop: int) -> None:
            logits, step_iou = self.decoder(sparse[:, start: stop].flatten(0, 1), images)
            iou[:, start: stop] = step_iou.view(images, stop - start, -1)
            for image_logits, image_masks, resize in zip(logits.view(images, stop - start, *logits.shape[1:]),
                                                         masks[:, start: stop], self.resizes):
                (rows, cols), (height, width) = resize.used, resize.size
                for prompt_logits, prompt_masks in zip(image_logits[..., :rows, :cols],
                                                       image_masks[..., :height, :width]):
                    torch.gt(resize(prompt_logits), self.mask_threshold, out=prompt_masks)  # in cache, memory bounded
        decode_in_steps(decode, prompts, sparse.device, self.prompts_per_substep, self.threads)
        return masks, iou

    def _point_prompts(self, xy: Tensor) -> Tensor:
        """The sparse prompt embeddings ``(n P, 2, D)`` of one positive point each: the point's and the padding
        token's, exactly as ``PromptEncoder`` computes them, without its boolean-mask assignments (each makes the host
        wait for a GPU)."""
        coords = torch.cat([self.transform.apply_coords_torch(points, size)
                            for points, size in zip(xy, self.held.original_sizes)])
        coords = upload(coords, self.device)[:, None]  # (B, 1, 2) in the encoder's input frame
        points = torch.cat([coords + 0.5, torch.zeros_like(coords)], dim=1)  # the point at its pixel's centre, padding
        pe = self.prompt_encoder.pe_layer.forward_with_coords(points, self.prompt_encoder.input_image_size)
        point = pe[:, 0] + self.prompt_encoder.point_embeddings[1].weight
        padding = torch.zeros_like(pe[:, 1]) + self.prompt_encoder.not_a_point_embed.weight
        return torch.stack([point, padding], dim=1)
