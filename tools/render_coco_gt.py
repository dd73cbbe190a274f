#!/usr/bin/env python3
"""Render MS COCO 2014 GT masks as VOC-style palette PNGs (SegmentationClass/<split>2014/<image>.png, classes 0..80,
crowd regions 255) plus the list SegmentationClass/<split>2014.txt, which segtrain's COCO config validates on.
Resumable: PNGs already there are kept. tools/prepare_data.sh coco runs it for val."""
if __name__ == "__main__":
    import _venv  # noqa: F401  (re-runs this tool inside the project's virtual environment)
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pseudolabel.datasets import build_dataset  # noqa: E402
from pseudolabel.exits import tool_main  # noqa: E402


@tool_main(FileNotFoundError, ValueError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default=None, help="COCO root (default: data/coco or $CEP_DATA_ROOT/coco)")
    parser.add_argument("--split", default="val", choices=("val", "train"))
    args = parser.parse_args(argv)
    dataset = build_dataset("coco", args.data_root, args.split)
    written, listing = dataset.write_gt_pngs()
    print(f"coco:{args.split}: {written} GT PNG(s) written, {len(dataset) - written} already there; "
          f"{len(dataset)} images listed in {listing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
