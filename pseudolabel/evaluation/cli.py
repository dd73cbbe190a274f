"""Command line of the evaluation tool (``tools/evaluate.py``); options come from ``EvaluationConfig``."""
from __future__ import annotations

import argparse
import sys

from pseudolabel.cli_options import add_dataclass_options, config_from_options
from pseudolabel.evaluation.pipeline import EvaluationConfig, EvaluationError, evaluate
from pseudolabel.evaluation.report import format_table, plot_per_class, random_weights_note, write_json
from pseudolabel.evaluation.sources import LabelSourceError
from pseudolabel.exits import OutputError, guard_write, prepare_output_file, tool_main
from pseudolabel.storage.format import LABEL_KINDS, REFINED
from pseudolabel.storage.shards import ShardError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score label maps against GT: mIoU, mBIoU, bootstrap CIs and a paired test of two systems. "
                    "GT/PRED: a folder of <id>.png index PNGs, a shard directory (*.h5) or a dataset spec "
                    "(voc:val, voc:train, coco:val).")
    parser.add_argument("--gt", required=True, help="GT label source")
    parser.add_argument("--pred", required=True, help="predictions (system 1)")
    parser.add_argument("--pred2", help="second system, compared with system 1 on the same images")
    parser.add_argument("--pred-kind", default=REFINED, choices=LABEL_KINDS,
                        help="which labels of a shard --pred reads")
    parser.add_argument("--pred2-kind", default=REFINED, choices=LABEL_KINDS, help="the same for --pred2")
    parser.add_argument("--data-root", help="dataset root for dataset specs (default: the dataset's own default)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--plot", help="write a per-class bar chart PNG to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataclass_options(parser, EvaluationConfig)
    return parser


@tool_main(EvaluationError, LabelSourceError, ShardError, FileNotFoundError, OutputError)
def main(argv: list[str] | None = None) -> int:
    """``tools/evaluate.py``: exit status 0, 2 (an error, one line: bad input, damaged shards, mismatched class
    lists) or 130 (interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_options(args, EvaluationConfig, parser=parser)
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            prepare_output_file(path, option)
    result = evaluate(args.gt, args.pred, args.pred2, config, args.pred_kind, args.pred2_kind,
                      args.data_root, progress=not args.quiet)
    print(format_table(result))
    if args.json:
        guard_write(lambda: write_json(result, args.json), args.json)
        print(f"JSON written to {args.json}")
    if args.plot:
        guard_write(lambda: plot_per_class(result, args.plot), args.plot)
        print(f"chart written to {args.plot}")
    if note := random_weights_note(result):
        print(f"NOTE: {note} (\"random_weights\": true in --json)", file=sys.stderr)
    return 0
