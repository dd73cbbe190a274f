"""Reading images and label maps, with clear errors naming the file.

Images keep their stored orientation: EXIF rotation is *not* applied, because the datasets' GT masks are aligned
with the stored pixels (rotating the photo would misalign it with its mask).
"""
from __future__ import annotations

import unicodedata
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

# A truncated JPEG must fail, never decode with a grey bottom. This is PIL's default; some libraries turn it on.
ImageFile.LOAD_TRUNCATED_IMAGES = False

HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
LABEL_MODES = ("P", "L")
_CONVERSION_NOTES = {
    "L": "greyscale image used as RGB (3 equal channels)",
    "1": "1-bit image used as RGB (3 equal channels)",
    "LA": "greyscale image with alpha: alpha dropped, grey used as RGB",
    "CMYK": "CMYK image converted to RGB",
    "RGBA": "RGBA image: alpha channel dropped",
    "RGBa": "RGBA image: alpha channel dropped",
    "P": "palette image converted to RGB",
    "PA": "palette image with alpha converted to RGB, alpha dropped",
    "YCbCr": "YCbCr image converted to RGB",
}


class ImageReadError(Exception):
    """An image that cannot be used; the message names the file and what to do."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # keep it picklable (data-loader workers send exceptions between processes)
        return type(self), (self.path, self.reason)


def _scale_to_uint8(image: Image.Image, path: Path) -> np.ndarray:
    """A 16/32-bit single-channel image linearly mapped from its actual value range [min, max] to 0..255.

    The actual range, not the nominal 0..65535: 12-bit sensors and depth maps stored in 16 bits would
    otherwise come out nearly black.
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
    warnings.warn(f"{path}: {image.mode} image scaled from its range [{low:g}, {high:g}] to 8-bit, "
                  "used as RGB (3 equal channels)", stacklevel=4)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return np.repeat(_scale_to_uint8(image, path)[..., None], 3, axis=2)
    note = _CONVERSION_NOTES.get(image.mode, f"{image.mode} image converted to RGB")
    warnings.warn(f"{path}: {note}", stacklevel=3)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB, as a viewer shows it (EXIF orientation applied).

    Greyscale, CMYK, palette, RGBA and 16-bit images are converted, with a warning naming the file and the
    conversion (16-bit: linearly scaled from the image's own [min, max] to 0..255). A missing, unreadable,
    truncated or empty file raises :class:`ImageReadError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file does not exist; check the dataset root and the split/label list")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here instead of later as a grey image
            array = _to_rgb(ImageOps.exif_transpose(image), path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(path, f"cannot decode image ({error}); re-download or remove this file") from None
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(path, "image has zero size; re-download or remove this file")
    return array


def read_label_png(path: str | Path) -> np.ndarray:
    """Read an index label map (palette or 8-bit single-channel PNG) as ``(H, W) uint8``.

    The stored indices are returned as they are (a palette PNG's colours are ignored).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "label file does not exist; check the GT folder")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            labels = np.array(image, dtype=np.uint8) if mode in LABEL_MODES else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(path, f"cannot decode label map ({error}); re-download or re-create it") from None
    if labels is None:
        raise ImageReadError(path, f"label maps must be palette (P) or 8-bit single-channel (L) PNGs of class "
                                   f"indices, got mode {mode}; colour (RGB) masks must be converted to indices first")
    return labels


def write_label_png(target: str | Path | BinaryIO, labels: np.ndarray, palette: np.ndarray | None,
                    compress_level: int = 6) -> None:
    """Write a ``uint8`` label map to a path or an open binary file: a palette PNG (so viewers show colours, not a
    black image), or with ``palette=None`` an 8-bit single-channel PNG of the indices (SBD's ``SegmentationClassAug``
    format, which every image reader returns as the indices). ``compress_level`` (zlib, 0-9) trades file size for
    speed; any level decodes the same."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P" if palette is not None else "L")
    if palette is not None:
        image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    image.save(target, format="PNG", compress_level=compress_level)


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` with ``name`` in the form given or in Unicode NFC or NFD, the first that is a file, or None:
    a file name and the id written for it may differ in normal form (macOS writes NFD names, editors NFC text)."""
    for form in dict.fromkeys([name, unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)]):
        if (folder / form).is_file():
            return folder / form
    return None
