"""Class-aware attention affinity (CAA) refinement of CAMs, as in CLIP-ES / WeCLIP
(docs/method.md#class-aware-attention-affinity)."""
from __future__ import annotations

import cv2
import numpy as np
import torch


def box_mask(cam: np.ndarray, tau: float) -> np.ndarray:
    """Union of the bounding boxes of every contour of ``{cam > tau * max}`` on the token grid, ``(h, w) bool``.

    Same semantics as CLIP-ES ``scoremap2bbox`` with ``multi_contour_eval``: threshold of ``uint8(cam * 255)`` at
    ``int(tau * max)`` (strictly greater), boxes ``[y0:y1, x0:x1]`` with the exclusive end clipped to ``w-1``/``h-1``
    (so the last token row and column are never inside); no contour gives an empty mask.
    """
    height, width = cam.shape
    scoremap = (cam * 255).astype(np.uint8)
    _, binary = cv2.threshold(scoremap, int(tau * np.max(scoremap)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    mask = np.zeros((height, width), dtype=bool)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        mask[y:min(y + h, height - 1), x:min(x + w, width - 1)] = True
    return mask


def affinity_from_attention(attention: torch.Tensor) -> torch.Tensor:
    """Transition matrix from head-averaged attention ``(..., blocks, 1+hw, 1+hw)``: mean over blocks, cls dropped,
    Sinkhorn normalisation (columns then rows, three times), symmetrised, squared. Returns ``(..., hw, hw)``."""
    t = attention.double().mean(dim=-3)[..., 1:, 1:]  # float64: repeated normalisation and squaring lose digits
    for _ in range(3):
        t = t / t.sum(dim=-2, keepdim=True)
        t = t / t.sum(dim=-1, keepdim=True)
    t = (t + t.transpose(-2, -1)) / 2
    return t @ t


def minmax(x: torch.Tensor) -> torch.Tensor:
    """``(x - min) / (max' + 1e-7)`` over the last two dims (pytorch-grad-cam's ``scale_cam_image``)."""
    x = x - x.amin(dim=(-2, -1), keepdim=True)
    return x / (x.amax(dim=(-2, -1), keepdim=True) + 1e-7)


def refine_with_boxes(cams: torch.Tensor, affinity: torch.Tensor, boxes: torch.Tensor, rows: torch.Tensor
                      ) -> torch.Tensor:
    """CAA: ``minmax((T ⊙ 1·vec(B_c)ᵀ) @ vec(M_c))`` for every map of ``cams (K, h, w)`` with its box mask of
    ``boxes (K, h, w)`` (:func:`box_mask`) and its image's ``T`` of ``affinity (n, hw, hw)``, the ``rows``-th
    -> ``(K, h, w)``."""
    k, h, w = cams.shape
    flat = cams.reshape(k, h * w, 1).to(affinity.dtype)
    columns = boxes.reshape(k, 1, h * w).to(affinity.dtype)  # the box mask selects source columns
    return minmax(torch.bmm(affinity.index_select(0, rows).mul_(columns), flat).reshape(k, h, w))
