#!/usr/bin/env python
"""Benchmark of the label-inspection tools at VOC image size; one command, prints a table.

Writes N synthetic 375x500 records (2 classes each, token-resolution loc maps) into 2 shards with ShardWriter, plus
the matching GT PNGs and photos, then times: one panel render, tools/view_labels.py --worst N --gt --html
(scoring + panels + HTML, serial), and the shard check.

    .venv/bin/python bench/bench_viewer.py [--images 50]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pseudolabel.classes import get_class_set, pascal_palette  # noqa: E402
from pseudolabel.image_io import write_label_png  # noqa: E402
from pseudolabel.storage.check import run_check  # noqa: E402
from pseudolabel.storage.shards import LabelRecord, ShardWriter, open_shards  # noqa: E402
from pseudolabel.viewer.visualize import render_panel  # noqa: E402
from tests.fixtures.viewer_shards import ATTRS, load_tool  # noqa: E402

VOC = get_class_set("voc")
SIZE = (375, 500)


def synthetic(rng: np.random.Generator, image_id: str) -> tuple[LabelRecord, np.ndarray, np.ndarray]:
    """A record with two rectangular objects, its GT (objects shifted) and a noise photo."""
    h, w = SIZE
    class_ids = tuple(sorted(rng.choice(np.arange(1, 21), 2, replace=False).tolist()))
    refined = np.zeros(SIZE, np.uint8)
    for c in class_ids:
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        refined[y: y + h // 3, x: x + w // 3] = c
    gt = np.roll(refined, int(rng.integers(-30, 30)), axis=1)
    lowres = rng.random((2, -(-h // 16), -(-w // 16))).astype(np.float32)
    photo = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    record = LabelRecord(image_id=image_id, refined=refined, initial=refined.copy(), loc_maps_lowres=lowres,
                         loc_class_ids=class_ids, class_ids=class_ids, size=SIZE)
    return record, gt, photo


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):   # keep tqdm bars out of the table
        value = function()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50, help="number of synthetic images (default 50)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards, gt_dir, photos = tmp / "shards", tmp / "gt", tmp / "photos"
        for folder in (shards, gt_dir, photos):
            folder.mkdir()
        items = [synthetic(rng, f"img_{i:05d}") for i in range(args.images)]
        half = (len(items) + 1) // 2
        listing = {}
        for index, chunk in enumerate((items[:half], items[half:])):
            name = f"shard-r000-{index:05d}.h5"
            with ShardWriter(shards / name, VOC, ATTRS) as writer:
                for record, gt, photo in chunk:
                    writer.write(record)
                    write_label_png(gt_dir / f"{record.image_id}.png", gt, pascal_palette())
                    Image.fromarray(photo).save(photos / f"{record.image_id}.jpg", quality=90)
            listing[name] = [record.image_id for record, _, _ in chunk]
        (shards / "manifest.json").write_text(json.dumps({"num_images": args.images, "shards": listing,
                                                          "failures": []}))
        record, gt, photo = items[0]
        stored = open_shards(shards)[record.image_id]
        panel_s, _ = timed(lambda: [render_panel(stored, VOC, photo=photo, gt=gt) for _ in range(5)])
        tool_s, status = timed(lambda: load_tool("view_labels").main(
            [str(shards), "--out", str(tmp / "viz"), "--worst", str(args.images), "--gt", str(gt_dir),
             "--images", str(photos), "--html"]))
        assert status == 0
        check_s, result = timed(lambda: run_check(shards))
        assert result.ok, result.summary()
    n = args.images
    print(f"{'step':<52}{'total s':>9}{'ms/image':>10}")
    print(f"{'render_panel (500x375, 2 maps, GT), 5 renders':<52}{panel_s:>9.2f}{1000 * panel_s / 5:>10.1f}")
    print(f"{f'view_labels --worst {n} --gt --images --html':<52}{tool_s:>9.2f}{1000 * tool_s / n:>10.1f}")
    print(f"{f'check_shards ({n} images, 2 shards)':<52}{check_s:>9.2f}{1000 * check_s / n:>10.1f}")


if __name__ == "__main__":
    main()
