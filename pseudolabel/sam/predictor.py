"""A ``SamPredictor`` for many single-point prompts on one image, with the same masks at a fraction of the CPU cost.

:class:`BatchedPointPredictor` is a drop-in ``segment_anything.SamPredictor``. When ``predict_torch`` gets what the
refinement asks for (one positive point per prompt, no box or mask input, 3 masks, thresholded), it runs
:class:`~pseudolabel.sam.decoder.SharedImageMaskDecoder` and :class:`MaskResize`, which compute the same function
as SAM's decoder and ``postprocess_masks`` in a cheaper order; any other request goes to ``SamPredictor`` itself.
Its image side comes in two steps a caller can separate: :meth:`BatchedPointPredictor.encode` runs SAM's image
encoder on several images at once (in the run's precision on a GPU), :meth:`BatchedPointPredictor.set_features`
makes one image's embedding the current one. For the batched GPU path, :meth:`BatchedPointPredictor.set_batch` holds
several images at once and :meth:`BatchedPointPredictor.predict_points` decodes prompts of all of them together,
their masks resized to a canvas as large as the largest image (:mod:`pseudolabel.canvas`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import Tensor

from pseudolabel import compat

compat.apply()  # before segment_anything imports torchvision
from segment_anything import SamPredictor  # noqa: E402

from pseudolabel.canvas import canvas_shape, pad_stack  # noqa: E402
from pseudolabel.precision import encoder_precision  # noqa: E402
from pseudolabel.sam.decoder import SharedImageMaskDecoder  # noqa: E402
from pseudolabel.transfer import upload  # noqa: E402

RESIZE_CACHE = 16  # mask resizes kept per predictor (one per input/original size pair; VOC has a handful of sizes)
RESIZE_BYTES = 256 << 20  # float32 logits resized at once by predict_points (the rest waits its turn)


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


def decode_in_steps(decode: Callable[[int, int], tuple], count: int, device: torch.device,
                    prompts_per_step: int | None = None, threads: int | None = None) -> list[tuple]:
    """``decode(start, stop)`` over ``count`` prompts in steps, the outputs in order: on a CPU steps of
    ``prompts_per_step`` (default 4), ``threads`` of them at once (default: torch's thread count), each
    single-threaded (the shared-image decoder's many small products keep one thread busy far better than two; the
    results do not depend on the thread count); elsewhere one step of all prompts by default."""
    on_cpu = device.type == "cpu"
    size = prompts_per_step or (4 if on_cpu else count)
    threads = (threads or torch.get_num_threads()) if on_cpu else 1
    steps = math.ceil(count / size)
    if steps > threads:  # the same number of steps for every thread, each as full as can be: none idles long
        steps = math.ceil(steps / threads) * threads
        size = math.ceil(count / steps)
    starts = range(0, count, size)
    step = lambda start: decode(start, min(start + size, count))  # noqa: E731
    if min(threads, len(starts)) <= 1:
        return [step(start) for start in starts]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            return list(pool.map(step, starts))
    finally:
        torch.set_num_threads(torch_threads)


def point_prompts(prompt_encoder, coords: Tensor) -> Tensor:
    """SAM's sparse prompt embeddings ``(B, 2, D)`` of one positive point each (``coords (B, 1, 2)`` in the encoder's
    input frame): the point's and the padding token's, exactly as ``PromptEncoder`` computes them, without its
    boolean-mask assignments (each makes the host wait for a GPU)."""
    points = torch.cat([coords + 0.5, torch.zeros_like(coords)], dim=1)  # the point at its pixel's centre, padding
    pe = prompt_encoder.pe_layer.forward_with_coords(points, prompt_encoder.input_image_size)
    point = pe[:, 0] + prompt_encoder.point_embeddings[1].weight
    padding = torch.zeros_like(pe[:, 1]) + prompt_encoder.not_a_point_embed.weight
    return torch.stack([point, padding], dim=1)


class MaskResize:
    """SAM's ``postprocess_masks`` (bilinear to the square canvas, crop the padding, bilinear to the original size)
    as one separable banded linear map from the low-resolution logits, a few multiply-adds per output pixel instead
    of going through the 1024x1024 canvas. On a CPU the two axes run as sparse (CSR) matrix products; elsewhere as
    gathers of the taps.

    ``used`` is the number of low-resolution rows and columns the map reads; logits beyond them need not exist.
    ``sparse`` picks the CSR products (default: on a CPU only).
    """

    def __init__(self, low_res: int, canvas: int, input_size: tuple[int, int], original_size: tuple[int, int],
                 device: torch.device | str = "cpu", sparse: bool | None = None) -> None:
        rows = _resize_taps(low_res, canvas, input_size[0], original_size[0])  # on the host: no wait for a GPU
        cols = _resize_taps(low_res, canvas, input_size[1], original_size[1])
        self.used = (int(rows[0].max()) + 1, int(cols[0].max()) + 1)
        self.rows, self.cols = [upload(t, device) for t in rows], [upload(t, device) for t in cols]
        self.sparse = torch.device(device).type == "cpu" if sparse is None else sparse
        if self.sparse:
            with warnings.catch_warnings():  # torch calls its CSR support "beta"; the products used here are plain
                warnings.simplefilter("ignore", UserWarning)
                self.row_matrix = self._matrix(*self.rows, self.used[0]).to_sparse_csr()  # (H, rows)
                self.col_matrix_t = self._matrix(*self.cols, self.used[1]).to_sparse_csr().t()  # (cols, W)

    def __call__(self, logits: Tensor) -> Tensor:
        """``(..., used rows, used cols)`` low-resolution logits -> ``(..., H, W)`` logits at the original size."""
        if not self.sparse:
            rows = self._along_rows(logits, *self.rows).transpose(-1, -2).contiguous()
            return self._along_rows(rows, *self.cols).transpose(-1, -2)
        (rows, cols), height, width = self.used, len(self.rows[0]), len(self.cols[0])
        lead, x = logits.shape[:-2], logits.reshape(-1, rows, cols)
        x = (x.reshape(-1, cols) @ self.col_matrix_t).view(-1, rows, width)  # columns first: (K, rows, W)
        x = self.row_matrix @ x.transpose(0, 1).reshape(rows, -1)  # (H, K * W)
        return x.view(height, *lead, width).movedim(0, -2)  # a view: the caller's next pass reads it once

    @staticmethod
    def _matrix(index: Tensor, weight: Tensor, columns: int) -> Tensor:
        return torch.zeros(len(index), columns, device=index.device).scatter_add_(1, index, weight)

    @staticmethod
    def _along_rows(x: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        return sum(x.index_select(-2, index[:, t]) * weight[:, t, None] for t in range(index.shape[1]))


class PaddedMaskResize:
    """Several images' :class:`MaskResize` (taps, not CSR) at once, onto a canvas of ``size`` (at least each image's
    original size): ``(n, ..., rows, cols)`` logits of n images -> ``(n, ..., H, W)``, each image's in the top-left
    corner of its canvas and zero beyond. The taps of each output pixel and their order are each image's own, so the
    values equal :class:`MaskResize`'s exactly."""

    def __init__(self, resizes: list[MaskResize], size: tuple[int, int]) -> None:
        self.rows = [pad_stack(list(t), 0, (size[0], t[0].shape[1])) for t in zip(*(r.rows for r in resizes))]
        self.cols = [pad_stack(list(t), 0, (size[1], t[0].shape[1])) for t in zip(*(r.cols for r in resizes))]
        self.used = tuple(max(r.used[axis] for r in resizes) for axis in (0, 1))

    def __call__(self, logits: Tensor) -> Tensor:
        """``(n, m, used rows, used cols)`` logits of the first n images -> ``(n, m, H, W)``."""
        images = len(logits)
        rows = self._along(logits, *(t[:images] for t in self.rows)).transpose(-1, -2).contiguous()
        return self._along(rows, *(t[:images] for t in self.cols)).transpose(-1, -2)

    @staticmethod
    def _along(x: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        """:meth:`MaskResize._along_rows` with each image's taps: ``x (n, m, L, K)``, ``index, weight (n, out,
        taps)`` -> ``(n, m, out, K)``."""
        shape = (*x.shape[:2], index.shape[1], x.shape[3])
        return sum(x.gather(2, index[:, None, :, t, None].expand(shape)) * weight[:, None, :, t, None]
                   for t in range(index.shape[2]))


class BatchedPointPredictor(SamPredictor):
    """``SamPredictor`` whose ``predict_torch`` decodes single positive points through the shared-image decoder.

    The masks equal ``SamPredictor``'s up to float32 rounding (a logit within about 1e-6 of the threshold may flip;
    ``tests/test_sam_decoder.py`` and ``bench/bench_sam_refine.py`` measure it). The third output, the
    low-resolution logits, covers only the part of SAM's canvas that holds the image.
    """

    def __init__(self, sam_model, prompts_per_step: int | None = None, threads: int | None = None,
                 precision: str = "fp32") -> None:
        """``prompts_per_step``, ``threads``: see :func:`decode_in_steps`. ``precision``: of the image encoder on CUDA
        (:mod:`pseudolabel.precision`); the prompt decoder
        always computes in float32."""
        super().__init__(sam_model)
        self.decoder = SharedImageMaskDecoder(sam_model.mask_decoder)
        self.prompts_per_step, self.threads, self.precision = prompts_per_step, threads, precision
        self.resize: MaskResize | None = None
        self._resizes: dict[tuple, MaskResize] = {}

    @torch.no_grad()
    def encode(self, transformed_images: list[Tensor]) -> Tensor:
        """SAM's image embeddings ``(B, 256, 64, 64)`` float32 of images resized by ``self.transform``
        (``(3, h, w)`` uint8 tensors, long side ``img_size``), all in one encoder pass."""
        batch = torch.cat([self.model.preprocess(image.to(self.device, non_blocking=True)[None])
                           for image in transformed_images])
        with encoder_precision(self.device, self.precision):
            features = self.model.image_encoder(batch)
        return features.float()

    @torch.no_grad()
    def set_torch_image(self, transformed_image: Tensor, original_image_size: tuple[int, ...]) -> None:
        if transformed_image.ndim != 4 or max(*transformed_image.shape[2:]) != self.model.image_encoder.img_size:
            raise ValueError(f"set_torch_image input must be BCHW with long side {self.model.image_encoder.img_size}")
        self.set_features(self.encode([transformed_image[0]]), tuple(transformed_image.shape[-2:]),
                          original_image_size)

    @torch.no_grad()
    def set_features(self, features: Tensor, input_size: tuple[int, int], original_size: tuple[int, ...]) -> None:
        """Make ``features (1, 256, 64, 64)`` (from :meth:`encode`) the current image, of ``original_size``
        resized to ``input_size``: what ``set_image`` does after the encoder. Setting the current image's features
        again (several refinement settings of one image) costs nothing."""
        if self.is_image_set and features is self.features and (tuple(input_size), tuple(original_size)) == \
                (self.input_size, self.original_size):
            return
        self.reset_image()
        self.original_size, self.input_size = tuple(original_size), tuple(input_size)
        self.features, self.is_image_set = features, True
        self.resize = self._mask_resize(self.input_size, self.original_size, features.shape[-1])
        _, dense = self.model.prompt_encoder(points=None, boxes=None, masks=None)
        used_grid = tuple(-(-n // 4) for n in self.resize.used)
        self.decoder.set_image(self.features, self.model.prompt_encoder.get_dense_pe(), dense, used_grid)

    def _mask_resize(self, input_size: tuple[int, int], original_size: tuple[int, int], side: int,
                     sparse: bool | None = None) -> MaskResize:
        """The (cached) :class:`MaskResize` of an image size."""
        key = (tuple(input_size), tuple(original_size), side, sparse)
        if key not in self._resizes:
            if len(self._resizes) >= RESIZE_CACHE:
                self._resizes.pop(next(iter(self._resizes)))
            self._resizes[key] = MaskResize(4 * side, self.model.image_encoder.img_size, input_size, original_size,
                                            self.device, sparse)
        return self._resizes[key]

    @torch.no_grad()
    def set_batch(self, features: Tensor, input_sizes: list[tuple[int, int]],
                  original_sizes: list[tuple[int, int]], canvas: tuple[int, int] | None = None) -> None:
        """Hold several images for :meth:`predict_points`: their embeddings ``(n, 256, 64, 64)`` (from
        :meth:`encode`), sizes (as :meth:`set_features` takes them) and the masks' canvas (default: the smallest
        that holds every image). Replaces the current image."""
        self.reset_image()
        self.batch_sizes = [tuple(s) for s in original_sizes]
        self.canvas = tuple(canvas) if canvas is not None else canvas_shape(self.batch_sizes)
        self.batch_resize = PaddedMaskResize([self._mask_resize(i, o, features.shape[-1], sparse=False)
                                              for i, o in zip(input_sizes, original_sizes)], self.canvas)
        _, dense = self.model.prompt_encoder(points=None, boxes=None, masks=None)
        used_grid = tuple(-(-n // 4) for n in self.batch_resize.used)
        self.decoder.set_images(features, self.model.prompt_encoder.get_dense_pe(), dense, used_grid)

    @torch.no_grad()
    def predict_points(self, xy: Tensor) -> tuple[Tensor, Tensor]:
        """Masks of one positive point per prompt for the first ``n`` images of :meth:`set_batch`: ``xy (n, P, 2)``
        (host, float32, each image's own pixel coordinates) -> SAM's 3 thresholded masks ``(n, P, 3, H, W)`` on the
        canvas (False beyond each image) and their predicted IoUs ``(n, P, 3)``. The prompts of all n images go
        through the decoder together; the masks are resized ``RESIZE_BYTES`` of logits at a time."""
        images, prompts = xy.shape[:2]
        coords = torch.cat([self.transform.apply_coords_torch(points, size)
                            for points, size in zip(xy, self.batch_sizes)])
        logits, iou = self.decoder(point_prompts(self.model.prompt_encoder, upload(coords, self.device)[:, None]),
                                   images)
        used_rows, used_cols = self.batch_resize.used
        logits = logits[..., :used_rows, :used_cols].view(images, prompts, *logits.shape[1:-2], used_rows, used_cols)
        masks = torch.empty(images, prompts, logits.shape[2], *self.canvas, dtype=torch.bool, device=self.device)
        step = max(1, RESIZE_BYTES // (4 * images * logits.shape[2] * self.canvas[0] * self.canvas[1]))
        for start in range(0, prompts, step):
            chunk = logits[:, start: start + step]
            resized = self.batch_resize(chunk.flatten(1, 2)).view(masks[:, start: start + step].shape)
            torch.gt(resized, self.model.mask_threshold, out=masks[:, start: start + step])
        return masks, iou.view(images, prompts, -1)

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
        sparse = point_prompts(self.model.prompt_encoder, point_coords)
        masks = torch.empty(len(sparse), self.decoder.decoder.num_multimask_outputs, *self.original_size,
                            dtype=torch.bool, device=self.device)
        decode = lambda start, stop: self._decode(sparse[start: stop], masks[start: stop])  # noqa: E731
        outputs = decode_in_steps(decode, len(sparse), self.device, self.prompts_per_step, self.threads)
        iou_predictions, low_res = zip(*outputs)
        return masks, torch.cat(iou_predictions), torch.cat(low_res)

    @torch.no_grad()
    def _decode(self, sparse: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Decode a step of prompts: thresholded masks at the original size into ``masks``; returns the predicted
        IoUs and the low-resolution logits."""
        logits, iou = self.decoder(sparse)
        used_rows, used_cols = self.resize.used
        used = logits[..., :used_rows, :used_cols]
        if self.resize.sparse:  # a CPU: one prompt at a time stays in cache, 1.5x faster
            for prompt_logits, prompt_masks in zip(used, masks):
                torch.gt(self.resize(prompt_logits), self.model.mask_threshold, out=prompt_masks)
        else:  # a GPU: the whole step in a few kernels
            torch.gt(self.resize(used), self.model.mask_threshold, out=masks)
        return iou, logits
