"""Inspection panels of stage-one output: photo, localization maps, Y0, refined label and GT in one RGB image.

A panel is one row of equally tall tiles, each with a title bar::

    [header: image id, classes, "RANDOM WEIGHTS" when the shard was produced with random weights]
    photo | loc map class 1 | ... | loc map class K | Y0 (initial) | refined | GT (IoU)
    [legend: colour swatch + index + name of every class present]

Composed with numpy and PIL; matplotlib is used only for its colormap. Label maps are drawn in the PASCAL palette.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pseudolabel.classes import IGNORE_INDEX, ClassSet, pascal_palette

TITLE_H = 20            # title bar above each tile
HEADER_H = 24           # panel header (image id, RANDOM WEIGHTS)
LEGEND_ROW_H = 20
GAP = 4
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
WARN = (200, 0, 0)
PLACEHOLDER = (128, 128, 128)
HEATMAP_ALPHA = 0.5


@lru_cache(maxsize=4)
def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """``(H, W) uint8`` label map -> ``(H, W, 3) uint8`` RGB in the PASCAL palette (255 = ignore colour)."""
    return pascal_palette()[np.asarray(labels, np.uint8)]


def heatmap(values: np.ndarray, photo: np.ndarray | None = None, cmap: str = "jet",
            alpha: float = HEATMAP_ALPHA) -> np.ndarray:
    """A ``[0, 1]`` map as an RGB heatmap, blended over ``photo`` (same size) when given."""
    import matplotlib  # colormap only

    colours = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(values), 0.0, 1.0))[..., :3]
    colours = (colours * 255.0).astype(np.float32)
    if photo is not None:
        colours = alpha * colours + (1.0 - alpha) * photo.astype(np.float32)
    return np.clip(np.rint(colours), 0, 255).astype(np.uint8)


def image_iou(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> float:
    """Per-image mIoU in percent over the classes present in GT or prediction (mmseg rule, GT ``ignore_index``
    pixels not scored; NaN when nothing is scored), computed by :mod:`pseudolabel.evaluation`."""
    from pseudolabel.evaluation import CountTable, count_image, image_miou

    counts = count_image(np.asarray(gt), np.asarray(pred), num_classes, ignore_index, boundary=None)
    return float(image_miou(CountTable.stack(["image"], [counts], num_classes))[0])


def class_coverage(labels: np.ndarray, class_ids) -> dict[int, float]:
    """Fraction of the pixels of a label map carrying each of ``class_ids`` (0.0 for a class with no pixel)."""
    labels = np.asarray(labels, np.uint8)
    counts = np.bincount(labels.ravel(), minlength=256)
    return {int(c): float(counts[c] / max(1, labels.size)) for c in class_ids}


def _class_name(class_set: ClassSet, index: int) -> str:
    if index == IGNORE_INDEX:
        return "ignore"
    if 0 <= index < class_set.num_classes:
        return class_set.classes[index]
    return f"? {index}"


def legend_entries(record, class_set: ClassSet, gt: np.ndarray | None = None) -> list[tuple[int, str, tuple]]:
    """``(index, name, (r, g, b))`` of every label value present in Y0, the refined label and the GT (when given),
    sorted by index; 255 is listed as ``ignore``."""
    values: set[int] = set()
    for labels in (record.initial, record.refined, gt):
        if labels is not None:
            values.update(int(v) for v in np.unique(labels))
    palette = pascal_palette()
    return [(v, _class_name(class_set, v), tuple(int(c) for c in palette[v])) for v in sorted(values)]


def _resize(array: np.ndarray, size_wh: tuple[int, int], nearest: bool) -> np.ndarray:
    if (array.shape[1], array.shape[0]) == tuple(size_wh):
        return array
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(array).resize(size_wh, resample))


def _placeholder(size_wh: tuple[int, int], text: str) -> np.ndarray:
    tile = Image.new("RGB", size_wh, PLACEHOLDER)
    draw = ImageDraw.Draw(tile)
    font = _font(12)
    lines = text.split("\n")
    y = max(2, size_wh[1] // 2 - 8 * len(lines))
    for line in lines:
        x = max(2, (size_wh[0] - _text_width(draw, line, font)) // 2)
        draw.text((x, y), line, fill=(255, 255, 255), font=font)
        y += 16
    return np.asarray(tile)


def _fit(text: str, draw, font, width: int) -> str:
    if _text_width(draw, text, font) <= width:
        return text
    while len(text) > 1 and _text_width(draw, text + "…", font) > width:
        text = text[:-1]
    return text + "…"


def _format_iou(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def render_panel(record, class_set: ClassSet, photo: np.ndarray | None = None, gt: np.ndarray | None = None,
                 random_weights: bool = False, tile_height: int = 160) -> np.ndarray:
    """Compose the inspection panel of one :class:`~pseudolabel.storage.shards.LabelRecord` as ``(H, W, 3) uint8`` RGB.

    ``photo``: the image (resized to the record size if it differs), or None for a "photo not found" tile.
    ``gt``: GT label map; adds a GT tile whose title gives the per-image IoU of the refined label (and Y0's IoU in
    the Y0 title). ``random_weights``: adds a red "RANDOM WEIGHTS" header.
    """
    height, width = (int(s) for s in record.size)
    scale = tile_height / max(1, height)
    tile_wh = (max(1, int(round(width * scale))), tile_height)
    photo_small = None
    if photo is not None:
        photo = np.asarray(photo, np.uint8)
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        photo_small = _resize(photo[..., :3], tile_wh, nearest=False)

    tiles: list[tuple[str, np.ndarray, tuple]] = []
    tiles.append(("photo", photo_small if photo_small is not None else _placeholder(tile_wh, "photo\nnot found"),
                  TEXT if photo_small is not None else WARN))
    loc_maps = record.loc_maps if len(record.loc_class_ids) else np.zeros((0, height, width), np.float32)
    for class_id, values in zip(record.loc_class_ids, loc_maps):
        small = _resize(values.astype(np.float32), tile_wh, nearest=False)
        tiles.append((f"loc: {_class_name(class_set, class_id)}", heatmap(small, photo_small), TEXT))

    gt_ok = gt is not None and np.asarray(gt).shape == (height, width)
    num_classes = class_set.num_classes
    y0_title, refined_title = "Y0 (initial)", "refined"
    if gt_ok:
        refined_iou = _format_iou(image_iou(gt, record.refined, num_classes))
        y0_title += f"  IoU {_format_iou(image_iou(gt, record.initial, num_classes))}"
        refined_title += f"  IoU {refined_iou}"
    tiles.append((y0_title, _resize(colorize_labels(record.initial), tile_wh, nearest=True), TEXT))
    tiles.append((refined_title, _resize(colorize_labels(record.refined), tile_wh, nearest=True), TEXT))
    if gt is not None:
        if gt_ok:
            tiles.append((f"GT  IoU {refined_iou}", _resize(colorize_labels(gt), tile_wh, nearest=True), TEXT))
        else:
            tiles.append((f"GT size {tuple(np.asarray(gt).shape)}",
                          _placeholder(tile_wh, f"GT size mismatch\n{np.asarray(gt).shape} vs {(height, width)}"), WARN))

    entries = legend_entries(record, class_set, gt if gt_ok else None)
    tile_w = tile_wh[0]
    panel_w = len(tiles) * tile_w + (len(tiles) + 1) * GAP
    canvas_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font, small_font = _font(13), _font(12)
    # legend: flow layout of swatch + "index name"
    legend_items = []
    for index, name, colour in entries:
        label = f"{index} {name}"
        legend_items.append((label, colour, 14 + 4 + _text_width(canvas_probe, label, small_font) + 12))
    rows, x = 1, GAP
    for _, _, item_w in legend_items:
        if x + item_w > panel_w - GAP and x > GAP:
            rows, x = rows + 1, GAP
        x += item_w
    legend_h = rows * LEGEND_ROW_H + GAP
    panel_h = HEADER_H + TITLE_H + tile_height + GAP + legend_h

    canvas = Image.new("RGB", (panel_w, panel_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    names = ", ".join(_class_name(class_set, c) for c in record.class_ids) or "no foreground class"
    header = f"{record.image_id}  [{names}]"
    x_header = GAP
    if random_weights:
        tag = "RANDOM WEIGHTS"
        tag_w = _text_width(draw, tag, font) + 8
        draw.rectangle([GAP, 2, GAP + tag_w, HEADER_H - 3], fill=WARN)
        draw.text((GAP + 4, 4), tag, fill=(255, 255, 255), font=font)
        x_header = GAP + tag_w + 8
    draw.text((x_header, 4), _fit(header, draw, font, panel_w - x_header - GAP), fill=TEXT, font=font)

    for i, (title, tile, colour) in enumerate(tiles):
        x0 = GAP + i * (tile_w + GAP)
        draw.text((x0, HEADER_H + 3), _fit(title, draw, small_font, tile_w), fill=colour, font=small_font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (x0, HEADER_H + TITLE_H))

    y, x = HEADER_H + TITLE_H + tile_height + GAP, GAP
    for label, colour, item_w in legend_items:
        if x + item_w > panel_w - GAP and x > GAP:
            y, x = y + LEGEND_ROW_H, GAP
        draw.rectangle([x, y + 2, x + 14, y + 16], fill=colour, outline=(0, 0, 0))
        draw.text((x + 18, y + 2), label, fill=TEXT, font=small_font)
        x += item_w
    return np.asarray(canvas)


def save_panel(panel: np.ndarray, path) -> None:
    """Write a panel as PNG."""
    Image.fromarray(panel).save(path)
