"""Test a trained segmenter (``tools/test_seg.sh``; ``python -m segtrain.test``): single scale, or multi-scale +
flip through mmseg's TTA (mean of softmax probabilities), optional DenseCRF; palette PNGs scored with
``pseudolabel.evaluation``. The checkpoint loads safely (weights and training state only) and must fit the model."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import segtrain  # noqa: F401  (shims + registrations before mmseg builds anything)
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from pseudolabel.checkpoints import CheckpointError
from pseudolabel.cli_options import non_negative_int
from pseudolabel.console import hide_foreign_log_lines
from pseudolabel.evaluation import EvaluationConfig, EvaluationError, LabelSourceError, evaluate
from pseudolabel.evaluation.report import format_table, write_json
from pseudolabel.exits import EXIT_ERROR, OutputError, prepare_output_dir, tool_main
from pseudolabel.storage.shards import ShardError
from segtrain.checkpoint_fit import CheckpointMismatchError, check_checkpoint_fits
from segtrain.config import read_config
from segtrain.crf import CRFConfig
from segtrain.tta import tta_pipeline, wrap_tta


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Predict with a trained segmenter, write palette PNGs, score them.")
    parser.add_argument("checkpoint", help="a .pth written by train_seg (e.g. work_dirs/<name>/iter_20000.pth)")
    parser.add_argument("--config", help="config (default: the single *.py next to the checkpoint)")
    parser.add_argument("--tta", action="store_true", help="multi-scale + horizontal flip (mmseg SegTTAModel)")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.75],
                        help="TTA scale ratios of the test resize (default: WeCLIP's 1.0 0.75)")
    parser.add_argument("--no-flip", action="store_true", help="TTA without the flipped views")
    parser.add_argument("--crf", action="store_true", help="DenseCRF on the softmax (WeCLIP: 10 it., 3/3, 64/5/4)")
    parser.add_argument("--out", help="output folder (default: <checkpoint dir>/test_<settings>)")
    parser.add_argument("--gt", help="GT to score against: dataset spec (voc:val) or PNG folder (default: eval_gt "
                                     "of the config; none: no scoring)")
    parser.add_argument("--data-root", help="dataset root for --gt (default: eval_data_root of the config)")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples for the CI (0: off)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, help="override config entries")
    return parser


def find_config(checkpoint: Path) -> Path:
    """The config mmengine saved next to the checkpoint."""
    configs = sorted(checkpoint.parent.glob("*.py"))
    if len(configs) != 1:
        raise FileNotFoundError(f"found {len(configs)} configs next to '{checkpoint}'; pass --config")
    return configs[0]


def settings_name(args: argparse.Namespace) -> str:
    name = "tta" + "_".join(f"{s:g}" for s in args.scales) + ("" if args.no_flip else "_flip") if args.tta else "ss"
    return name + ("_crf" if args.crf else "")


def test_config(args: argparse.Namespace, out_dir: Path) -> Config:
    """The config with TTA, the PNG writer as the only evaluator and the checkpoint to load."""
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint '{checkpoint}' does not exist")
    cfg = read_config(args.config or find_config(checkpoint))
    cfg.merge_from_dict(args.cfg_options)
    if not cfg.get("test_dataloader"):
        raise KeyError(f"config has no test_dataloader; add one (see segtrain/configs/)")
    cfg.work_dir = str(out_dir)
    cfg.load_from = str(checkpoint)
    cfg.resume = False
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = tta_pipeline(tuple(cfg.test_scale), tuple(args.scales),
                                                             flip=not args.no_flip)
        cfg.model = wrap_tta(cfg.model)
    cfg.test_evaluator = dict(type="PalettePredictionWriter", out_dir=str(out_dir / "pred"), crf=args.crf)
    return cfg


def write_settings(args: argparse.Namespace, cfg: Config, out_dir: Path) -> None:
    """``<out>/test_settings.json``: what produced the predictions (every reported number states it)."""
    settings = {"checkpoint": str(args.checkpoint), "config": cfg.filename, "test_scale": list(cfg.test_scale),
                "tta": args.tta, "scales": args.scales if args.tta else [1.0], "flip": args.tta and not args.no_flip,
                "tta_merge": "mean of softmax probabilities (mmseg SegTTAModel)" if args.tta else None,
                "crf": asdict(CRFConfig()) if args.crf else None}
    (out_dir / "test_settings.json").write_text(json.dumps(settings, indent=2))


@tool_main(FileNotFoundError, KeyError, CheckpointError, CheckpointMismatchError, ShardError, OutputError)
def main(argv: list[str] | None = None) -> int:
    """``tools/test_seg.sh``: exit status 0, 2 (an error, one line) or 130 (interrupted)."""
    args = build_parser().parse_args(argv)
    out_dir = prepare_output_dir(args.out or Path(args.checkpoint).parent / f"test_{settings_name(args)}")
    cfg = test_config(args, out_dir)
    runner = Runner.from_cfg(cfg)
    hide_foreign_log_lines(runner.logger)
    check_checkpoint_fits(runner.model, cfg.load_from, "the")
    runner.test()
    write_settings(args, cfg, out_dir)
    print(f"predictions: {out_dir / 'pred'} ({settings_name(args)}; TTA averages softmax probabilities)")
    gt = args.gt or cfg.get("eval_gt")
    if not gt:
        print("no GT (--gt / eval_gt): predictions written, not scored")
        return 0
    try:
        segmentor = cfg.model.get("module", cfg.model)   # unwrap the TTA model
        config = EvaluationConfig(num_classes=segmentor["decode_head"]["num_classes"], bootstrap=args.bootstrap, workers=1)
        result = evaluate(gt, str(out_dir / "pred"), config=config,
                          data_root=args.data_root or cfg.get("eval_data_root"), progress=False)
    except (EvaluationError, LabelSourceError, FileNotFoundError) as error:
        print(f"error: scoring failed: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(format_table(result))
    write_json(result, out_dir / "evaluation.json")
    print(f"scores: {out_dir / 'evaluation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
