"""Viewer panels, tools/view_labels.py (--worst, --html), the HTML contact sheet and the shard checker, on small real
shards written with ShardWriter over a tiny VOC-layout dataset."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest

from pseudolabel.classes import get_class_set
from pseudolabel.datasets import build_dataset
from pseudolabel.html_report import ReportEntry, render_html
from pseudolabel.shard_check import check_shards, run_check
from pseudolabel.shards import LabelRecord, ShardWriter, open_shards
from pseudolabel.visualize import GAP, image_iou, legend_entries, render_panel
from tests.fixtures.tiny_datasets import make_voc

REPO = Path(__file__).resolve().parents[1]
VOC = get_class_set("voc")
ATTRS = {"dataset": "voc", "split": "train", "config": {"skipcam": {"a": 1}, "seed": 0},
         "versions": {"pseudolabel": "test"}, "weights": {"clip": "random"}, "random_weights": True, "rank": 0}


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_record(image_id, gt, class_ids, corrupt: float, seed=0) -> LabelRecord:
    """A record whose refined label is the GT with the left ``corrupt`` fraction of columns set to background."""
    h, w = gt.shape
    refined = gt.copy()
    refined[refined == 255] = 0
    refined[:, : int(round(w * corrupt))] = 0
    initial = np.roll(refined, 3, axis=1)
    rng = np.random.default_rng(seed)
    lowres = rng.random((len(class_ids), -(-h // 16), -(-w // 16))).astype(np.float32)
    return LabelRecord(image_id, refined, initial, lowres, tuple(class_ids), tuple(class_ids), (h, w))


def write_output(directory: Path, records, per_shard=2, manifest=True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    listing = {}
    for i in range(0, len(records), per_shard):
        name = f"shard-r000-{i // per_shard:05d}.h5"
        with ShardWriter(directory / name, VOC, ATTRS) as writer:
            for record in records[i: i + per_shard]:
                writer.write(record)
        listing[name] = [r.image_id for r in records[i: i + per_shard]]
    if manifest:
        (directory / "manifest.json").write_text(json.dumps(
            {"shards": listing, "failures": [{"image_id": "broken", "path": "x.jpg", "reason": "truncated"}],
             "config_hash": "0", "totals": {"images": len(records)}}))
    return directory


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    """(VOC root, shard dir, dataset) with 4 train images; refined = GT corrupted by 0, 25, 50, 75 % of columns."""
    base = tmp_path_factory.mktemp("viewer")
    root = make_voc(base / "data", n_train=4, n_val=1, size=(48, 64))
    dataset = build_dataset("voc", root, "train")
    records = []
    for k, sample in enumerate(dataset):
        gt = dataset.read_gt(sample.image_id)
        records.append(make_record(sample.image_id, gt, sample.class_ids, corrupt=[0.5, 0.0, 0.75, 0.25][k], seed=k))
    shards = write_output(base / "shards", records)
    return root, shards, dataset


# ---------------------------------------------------------------- panels

def test_image_iou_known_case():
    gt = np.array([[0, 0, 1, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1, 2]], np.uint8)   # class 2 only on an ignored GT pixel: not counted
    # background: inter 1, union 2; class 1: inter 2, union 3  -> mean (1/2 + 2/3) / 2
    assert image_iou(gt, pred, 21) == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    assert image_iou(gt, gt, 21) == pytest.approx(100.0)
    assert math.isnan(image_iou(np.full((2, 2), 255, np.uint8), np.zeros((2, 2), np.uint8), 21))


def test_panel_width_grows_with_number_of_maps(voc_run):
    _, shard_dir, _ = voc_run
    record = next(iter(open_shards(shard_dir).values()))
    h, w = record.size
    widths = []
    for k in (1, 3):
        rec = LabelRecord("x", record.refined, record.initial, np.random.default_rng(0).random((k, 3, 4), np.float32),
                          tuple(range(1, k + 1)), record.class_ids, record.size)
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
    record = LabelRecord("x", refined, initial, np.zeros((2, 1, 1), np.float32), (3, 15), (3, 15), (8, 8))
    entries = legend_entries(record, VOC, gt)
    assert [(i, n) for i, n, _ in entries] == [(0, "background"), (3, "bird"), (15, "person"), (255, "ignore")]
    assert entries[1][2] == (128, 128, 0)                       # PASCAL colour of class 3
    assert [i for i, _, _ in legend_entries(record, VOC)] == [0, 3, 15]
    refined_only = LabelRecord("x", refined, refined, np.zeros((0, 1, 1), np.float32), (), (3,), (8, 8))
    assert [i for i, _, _ in legend_entries(refined_only, VOC)] == [0, 3]


def test_panel_header_placeholder_and_gt_tile(voc_run):
    _, shard_dir, dataset = voc_run
    shards = open_shards(shard_dir)
    image_id = sorted(shards)[0]
    record = shards[image_id]
    gt = dataset.read_gt(image_id)
    plain = render_panel(record, VOC, photo=None, random_weights=False, tile_height=64)
    flagged = render_panel(record, VOC, photo=None, random_weights=True, tile_height=64)
    with_gt = render_panel(record, VOC, photo=None, gt=gt, tile_height=64)
    red = lambda p: ((p[:24, :, 0] > 180) & (p[:24, :, 1] < 40) & (p[:24, :, 2] < 40)).sum()  # noqa: E731
    assert red(flagged) > 100 and red(plain) == 0                 # "RANDOM WEIGHTS" banner
    assert with_gt.shape[1] > plain.shape[1]                      # one more tile for the GT
    # the photo tile is the grey "photo not found" placeholder
    tile = plain[24 + 20: 24 + 20 + 64, GAP: GAP + 10]
    assert (tile == 128).all(axis=-1).mean() > 0.9


# ---------------------------------------------------------------- view_labels + HTML

class _Entries(HTMLParser):
    def __init__(self):
        super().__init__()
        self.entries, self.images, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("figure", "div") and "data-id" in attrs:
            self.entries.append((attrs["data-id"], attrs["data-score"]))
        if tag == "img":
            self.images.append(attrs["src"])
        if (tag == "script" and "src" in attrs) or tag == "link":
            self.external.append(attrs)


def test_view_labels_worst_ordering_and_html(voc_run, tmp_path):
    root, shard_dir, dataset = voc_run
    tool = _load_tool("view_labels")
    out = tmp_path / "viz"
    assert tool.main([str(shard_dir), "--out", str(out), "--worst", "3", "--gt", "voc:train",
                      "--data-root", str(root), "--html", "--tile-height", "48"]) == 0
    shards = open_shards(shard_dir)
    scores = {i: image_iou(dataset.read_gt(i), shards[i].refined, 21) for i in shards}
    assert len(set(scores.values())) == 4
    expected = sorted(scores, key=scores.get)[:3]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i}.png" for i in expected)

    parser = _Entries()
    parser.feed((out / "index.html").read_text())
    assert [i for i, _ in parser.entries] == expected            # worst first
    got_scores = [float(s) for _, s in parser.entries]
    assert got_scores == sorted(got_scores)
    assert got_scores == pytest.approx([scores[i] for i in expected], abs=1e-3)
    assert all((out / src).is_file() for src in parser.images) and not parser.external


def test_view_labels_photos_from_dataset_and_limit(voc_run, tmp_path):
    root, shard_dir, dataset = voc_run
    tool = _load_tool("view_labels")
    out = tmp_path / "viz"
    assert tool.main([str(shard_dir), "--out", str(out), "--limit", "2", "--data-root", str(root),
                      "--tile-height", "48", "--html"]) == 0
    panels = sorted(out.glob("*.png"))
    assert [p.stem for p in panels] == sorted(dataset.ids())[:2]
    from PIL import Image
    panel = np.asarray(Image.open(panels[0]))
    photo_tile = panel[24 + 20: 24 + 20 + 48, GAP: GAP + 10]
    assert not (photo_tile == 128).all(axis=-1).mean() > 0.9       # a real photo, not the placeholder
    parser = _Entries()
    parser.feed((out / "index.html").read_text())
    assert [i for i, _ in parser.entries] == sorted(dataset.ids())[:2] and all(s == "" for _, s in parser.entries)
    assert tool.main([str(shard_dir), "--out", str(out), "--worst", "2"]) == 2               # --worst needs --gt
    assert tool.main([str(shard_dir), "--out", str(out), "--ids", "nope"]) == 2


def test_html_entries_sort_and_escape(tmp_path):
    entries = [ReportEntry("b", "b.png", ("cat",), 50.0), ReportEntry("a<&>", "a.png", (), 10.0),
               ReportEntry("c", "c.png", ("dog",), None)]
    parser = _Entries()
    parser.feed(render_html(entries))
    assert parser.entries == [("a<&>", "10.0000"), ("b", "50.0000"), ("c", "")]


# ---------------------------------------------------------------- check_shards

@pytest.fixture()
def good_shards(voc_run, tmp_path):
    _, shard_dir, _ = voc_run
    target = tmp_path / "shards"
    shutil.copytree(shard_dir, target)
    return target


def test_check_passes_a_good_output(good_shards):
    result = run_check(good_shards)
    assert result.problems == []
    assert (result.shards, result.images, result.failures, result.random_weights) == (2, 4, 1, True)


def test_check_catches_a_deleted_image_group(good_shards):
    shard = good_shards / "shard-r000-00001.h5"
    with h5py.File(shard, "a") as f:
        victim = next(iter(f["images"]))
        del f["images"][victim]
    problems = check_shards(good_shards)
    assert len(problems) == 1 and "missing" in problems[0] and victim in problems[0]


def test_check_catches_a_label_outside_the_image_classes(good_shards):
    shard = good_shards / "shard-r000-00000.h5"
    with h5py.File(shard, "a") as f:
        group = next(iter(f["images"].values()))
        absent = next(c for c in range(1, 21) if c not in group.attrs["class_ids"])
        data = group["refined"][()]
        data[0, 0] = absent
        group["refined"][()] = data
    problems = check_shards(good_shards)
    assert len(problems) == 1 and "refined" in problems[0] and f"[{absent}]" in problems[0]


def test_check_catches_duplicates_config_and_palette(good_shards):
    first, second = good_shards / "shard-r000-00000.h5", good_shards / "shard-r000-00001.h5"
    with h5py.File(first, "r") as a, h5py.File(second, "a") as b:
        key = next(iter(a["images"]))
        a.copy(a["images"][key], b["images"], name=key)
        b.attrs["config"] = json.dumps({"seed": 1})
        del b["images"][key]["initial"].attrs["PALETTE"]
    text = "\n".join(check_shards(good_shards))
    assert "stored 2 times" in text and "config differs" in text and "no PALETTE" in text


def test_check_catches_a_truncated_file_and_cli_exit_codes(good_shards, capsys):
    tool = _load_tool("check_shards")
    assert tool.main([str(good_shards)]) == 0
    out = capsys.readouterr().out
    assert "2 shard(s), 4 image(s), 1 failure(s)" in out and "OK" in out

    shard = good_shards / "shard-r000-00001.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    problems = check_shards(good_shards)
    assert any("shard-r000-00001.h5" in p and ("cannot be opened" in p or "unreadable" in p) for p in problems)
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "check_shards.py"), str(good_shards)],
                         capture_output=True, text=True, timeout=60)   # the real script, as a user runs it
    assert bad.returncode == 1 and "FAILED" in bad.stdout, bad.stdout + bad.stderr
    assert tool.main([str(good_shards), "--no-manifest"]) == 1          # still truncated


def test_check_missing_manifest(good_shards):
    (good_shards / "manifest.json").unlink()
    assert any("manifest.json missing" in p for p in check_shards(good_shards))
    assert check_shards(good_shards, require_manifest=False) == []
