"""Render inspection panels (photo, localization maps, Y0, refined label, GT + IoU) of stage-one shards as PNGs,
optionally with a static HTML contact sheet; or, with --report, a label-quality report that needs no ground truth.
See docs/viewing.md.

The viewer's command line, run as ``tools/view_labels.py`` (``cep-view`` when installed):

    tools/view_labels.py outputs/voc_train_aug --out viz --limit 20 --html
    tools/view_labels.py outputs/voc_train_aug --out viz --worst 30 --gt voc:train --html
    tools/view_labels.py outputs/voc_train_aug --out viz --ids 2007_000032 2007_000039 --images /data/photos
    tools/view_labels.py outputs/voc_train_aug --report --out quality     # label-quality report, no GT needed
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pseudolabel.cli_options import positive_int
from pseudolabel.exits import OutputError, tool_main
from pseudolabel.storage.format import LABEL_KINDS, REFINED
from pseudolabel.storage.shards import ShardError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", help="stage-one output directory (shard-*.h5)")
    parser.add_argument("--out", required=True, help="folder for the <id>.png panels (and index.html), or for the --report files")
    parser.add_argument("--ids", nargs="+", default=None, help="render these image ids only")
    parser.add_argument("--limit", type=positive_int, default=None, help="render at most N images (in id order)")
    parser.add_argument("--worst", type=positive_int, default=None, metavar="N",
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
    parser.add_argument("--tile-height", type=positive_int, default=160, help="height of each tile in pixels")
    parser.add_argument("--report", action="store_true",
                        help="instead of panels, write <out>/report.html, the label-quality report without GT "
                             "(per-class coverage, SAM acceptance, lost classes, pixels SAM changed, the most "
                             "affected images; one self-contained page), and its numbers as <out>/report.json")
    return parser


@tool_main(ShardError, OutputError)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pseudolabel.evaluation import open_source
    from pseudolabel.storage.shards import open_shards
    from pseudolabel.viewer.html_report import write_html
    from pseudolabel.viewer.panels import GroundTruth, worst_images, write_panels
    from pseudolabel.viewer.photos import PhotoFinder

    if args.worst is not None and not args.gt:
        print("error: --worst needs --gt (a folder of GT PNGs or a dataset spec like voc:train)", file=sys.stderr)
        return 2
    try:
        shards = open_shards(args.shards)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    attrs = shards.attrs
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

    gt = None
    if args.gt:
        try:
            gt = GroundTruth(open_source(args.gt, data_root=args.data_root))
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

    scores: dict[str, float] = {}
    if args.worst is not None:
        if gt.ids.isdisjoint(ids):
            print(f"error: no shard image has GT in '{args.gt}'", file=sys.stderr)
            return 2
        ids, scores = worst_images(shards, ids, gt, args.kind, args.worst)
    if args.limit is not None:
        ids = ids[: args.limit]

    out = Path(args.out)
    entries = write_panels(shards, ids, out, photos, gt, args.kind, scores, args.tile_height)
    missing_photos = sum("photo not found" in entry.notes for entry in entries)
    print(f"wrote {len(entries)} panel(s) to {out}" + (f" ({missing_photos} without photo)" if missing_photos else ""),
          file=sys.stderr)
    if args.html:
        title = f"Pseudo labels: {attrs.get('dataset')}:{attrs.get('split')} ({Path(args.shards).name})"
        description = f"shards: {Path(args.shards).resolve()}"
        if gt is not None:
            description += f"; GT: {args.gt}; score = per-image IoU of the {args.kind} label"
        path = write_html(entries, out / "index.html", title=title, random_weights=random_weights,
                          description=description)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
