#!/usr/bin/env python
"""Export speed at VOC size: labels/s of tools/export_labels.py's export (VOC layout palette PNGs, with and without
CLIP-ES maps) for 1 and 2 worker processes, beside the cost of CLIP-ES's own mask writer (cv2.imwrite). One command,
prints a table, with PNG encoding alone at the export's zlib level and at PIL's default. Target: >= 300 VOC labels/s on
2 cores.

    .venv/bin/python bench/bench_export.py [--images 600]

Labels are synthetic 375x500 maps with 1-3 smooth blob-shaped objects and a 5-pixel ignore band on their borders
(VOC-like PNG sizes of a few KB), 2 localization maps each, in shards of 200 images.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402
from pseudolabel.classes import get_class_set, pascal_palette  # noqa: E402
from pseudolabel.image_io import write_label_png  # noqa: E402
from pseudolabel.storage.export import PNG_COMPRESS_LEVEL, ExportConfig, export_labels  # noqa: E402
from pseudolabel.storage.shards import LabelRecord, ShardWriter, open_shards  # noqa: E402

VOC = get_class_set("voc")
SIZE = (375, 500)
SHARD_SIZE = 200


def blob_record(rng: np.random.Generator, image_id: str) -> LabelRecord:
    """A VOC-sized record: smooth blobs (thresholded smoothed noise), one class each, ignore band on the borders."""
    class_ids = tuple(sorted(rng.choice(np.arange(1, 21), int(rng.integers(1, 4)), replace=False).tolist()))
    labels = np.zeros(SIZE, np.uint8)
    for c in class_ids:
        field = ndi.gaussian_filter(rng.standard_normal((SIZE[0] // 25, SIZE[1] // 25)), 2)
        blob = cv2.resize((field > field.std()).astype(np.uint8), SIZE[::-1], interpolation=cv2.INTER_LINEAR)
        labels[blob > 0] = c
    band = ndi.morphological_gradient(labels, size=5) > 0
    labels[band] = 255
    lowres = rng.random((len(class_ids), -(-SIZE[0] // 16), -(-SIZE[1] // 16))).astype(np.float32)
    return LabelRecord(image_id=image_id, refined=labels, initial=labels, loc_maps_lowres=lowres,
                       loc_class_ids=class_ids, class_ids=class_ids, size=SIZE)


def write_shards(directory: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir()
    attrs = {"dataset": "voc", "split": "train_aug", "config": {}, "random_weights": True}
    for start in range(0, count, SHARD_SIZE):
        with ShardWriter(directory / f"shard-r000-{start // SHARD_SIZE:05d}.h5", VOC, attrs) as writer:
            for index in range(start, min(count, start + SHARD_SIZE)):
                writer.write(blob_record(rng, f"{index:06d}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600, help="number of synthetic images (default 600)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_shards(tmp / "shards", args.images)
        for label, config in (("voc layout, 1 worker", ExportConfig(workers=1)),
                              ("voc layout, 2 workers", ExportConfig(workers=2)),
                              ("voc layout + CLIP-ES maps, 2 workers", ExportConfig(workers=2, maps="clipes"))):
            out = tmp / f"out{len(rows)}"
            start = time.perf_counter()
            summary = export_labels(tmp / "shards", out, config, progress=False)
            seconds = time.perf_counter() - start
            assert summary.written == args.images
            size = sum(p.stat().st_size for p in summary.label_dir.glob("*.png")) / args.images
            rows.append((label, seconds, size))
        shards = open_shards(tmp / "shards")
        labels = [shards.read_label(i) for i in sorted(shards)]
        palette = pascal_palette()
        (tmp / "cv2").mkdir()
        start = time.perf_counter()
        for number, label in enumerate(labels):   # CLIP-ES writes its masks with cv2.imwrite (eval_cam_with_crf.py)
            cv2.imwrite(str(tmp / "cv2" / f"{number:06d}.png"), label)
        rows.append(("reference: cv2.imwrite of the same maps, 1 process", time.perf_counter() - start,
                     sum(p.stat().st_size for p in (tmp / "cv2").glob("*.png")) / args.images))
        for level in (PNG_COMPRESS_LEVEL, 6):   # the export's zlib level against PIL's default, encoding only
            start, size = time.perf_counter(), 0
            for label in labels:
                buffer = io.BytesIO()
                write_label_png(buffer, label, palette, compress_level=level)
                size += buffer.tell()
            rows.append((f"palette PNG encoding only, zlib level {level}, 1 process", time.perf_counter() - start,
                         size / args.images))
    print(f"{args.images} synthetic VOC-size labels (375x500), target >= 300 labels/s on 2 cores")
    print(f"{'export':<52}{'total s':>9}{'labels/s':>10}{'KB/PNG':>8}")
    for label, seconds, size in rows:
        print(f"{label:<52}{seconds:>9.2f}{args.images / seconds:>10.0f}{size / 1024:>8.1f}")


if __name__ == "__main__":
    main()
