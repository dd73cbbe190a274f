"""Images of different sizes in one tensor, for the batched GPU path: each image's maps in the top-left corner of a
canvas as large as the largest, along every dimension (channels too), the rest filled with a given value. Per-pixel
work then runs on the whole canvas in a few large kernels; each image is read back as a crop."""
from __future__ import annotations

import torch


def canvas_shape(shapes) -> tuple[int, ...]:
    """The smallest shape that holds every one of ``shapes`` (all of one length)."""
    return tuple(max(sizes) for sizes in zip(*shapes))


def pad_stack(tensors: list[torch.Tensor], fill, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``tensors`` (same number of dimensions, any sizes) stacked into ``(B, *shape)`` (default: the smallest shape
    holding them), each in the top-left corner, the rest ``fill``."""
    shape = shape or canvas_shape([t.shape for t in tensors])
    out = tensors[0].new_full((len(tensors), *shape), fill)
    for row, tensor in zip(out, tensors):
        row[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return out


def crop(canvas: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The top-left ``shape`` of one canvas entry (a view)."""
    return canvas[tuple(slice(0, n) for n in shape)]
