"""Resizing localization maps from token to image resolution (CLIP-ES ``attn_highres`` convention)."""
from __future__ import annotations

import cv2
import numpy as np


def resize_maps(maps_lowres: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``(K, h, w)`` -> ``(K, H, W)`` float32 with cv2's bilinear resize, map by map."""
    maps = np.asarray(maps_lowres, np.float32)
    height, width = size_hw
    if maps.shape[0] == 0:
        return np.zeros((0, height, width), np.float32)
    return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps])
