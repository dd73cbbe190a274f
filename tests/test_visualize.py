"""Inspection panels (pseudolabel.viewer.visualize) and tools/view_labels.py on small real shards."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from pseudolabel.storage.shards import LabelRecord, open_shards
from pseudolabel.viewer.photos import PhotoFinder
from pseudolabel.viewer.visualize import (GAP, HEADER_H, TITLE_H, class_coverage, colorize_labels, heatmap, image_iou,
                                   legend_entries, render_panel)
from tests.fixtures.viewer_shards import VOC, load_tool, make_voc_run

TILE = 48   # tile height used below; the 48 x 64 test images give 64-pixel-wide tiles


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    return make_voc_run(tmp_path_factory.mktemp("visualize"))


def photo_tile(panel: np.ndarray, index: int = 0, tile_w: int = 64) -> np.ndarray:
    x0 = GAP + index * (tile_w + GAP)
    return panel[HEADER_H + TITLE_H: HEADER_H + TITLE_H + TILE, x0: x0 + tile_w]


def is_placeholder(tile: np.ndarray) -> bool:
    """The "photo not found" tile: grey with white text (grey levels only)."""
    grey = (tile == tile[..., :1]).all()
    return bool(grey and (tile == 128).all(axis=-1).mean() > 0.7)


def test_image_iou_known_case():
    gt = np.array([[0, 0, 1, 1, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1, 2, 3]], np.uint8)
    # class 2 only on an ignored GT pixel: not scored. bg: inter 1 / union 2; class 1: 2 / 4; class 3 (predicted,
    # absent from GT): 0 / 1 -> stays in the mean (mmseg rule)
    assert image_iou(gt, pred, 21) == pytest.approx(100 * (1 / 2 + 2 / 4 + 0) / 3)
    assert image_iou(gt, gt, 21) == pytest.approx(100.0)
    assert math.isnan(image_iou(np.full((2, 2), 255, np.uint8), np.zeros((2, 2), np.uint8), 21))
    with pytest.raises(ValueError, match="shape"):
        image_iou(gt, pred[:, :3], 21)


def test_class_coverage():
    labels = np.array([[0, 3, 3, 255], [3, 15, 0, 0]], np.uint8)
    assert class_coverage(labels, (3, 15, 7)) == {3: 3 / 8, 15: 1 / 8, 7: 0.0}


def test_heatmap_uses_the_colormap_and_blends():
    import matplotlib

    values = np.array([[0.0, 1.0, 2.0]], np.float32)           # 2.0 is clipped to 1
    jet = (matplotlib.colormaps["jet"]([0.0, 1.0])[:, :3] * 255).round()
    assert np.array_equal(heatmap(values), np.stack([jet[0], jet[1], jet[1]])[None].astype(np.uint8))
    photo = np.full((1, 3, 3), 200, np.uint8)
    blended = heatmap(values, photo, alpha=0.5).astype(float)
    assert np.allclose(blended, np.rint(0.5 * heatmap(values).astype(float) + 100), atol=1)


def test_panel_width_grows_with_number_of_maps(voc_run):
    _, shard_dir, _ = voc_run
    record = next(iter(open_shards(shard_dir).values()))
    h, w = record.size
    widths = []
    for k in (1, 3):
        rec = LabelRecord(image_id="x", refined=record.refined, initial=record.initial,
                          loc_maps_lowres=np.random.default_rng(0).random((k, 3, 4), np.float32),
                          loc_class_ids=tuple(range(1, k + 1)), class_ids=record.class_ids, size=record.size)
        panel = render_panel(rec, VOC, photo=np.zeros((h, w, 3), np.uint8), tile_height=96)
        assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
        widths.append(panel.shape[1])
    tile_w = round(w * 96 / h)
    assert widths[1] - widths[0] == 2 * (tile_w + GAP)


def test_legend_is_exactly_the_classes_present():
    refined = np.zeros((8, 8), np.uint8)
    refined[:4] = 3
    initial = refined.copy()
    initial[6:, :2] = 15
    gt = refined.copy()
    gt[4, :] = 255
    record = LabelRecord(image_id="x", refined=refined, initial=initial, loc_maps_lowres=np.zeros((2, 1, 1), np.float32),
                         loc_class_ids=(3, 15), class_ids=(3, 15), size=(8, 8))
    entries = legend_entries(record, VOC, gt)
    assert [(i, n) for i, n, _ in entries] == [(0, "background"), (3, "bird"), (15, "person"), (255, "ignore")]
    assert entries[1][2] == (128, 128, 0)                       # PASCAL colour of class 3
    assert [i for i, _, _ in legend_entries(record, VOC)] == [0, 3, 15]
    refined_only = LabelRecord(image_id="x", refined=refined, initial=refined,
                               loc_maps_lowres=np.zeros((0, 1, 1), np.float32), loc_class_ids=(), class_ids=(3,),
                               size=(8, 8))
    assert [i for i, _, _ in legend_entries(refined_only, VOC)] == [0, 3]


def test_panel_tiles_header_placeholder_and_gt(voc_run):
    _, shard_dir, dataset = voc_run
    shards = open_shards(shard_dir)
    image_id = sorted(shards)[0]
    record, gt = shards[image_id], dataset.read_gt(image_id)
    photo = np.asarray(Image.open(dataset.by_id(image_id).image_path).convert("RGB"))
    plain = render_panel(record, VOC, photo=photo, tile_height=TILE)
    flagged = render_panel(record, VOC, photo=None, random_weights=True, tile_height=TILE)
    with_gt = render_panel(record, VOC, photo=photo, gt=gt, tile_height=TILE)
    red = lambda p: ((p[:HEADER_H, :, 0] > 180) & (p[:HEADER_H, :, 1] < 40) & (p[:HEADER_H, :, 2] < 40)).sum()  # noqa: E731
    assert red(flagged) > 100 and red(plain) == 0                 # "RANDOM WEIGHTS" banner
    assert is_placeholder(photo_tile(flagged)) and not is_placeholder(photo_tile(plain))
    # tiles at the image's own size (48 x 64): photo, loc maps, Y0, refined, GT appear unchanged in that order
    k = len(record.loc_class_ids)
    assert np.array_equal(photo_tile(plain), photo)
    assert np.array_equal(photo_tile(plain, k + 1), colorize_labels(record.initial))
    assert np.array_equal(photo_tile(plain, k + 2), colorize_labels(record.refined))
    assert np.array_equal(photo_tile(with_gt, k + 3), colorize_labels(gt))
    assert np.array_equal(photo_tile(plain, 1), heatmap(record.loc_maps[0], photo))
    assert with_gt.shape[1] == plain.shape[1] + 64 + GAP           # one more tile for the GT


def test_view_labels_worst_picks_the_lowest_scores(voc_run, tmp_path):
    root, shard_dir, dataset = voc_run
    out = tmp_path / "viz"
    assert load_tool("view_labels").main([str(shard_dir), "--out", str(out), "--worst", "2", "--gt", "voc:train",
                                          "--data-root", str(root), "--tile-height", str(TILE)]) == 0
    shards = open_shards(shard_dir)
    scores = {i: image_iou(dataset.read_gt(i), shards[i].refined, 21) for i in shards}
    assert len(set(scores.values())) == 4
    worst = sorted(scores, key=scores.get)[:2]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(worst)
    assert scores[worst[1]] < min(v for i, v in scores.items() if i not in worst)


def test_view_labels_photo_sources_and_limit(voc_run, tmp_path):
    root, shard_dir, dataset = voc_run
    tool = load_tool("view_labels")
    first = sorted(dataset.ids())[0]
    photo = np.asarray(Image.open(dataset.by_id(first).image_path).convert("RGB"))
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photo).save(folder / f"{first}.png")
    for name, images in (("dataset", []), ("spec", ["--images", "voc:train"]), ("folder", ["--images", str(folder)])):
        out = tmp_path / name
        assert tool.main([str(shard_dir), "--out", str(out), "--limit", "2", "--data-root", str(root),
                          "--tile-height", str(TILE), *images]) == 0
        assert [p.stem for p in sorted(out.glob("*.png"))] == sorted(dataset.ids())[:2]
        panel = np.asarray(Image.open(out / f"{first}.png"))
        assert np.array_equal(photo_tile(panel), photo), name
    # without a data root the photos cannot be found: placeholder, still exit 0
    out = tmp_path / "nophoto"
    assert tool.main([str(shard_dir), "--out", str(out), "--ids", first, "--data-root", str(tmp_path / "none"),
                      "--tile-height", str(TILE)]) == 0
    assert is_placeholder(photo_tile(np.asarray(Image.open(out / f"{first}.png"))))


def test_photo_folders_are_searched_as_the_custom_dataset_does(tmp_path):
    # ids as a custom tag list gives them: bare, with their extension, upper-case extensions, nested folders
    files = ("a.png", "b.jpg", "c.WEBP", "d.TIFF", "sub/e.jpeg", "f.png.txt")
    for name in files:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 3), (10, 20, 30)).save(tmp_path / name, format="PNG")
    finder = PhotoFinder({}, None, str(tmp_path))
    found = {i: finder.path(i) for i in ("a", "b.jpg", "c", "d", "sub/e", "f", "missing")}
    expected = {"a": "a.png", "b.jpg": "b.jpg", "c": "c.WEBP", "d": "d.TIFF", "sub/e": "sub/e.jpeg", "f": None,
                "missing": None}
    assert found == {i: tmp_path / name if name else None for i, name in expected.items()}
    assert finder.read("b.jpg").shape == (3, 4, 3) and finder.read("missing") is None


@pytest.mark.parametrize("argv", [["--worst", "2"], ["--ids", "nope"], ["--images", "/no/such/folder"],
                                  ["--gt", "/no/such/gt"]])
def test_view_labels_user_errors_exit_2(voc_run, tmp_path, argv):
    _, shard_dir, _ = voc_run
    assert load_tool("view_labels").main([str(shard_dir), "--out", str(tmp_path / "v"), *argv]) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_view_labels_on_a_damaged_shard_is_one_line_naming_it(voc_run, tmp_path, capsys, damage):
    import shutil

    _, shard_dir, _ = voc_run
    shards = shutil.copytree(shard_dir, tmp_path / "shards")
    shard = shards / "shard-r000-00001.h5"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[-200] ^= 0x01
    else:
        del data[len(data) // 2:]
    shard.write_bytes(bytes(data))
    assert load_tool("view_labels").main([str(shards), "--out", str(tmp_path / "v"), "--tile-height", "16"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"shard '{shard}' is damaged" in lines[0] and "tools/check_shards.py" in lines[0]


def test_panels_of_ids_differing_in_a_slash_do_not_overwrite_each_other():
    from pseudolabel.viewer.panels import panel_name

    names = {panel_name(i) for i in ("a/b", "a__b", "a%2Fb")}
    assert len(names) == 3 and not any("/" in n for n in names)
