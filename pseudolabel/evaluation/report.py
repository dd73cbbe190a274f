"""Presenting an ``EvaluationResult``: terminal table, JSON file and per-class bar chart."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pseudolabel.evaluation.pipeline import EvaluationResult


def _fmt(value: float) -> str:
    return "   -" if not np.isfinite(value) else f"{value:5.1f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if not ci else f"  [{ci[0]:.1f}, {ci[1]:.1f}]"


def format_table(result: EvaluationResult) -> str:
    """Readable table: per-class IoU/BIoU per system, means with CIs, split, images scored, flavour, problems."""
    cfg = result.config
    systems = result.systems
    name_width = max(10, *(len(n) for n in result.class_names))
    header = f"{'class':<{name_width}}" + "".join(f"  {'IoU':>5} {'BIoU':>5}" for _ in systems)
    lines = [f"split: {result.split or 'unknown'}   images scored: {result.num_images}   "
             f"classes: {len(result.class_names)}   "
             f"boundary: kernel {cfg.boundary_kernel}, border {cfg.boundary_border}"]
    lines += [f"system {k + 1}: {s.name}" for k, s in enumerate(systems)]
    if result.random_weights_sources:
        lines.append(random_weights_note(result))
    lines += [header, "-" * len(header)]
    for c, name in enumerate(result.class_names):
        lines.append(f"{name:<{name_width}}" + "".join(
            f"  {_fmt(100 * s.class_iou[c])} {_fmt(100 * s.class_biou[c])}" for s in systems))
    lines.append("-" * len(header))
    mean_rule = "classes with union > 0 (mmseg)" if cfg.mean_over == "mmseg" else "classes present in GT (CLIP-ES)"
    ci_note = f", {100 * cfg.confidence:.0f}% bootstrap CI over images, B={cfg.bootstrap}" if cfg.bootstrap else ""
    lines.append(f"means over {mean_rule}{ci_note}:")
    for k, s in enumerate(systems):
        lines.append(f"  system {k + 1}: mIoU (strict, ignore predicted = miss) {_fmt(s.miou)}{_ci(s.ci.get('mIoU'))}"
                     f"   mBIoU {_fmt(s.mbiou)}{_ci(s.ci.get('mBIoU'))}")
        if s.coverage < 1.0:
            lines.append(f"            mIoU (labelled-only, pixels predicted ignore dropped) {_fmt(s.miou_labelled)}"
                         f"   coverage {100 * s.coverage:.1f}%")
    if result.paired:
        for metric, test in result.paired.items():
            lines.append(f"  paired {metric} (system 1 - system 2): {test.diff:+.2f}{_ci(test.ci)}  "
                         f"p = {test.p_value:.4f} (two-sided), {test.p_value_a_better:.4f} (one-sided, 1 better)")
    for key, ids in result.missing.items():
        if ids:
            lines.append(f"WARNING: {len(ids)} GT images have no {key} prediction and were not scored")
    for reason, ids in result.skipped.items():
        if ids:
            lines.append(f"WARNING: {len(ids)} images skipped ({reason.replace('_', ' ')}), e.g. {ids[0]}")
    for key, pixels in result.out_of_range_pixels.items():
        if pixels:
            lines.append(f"WARNING: {pixels} pixels of {key} have class values >= {len(result.class_names)}")
    return "\n".join(lines)


def random_weights_note(result: EvaluationResult) -> str:
    """One loud line naming the sources made with random model weights (empty when none was)."""
    names = {"gt": "the GT"} | {f"pred{k + 1}": f"system {k + 1}" for k in range(len(result.systems))}
    made = [names[role] for role in result.random_weights_sources]
    if not made:
        return ""
    return (f"RANDOM WEIGHTS: {' and '.join(made)} {'was' if len(made) == 1 else 'were'} made with random model "
            "weights; these scores show that the pipeline runs, not what the method does")


def write_json(result: EvaluationResult, path: str | Path) -> None:
    """Write ``result.to_json()`` (schema in docs/evaluation.md)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result.to_json(), indent=2))


def plot_per_class(result: EvaluationResult, path: str | Path) -> None:
    """Per-class IoU (and BIoU) bar chart, systems side by side, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    names = result.class_names
    x = np.arange(len(names))
    width = 0.8 / len(result.systems)
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.35 * len(names)), 7), sharex=True)
    for ax, metric in zip(axes, ("IoU", "BIoU")):
        for k, s in enumerate(result.systems):
            values = 100 * (s.class_iou if metric == "IoU" else s.class_biou)
            mean = s.miou if metric == "IoU" else s.mbiou
            ax.bar(x + (k - (len(result.systems) - 1) / 2) * width, np.nan_to_num(values), width,
                   label=f"{k + 1}: {s.name} (m{metric} {mean:.1f})")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_ylim(0, 118)  # headroom for the legend above the bars
        ax.legend(fontsize=8, loc="upper center", ncol=len(result.systems))
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(x, names, rotation=90, fontsize=8)
    fig.suptitle(f"{result.split or 'evaluation'}: {result.num_images} images")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
