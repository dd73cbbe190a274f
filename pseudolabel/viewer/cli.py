"""Render inspection panels (photo, localization maps, Y0, refined label, GT + IoU) of stage-one shards as PNGs,
optionally with a static HTML contact sheet; or, with --report, a label-quality report that needs no ground truth.
See docs/viewing.md.

The viewer's command line, run as ``tools/view_labels.py`` (``cep-view`` when installed):

    tools/view_labels.py out/voc_train --out viz --limit 20 --html
    tools/view_labels.py out/voc_train --out viz --worst 30 --gt voc:train --html
    tools/view_labels.py out/voc_train --out viz --ids 2007_000032 2007_000039 --images /data/photos
    tools/view_labels.py out/voc_train --report --out quality     # label-quality report, no GT needed
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from pseudolabel.storage.format import LABEL_KINDS, REFINED

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG")


def panel_name(image_id: str) -> str:
    """File name of an image's panel (ids with '/' become flat names)."""
    return image_id.replace("/", "__") + ".png"


class PhotoFinder:
    """Photos from ``--images`` (a folder of ``<id>.<ext>`` or a dataset spec ``name:split``), else the image folder
    recorded in the shards (custom and demo datasets), else the dataset named in the shard attributes."""

    def __init__(self, attrs: dict, data_root: str | None, images: str | None):
        from pseudolabel.evaluation.sources import DATASET_SPEC

        self.folder: Path | None = None
        self.dataset = None
        spec = DATASET_SPEC.match(images) if images and not Path(images).exists() else None
        if images and spec is None:
            self.folder = Path(images)
            if not self.folder.is_dir():
                raise ValueError(f"--images '{images}' is neither a folder nor a dataset spec like voc:train")
        elif images is None and attrs.get("image_dir"):
            self.folder = Path(attrs["image_dir"])
            if not self.folder.is_dir():
                print(f"warning: the image folder recorded in the shards, '{self.folder}', does not exist; "
                      "pass --images DIR", file=sys.stderr)
        else:
            name, split = (spec["name"], spec["split"]) if spec else (attrs.get("dataset"), attrs.get("split"))
            try:
                from pseudolabel.datasets import build_dataset

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.dataset = build_dataset(str(name), data_root, str(split))
            except Exception as error:  # noqa: BLE001  (any dataset problem: panels get a placeholder)
                print(f"warning: photos unavailable: dataset {name}:{split} not readable ({error}); "
                      "pass --data-root DIR or --images DIR", file=sys.stderr)

    def path(self, image_id: str) -> Path | None:
        if self.folder is not None:
            for ext in IMAGE_EXTENSIONS:
                candidate = self.folder / f"{image_id}{ext}"
                if candidate.is_file():
                    return candidate
            return None
        if self.dataset is None:
            return None
        try:
            return Path(self.dataset.by_id(image_id).image_path)
        except KeyError:
            return None

    def read(self, image_id: str):
        from pseudolabel.image_io import ImageReadError, read_rgb

        path = self.path(image_id)
        if path is None:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return read_rgb(path)
        except ImageReadError as error:
            print(f"warning: {error}", file=sys.stderr)
            return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", help="stage-one output directory (shard-*.h5)")
    parser.add_argument("--out", required=True, help="folder for the <id>.png panels (and index.html), or for the --report files")
    parser.add_argument("--ids", nargs="+", default=None, help="render these image ids only")
    parser.add_argument("--limit", type=int, default=None, help="render at most N images (in id order)")
    parser.add_argument("--worst", type=int, default=None, metavar="N",
                        help="render the N images with the lowest refined-vs-GT IoU (needs --gt)")
    parser.add_argument("--gt", default=None,
                        help="GT labels: a folder of <id>.png index PNGs or a dataset spec like voc:train; adds a GT "
                             "tile with the per-image IoU")
    parser.add_argument("--data-root", default=None,
                        help="dataset root for the photos (and for a --gt dataset spec); default $CEP_DATA_ROOT "
                             "or data/")
    parser.add_argument("--images", default=None,
                        help="take photos from this folder (<id>.jpg/.png) or dataset spec (e.g. voc:train, read "
                             "under --data-root) instead of the dataset named in the shards")
    parser.add_argument("--kind", choices=LABEL_KINDS, default=REFINED,
                        help="label scored against GT for --worst and the HTML score (default refined)")
    parser.add_argument("--html", action="store_true", help="also write <out>/index.html, a static contact sheet")
    parser.add_argument("--tile-height", type=int, default=160, help="height of each tile in pixels")
    parser.add_argument("--report", action="store_true",
                        help="instead of panels, write <out>/report.html, the label-quality report without GT "
                             "(per-class coverage, SAM acceptance, lost classes, pixels SAM changed, the most "
                             "affected images; one self-contained page), and its numbers as <out>/report.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    from tqdm import tqdm

    from pseudolabel.evaluation import open_source
    from pseudolabel.viewer.html_report import ReportEntry, write_html
    from pseudolabel.storage.shards import open_shards
    from pseudolabel.viewer.visualize import class_coverage, image_iou, render_panel, save_panel

    if args.worst is not None and not args.gt:
        print("error: --worst needs --gt (a folder of GT PNGs or a dataset spec like voc:train)", file=sys.stderr)
        return 2
    try:
        shards = open_shards(args.shards)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    attrs, class_set = shards.attrs, shards.class_set
    random_weights = bool(attrs.get("random_weights", False))
    if random_weights:
        print("note: these shards were produced with RANDOM WEIGHTS", file=sys.stderr)

    ids = sorted(shards)
    if args.ids:
        unknown = [i for i in args.ids if i not in shards]
        if unknown:
            print(f"error: image id(s) not in the shards: {', '.join(unknown)}", file=sys.stderr)
            return 2
        ids = list(args.ids)

    gt_source = None
    if args.gt:
        try:
            gt_source = open_source(args.gt, data_root=args.data_root)
            gt_ids = set(gt_source.ids())
        except Exception as error:  # noqa: BLE001
            print(f"error: cannot open GT '{args.gt}': {error}", file=sys.stderr)
            return 2

    try:
        photos = PhotoFinder(attrs, args.data_root, args.images)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.report:
        if args.worst is not None or args.gt or args.html:
            print("error: --report needs no GT and makes its own page: drop --worst, --gt and --html",
                  file=sys.stderr)
            return 2
        from pseudolabel.viewer.quality_report import write_report

        page, numbers = write_report(shards, args.out, ids[: args.limit], photos.read, args.tile_height)
        print(f"wrote {page} and {numbers}", file=sys.stderr)
        return 0

    def read_gt(image_id):
        if gt_source is None or image_id not in gt_ids:
            return None
        try:
            return np.asarray(gt_source.read(image_id))
        except Exception as error:  # noqa: BLE001
            print(f"warning: GT of {image_id}: {error}", file=sys.stderr)
            return None

    def score(labels, gt):
        if gt is None or gt.shape != labels.shape:
            return None
        return image_iou(gt, labels, class_set.num_classes)

    scores: dict[str, float | None] = {}
    if args.worst is not None:
        candidates = [i for i in ids if i in gt_ids]
        if not candidates:
            print(f"error: no shard image has GT in '{args.gt}'", file=sys.stderr)
            return 2
        for image_id in tqdm(candidates, desc="scoring", file=sys.stderr):
            value = score(shards.read_label(image_id, args.kind), read_gt(image_id))
            if value is not None and not math.isnan(value):
                scores[image_id] = value
        ids = sorted(scores, key=lambda i: (scores[i], i))[: args.worst]
    if args.limit is not None:
        ids = ids[: args.limit]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    missing_photos = 0
    for image_id in tqdm(ids, desc="panels", file=sys.stderr):
        record = shards[image_id]
        photo = photos.read(image_id)
        missing_photos += photo is None
        gt = read_gt(image_id)
        panel = render_panel(record, class_set, photo=photo, gt=gt, random_weights=random_weights,
                             tile_height=args.tile_height)
        name = panel_name(image_id)
        save_panel(panel, out / name)
        value = scores.get(image_id) if image_id in scores else score(getattr(record, args.kind), gt)
        coverage = {class_set.classes[c]: share for c, share in class_coverage(record.refined, record.class_ids).items()}
        notes = ["photo not found"] if photo is None else []
        if gt_source is not None and gt is None:
            notes.append("no GT")
        entries.append(ReportEntry(image_id, name, coverage, value, notes))
    print(f"wrote {len(entries)} panel(s) to {out}" + (f" ({missing_photos} without photo)" if missing_photos else ""),
          file=sys.stderr)
    if args.html:
        title = f"Pseudo labels: {attrs.get('dataset')}:{attrs.get('split')} ({Path(args.shards).name})"
        description = f"shards: {Path(args.shards).resolve()}"
        if gt_source is not None:
            description += f"; GT: {args.gt}; score = per-image IoU of the {args.kind} label"
        path = write_html(entries, out / "index.html", title=title, random_weights=random_weights,
                          description=description)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
