"""Boundary bands for mBIoU (docs/evaluation.md#what-is-computed).

``band(X) = X ∧ ¬erode(X, ones(k, k))`` for a binary mask X. Two borders:

- ``"default"``: cv2's default erode border, i.e. pixels outside the image are ignored, so a mask touching
  the image edge has no band along that edge (the paper's definition, our default).
- ``"pad"``: the mask is padded with zeros first, so the image edge counts as boundary (Boundary IoU reference).

For a whole label map ``L`` the bands of all classes at once follow from one erosion and one dilation of ``L``:
``band_c(x) = [L(x) = c] ∧ ∃y in the window of x with L(y) ≠ c``, and "some other value in the window" is exactly
``min_window(L) ≠ max_window(L)`` given that ``L(x) = c`` is in the window. Every value other than ``c`` (including
the ignore label 255) counts as "not c" in the erosion of the mask of class ``c``.
"""
from __future__ import annotations

import cv2
import numpy as np

BORDERS = ("default", "pad")


def _check(kernel: int, border: str) -> None:
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"boundary kernel must be a positive odd integer (got {kernel}); the paper uses 23")
    if border not in BORDERS:
        raise ValueError(f"boundary border must be one of {BORDERS} (got {border!r})")


def _edge_frame(shape: tuple[int, int], radius: int) -> np.ndarray:
    """Pixels whose (2r+1)-window reaches outside the image (these see the zero padding in ``pad`` mode)."""
    frame = np.zeros(shape, dtype=bool)
    if radius:
        frame[:radius], frame[-radius:], frame[:, :radius], frame[:, -radius:] = True, True, True, True
    return frame


def mask_band(mask: np.ndarray, kernel: int = 23, border: str = "default") -> np.ndarray:
    """Band of one binary mask: ``mask ∧ ¬erode(mask, ones(kernel, kernel))`` (reference definition, bool (H, W))."""
    _check(kernel, border)
    mask = mask.astype(np.uint8)
    structuring = np.ones((kernel, kernel), np.uint8)
    if border == "pad":
        eroded = cv2.erode(mask, structuring, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        eroded = cv2.erode(mask, structuring)
    return mask.astype(bool) & ~eroded.astype(bool)


def label_band(labels: np.ndarray, kernel: int = 23, border: str = "default") -> np.ndarray:
    """Pixels on the band of their own class, for all classes at once (bool (H, W)).

    ``label_band(L) ∧ (L == c)`` equals ``mask_band(L == c)`` for every value ``c`` (see the module docstring).
    """
    _check(kernel, border)
    if labels.dtype != np.uint8:
        raise TypeError(f"label maps must be uint8 (got {labels.dtype})")
    structuring = np.ones((kernel, kernel), np.uint8)
    # cv2's default border ignores outside pixels for both erode (min) and dilate (max).
    on_band = cv2.erode(labels, structuring) != cv2.dilate(labels, structuring)
    if border == "pad":
        on_band |= _edge_frame(labels.shape, kernel // 2)
    return on_band
