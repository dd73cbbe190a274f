"""Reading images and label maps, with clear errors naming the file.

Images keep their stored orientation (no EXIF rotation): dataset GT masks are aligned with the stored pixels.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG must fail, never decode as grey


class ImageReadError(Exception):
    """An image that cannot be used; the message names the file and what to do."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit single channel: scale its true value range to 0..255.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        warnings.warn(f"{path}: {mode} image scaled from [{low:g}, {high:g}] to 8-bit and used as grey RGB", stacklevel=3)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("L", "1", "LA"):
        warnings.warn(f"{path}: greyscale image used as RGB (3 equal channels)", stacklevel=3)
    elif mode == "CMYK":
        warnings.warn(f"{path}: CMYK image converted to RGB", stacklevel=3)
    elif mode in ("RGBA", "P", "PA"):
        if mode != "P":
            warnings.warn(f"{path}: {mode} image, alpha channel dropped", stacklevel=3)
    else:
        warnings.warn(f"{path}: {mode} image converted to RGB", stacklevel=3)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB.

    Greyscale, CMYK, palette, RGBA and 16-bit images are converted (with a warning naming the file); an unreadable,
    truncated or empty file raises :class:`ImageReadError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file does not exist; check the dataset root and the split/label list")
    try:
        with Image.open(path) as image:
            image.load()
            array = _to_rgb(image, path)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"cannot decode image ({error}); re-download or remove this file") from None
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(path, "image has zero size; re-download or remove this file")
    return array


def read_label_png(path: str | Path) -> np.ndarray:
    """Read an index (palette or single-channel) label PNG as ``(H, W) uint8``."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("P", "L"):
                raise ImageReadError(path, f"label maps must be palette or 8-bit single-channel PNGs, got mode {image.mode}")
            return np.asarray(image, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageReadError(path, "label file does not exist") from None
    except (OSError, SyntaxError) as error:
        raise ImageReadError(path, f"cannot decode label map ({error})") from None


def write_label_png(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """Write a ``uint8`` label map as a palette PNG (so viewers show colours, not a black image)."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    image.save(path)
