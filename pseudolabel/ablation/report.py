"""The sweep's report (``report.md``, ``report.csv``, ``report.json``, ``plots/<table>.png``), built from what the
sweep folder holds, so a rerun of a finished sweep only rebuilds it; its numbers: docs/ablations.md#reading-the-report.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections import Counter
from contextlib import closing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pseudolabel.ablation.sweep import gen_pseudo_flags
from pseudolabel.cli_options import options_argv
from pseudolabel.config import PseudoLabelConfig, RunConfig
from pseudolabel.datasets import WeakDataset
from pseudolabel.evaluation.pipeline import (CountedSystems, EvaluationConfig, EvaluationError, count_systems,
                                             score_counts)
from pseudolabel.evaluation.sources import LabelSourceError, open_source
from pseudolabel.pipeline import STAGES
from pseudolabel.storage.atomic import atomic_write
from pseudolabel.storage.format import MANIFEST, REFINED
from pseudolabel.storage.shards import open_shards

REPORT_FILES = ("report.md", "report.csv", "report.json")
METRICS = ("mIoU", "mBIoU")
TIMING_GLOB = "timing-r*.json"


def default_gt(gt: str | None, run: RunConfig, dataset: WeakDataset) -> tuple[str | None, str]:
    """The ground truth to score against (``gt``: ``--gt``, else the split's own masks when every image of the run
    has one) and a note saying which, or why there is none."""
    if gt:
        return (None, "no evaluation (--gt none)") if gt.lower() == "none" else (gt, f"--gt {gt}")
    if run.dataset in ("custom", "demo"):
        return None, "no ground truth given (--gt)"
    spec = f"{run.dataset}:{dataset.split}"
    missing = [] if run.dataset == "coco" else [   # COCO renders its masks from the instance annotations
        s for s in dataset.samples[: run.limit] if s.gt_path is None or not Path(s.gt_path).is_file()]
    if missing:
        return None, (f"no ground truth: {len(missing)} image(s) of {spec} have no mask (e.g. {missing[0].image_id}); "
                      "pass --gt")
    return spec, f"the split's own masks ({spec})"


def row_times(out: Path) -> tuple[dict[str, dict], dict]:
    """Per row ``{"images", "ms_per_image", "ms_by_stage"}`` and the sweep's totals, summed over ranks and runs."""
    images, seconds = Counter(), {}
    sweep = {"runs": 0, "images": 0, "wall_seconds": 0.0}
    for path in sorted(out.glob(TIMING_GLOB)):
        ledger = json.loads(path.read_text())
        for slug, entry in ledger["rows"].items():
            images[slug] += entry["images"]
            seconds.setdefault(slug, Counter()).update(entry["seconds"])
        for key in sweep:
            value = ledger["sweep"].get(key, 0)
            sweep[key] = max(sweep[key], value) if key == "runs" else sweep[key] + value
    by_stage = {slug: {s: round(1000 * spent[s] / max(images[slug], 1), 1) for s in STAGES if s in spent}
                for slug, spent in seconds.items()}
    return {slug: {"images_timed": images[slug], "ms_per_image": round(sum(ms.values()), 1), "ms_by_stage": ms}
            for slug, ms in by_stage.items()}, sweep


def agreement(row_dir: Path, base_dir: Path) -> float | None:
    """Share of pixels (in percent, over the images both have) where a row's labels equal its baseline's."""
    equal = total = 0
    with closing(open_shards(row_dir)) as row, closing(open_shards(base_dir)) as base:
        for image_id in row:
            if image_id in base:
                a, b = row.read_label(image_id), base.read_label(image_id)
                equal += int(np.count_nonzero(a == b))
                total += a.size
    return 100.0 * equal / total if total else None


def swept_field(configs: list[dict]) -> str | None:
    """The one numeric field (``cam.num_skips``, ``refine.delta``, ...) in which a table's rows differ, if any."""
    differing = {(part, key) for c in configs for part in ("cam", "refine") for key in c[part]
                 if c[part][key] != configs[0][part][key]}
    if len(differing) != 1:
        return None
    part, key = differing.pop()
    values = [c[part][key] for c in configs]
    return f"{part}.{key}" if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) else None


def _interval(ci) -> list[float] | None:
    return [round(v, 2) for v in ci] if ci and all(math.isfinite(v) for v in ci) else None


def row_numbers(counted: dict[str, CountedSystems | str], slug: str, baseline: str, config: EvaluationConfig) -> dict:
    """The report's numbers of a row from every row's counts (or the error that prevented them):
    ``tools/evaluate.py``'s result against its baseline (the baseline alone for itself), or the error."""
    row, base = counted[slug], counted[baseline]
    if isinstance(row, str) or (slug != baseline and isinstance(base, str)):
        return {"evaluation_error": row if isinstance(row, str) else f"baseline: {base}"}
    result = score_counts(row if slug == baseline else row.followed_by(base, config), config, progress=False)
    system = result.systems[0]
    numbers = {"mIoU": round(system.miou, 2), "mIoU_ci": _interval(system.ci.get("mIoU")),
               "mBIoU": round(system.mbiou, 2), "mBIoU_ci": _interval(system.ci.get("mBIoU")),
               "images_scored": result.num_images}
    for metric, test in (result.paired or {}).items():
        numbers.update({f"diff_{metric}": round(test.diff, 2), f"diff_{metric}_ci": _interval(test.ci),
                        f"p_{metric}": test.p_value})
    return numbers


def write_report(out: Path, config: EvaluationConfig, gt: tuple[str | None, str]) -> dict:
    """Evaluate every row with ``config`` against ``gt`` (:func:`default_gt`; none: each row's agreement with its
    baseline), assemble the tables and write the report files."""
    sweep = json.loads((out / "sweep.json").read_text())
    about, configs = sweep["about"], {slug: PseudoLabelConfig.from_dict(c) for slug, c in sweep["rows"].items()}
    times, wall = row_times(out)
    gt_spec, gt_note = gt
    rows_dir, data_root = out / "rows", about.get("data_root")
    if gt_spec and about.get("limit"):      # --limit labels a part of the split: score that part
        config = dataclasses.replace(config, allow_missing=True)
    eval_flags = options_argv(config, EvaluationConfig())
    counted: dict[str, CountedSystems | str] = {}      # every row against the ground truth, each counted once
    if gt_spec:
        try:
            gt_source = open_source(gt_spec, data_root=data_root)
        except (LabelSourceError, FileNotFoundError, ValueError) as error:
            raise EvaluationError(f"--gt {gt_spec}: {error}") from None
        evaluate = ["tools/evaluate.py", "--gt", gt_spec] + (["--data-root", data_root] if data_root else [])
        for slug in tqdm(sweep["rows"], desc="scoring rows", unit="row"):
            try:
                counted[slug] = count_systems(gt_source, [(rows_dir / slug, REFINED)], config, progress=False)
            except (EvaluationError, LabelSourceError, FileNotFoundError) as error:
                counted[slug] = str(error)
    random_weights = False
    tables = []
    for table in sweep["tables"]:
        base = table["baseline"]
        rows = []
        for item in table["rows"]:
            slug = item["row"]
            row_dir = rows_dir / slug
            manifest = json.loads((row_dir / MANIFEST).read_text()) if (row_dir / MANIFEST).is_file() else {}
            with closing(open_shards(row_dir)) as shards:
                random_weights |= bool(shards.attrs.get("random_weights"))
            entry = {"label": item["label"], "row": slug, "baseline": slug == base,
                     "options": " ".join(gen_pseudo_flags(configs[slug], configs[base])),
                     "gen_pseudo": about["gen_pseudo"][slug], "images": manifest.get("num_images"),
                     "failures": len(manifest.get("failures", [])), **times.get(slug, {})}
            if gt_spec:
                entry.update(row_numbers(counted, slug, base, config))
                pred2 = [] if slug == base else ["--pred2", str(rows_dir / base)]
                entry["evaluate"] = " ".join(evaluate + ["--pred", str(row_dir)] + pred2 + eval_flags)
            elif slug != base:
                entry["agreement"] = agreement(row_dir, rows_dir / base)
            rows.append(entry)
        tables.append({"name": table["name"], "title": table["title"], "note": table.get("note", ""),
                       "baseline": base, "swept": swept_field([sweep["rows"][r["row"]] for r in rows]), "rows": rows})
    report = {"sweep": about["name"], "description": about["description"], "dataset": about["dataset"],
              "split": about["split"], "ground_truth": gt_note, "evaluation": dataclasses.asdict(config)
              if gt_spec else None, "random_weights": random_weights, "wall": wall, "tables": tables}
    plots = write_plots(out, report, sweep["rows"])
    for table in tables:
        table["plot"] = plots.get(table["name"])
    for name, text in zip(REPORT_FILES, (report_markdown(report), report_csv(report), json.dumps(report, indent=1))):
        atomic_write(out / name, lambda handle: handle.write(text.encode()))
    return report


def _number(value, digits: int = 1, ci=None, sign: str = "") -> str:
    text = "–" if value is None else f"{value:{sign}.{digits}f}"
    return text + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def _p(value) -> str:
    return "–" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def report_markdown(report: dict) -> str:
    """One markdown table per sweep table, rows in sweep order."""
    lines = [f"# Ablation report: {report['sweep']}", ""]
    if report["description"]:
        lines += [report["description"], ""]
    if report["random_weights"]:
        lines += ["**RANDOM WEIGHTS**: these labels come from seeded random weights; the numbers only show that the "
                  "pipeline runs and are NOT meaningful.", ""]
    wall = report["wall"]
    lines += [f"Dataset {report['dataset']}:{report['split']}; ground truth: {report['ground_truth']}.", ""]
    if wall["images"]:
        distinct = {r["row"]: r.get("ms_per_image", 0.0) for t in report["tables"] for r in t["rows"]}
        per_image, standalone = 1000 * wall["wall_seconds"] / wall["images"], sum(distinct.values())
        lines += [f"Sweep wall time {wall['wall_seconds']:.1f} s over {wall['images']} images in {wall['runs']} "
                  f"run(s): {per_image:.0f} ms/image for {len(distinct)} distinct rows, whose standalone runs would "
                  f"take {standalone:.0f} ms/image together ({standalone / per_image:.1f}x).", ""]
    cfg = report["evaluation"]
    evaluated = cfg is not None
    legend = (f"mIoU and mBIoU in %, {100 * cfg['confidence']:.0f}% bootstrap intervals over images (B = "
              f"{cfg['bootstrap']}), Δ = row − baseline with the paired bootstrap p-value (two-sided); the same "
              "numbers as the `tools/evaluate.py` command in report.json." if evaluated
              else "Agreement: pixels whose label equals the baseline row's, in %.")
    lines += [legend + " ms/image: stage one as a standalone run would spend it.", ""]
    ci = f"[{100 * cfg['confidence']:.0f}% CI]" if evaluated else ""
    numbers = ([f"mIoU {ci}", f"mBIoU {ci}", f"Δ mIoU {ci}", "p", f"Δ mBIoU {ci}", "p"] if evaluated
               else ["images", "agreement with baseline (%)"])
    header = ["row", "options", *numbers, "ms/image"]
    for table in report["tables"]:
        lines += [f"## {table['title']}", ""] + ([table["note"], ""] if table.get("note") else [])
        lines += [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
        for row in table["rows"]:
            if not evaluated:
                numbers = [str(row["images"]), "baseline" if row["baseline"] else _number(row.get("agreement"), 2)]
            elif "evaluation_error" in row:
                numbers = [f"error: {row['evaluation_error']}" + " |" * 5]      # the other number cells empty
            else:
                numbers = [_number(row[m], ci=row[f"{m}_ci"]) for m in METRICS]
                numbers += ["baseline", ""] * 2 if row["baseline"] else [
                    cell for m in METRICS for cell in (_number(row.get(f"diff_{m}"), ci=row.get(f"diff_{m}_ci"),
                                                               sign="+"), _p(row.get(f"p_{m}")))]
            cells = [f"**{row['label']}** (baseline)" if row["baseline"] else row["label"],
                     f"`{row['options']}`" if row["options"] else "", *numbers, _number(row.get("ms_per_image"), 0)]
            lines.append(f"| {' | '.join(cells)} |")
        if table.get("plot"):
            lines += ["", f"![{table['title']}]({table['plot']})"]
        lines.append("")
    return "\n".join(lines)


CSV_COLUMNS = ("table", "label", "row", "baseline", "options", "images", "mIoU", "mIoU_low", "mIoU_high", "mBIoU",
               "mBIoU_low", "mBIoU_high", "diff_mIoU", "diff_mIoU_low", "diff_mIoU_high", "p_mIoU", "diff_mBIoU",
               "diff_mBIoU_low", "diff_mBIoU_high", "p_mBIoU", "agreement", "ms_per_image",
               *(f"ms_{s}" for s in STAGES))


def report_csv(report: dict) -> str:
    """One line per table row (a row in several tables appears in each)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for table in report["tables"]:
        for row in table["rows"]:
            intervals = {f"{key}_{end}": value for key in (*METRICS, *(f"diff_{m}" for m in METRICS))
                         for end, value in zip(("low", "high"), row.get(f"{key}_ci") or ())}
            writer.writerow({**row, "table": table["name"], **intervals,
                             **{f"ms_{s}": v for s, v in row.get("ms_by_stage", {}).items()}})
    return buffer.getvalue()


def write_plots(out: Path, report: dict, row_configs: dict[str, dict]) -> dict[str, str]:
    """``plots/<table>.png`` for each table that sweeps one number: mIoU with its interval (or the agreement without
    ground truth) and ms/image against it (``row_configs``: sweep.json's rows). Returns the relative paths by table."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    written, evaluated = {}, report["evaluation"] is not None
    for table in report["tables"]:
        if not table["swept"]:
            continue
        part, key = table["swept"].split(".")
        points = sorted((row_configs[r["row"]][part][key], r) for r in table["rows"])
        x = [p for p, _ in points]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
        if evaluated:
            y = [r.get("mIoU", np.nan) for _, r in points]
            bounds = np.array([r.get("mIoU_ci") or [value, value] for value, (_, r) in zip(y, points)])
            top.errorbar(x, y, yerr=[y - bounds[:, 0], bounds[:, 1] - y], marker="o", capsize=4)
            top.set_ylabel(f"mIoU (%) with {100 * report['evaluation']['confidence']:.0f}% CI")
        else:
            y = [100.0 if r["baseline"] else (r.get("agreement") or np.nan) for _, r in points]
            top.plot(x, y, marker="o")
            top.set_ylabel("agreement with baseline (%)")
        base_x = next(p for p, r in points if r["baseline"])      # a table's rows hold its baseline once
        for ax in (top, bottom):
            ax.axvline(base_x, color="grey", linestyle=":", linewidth=1)
            ax.grid(alpha=0.3)
        bottom.plot(x, [r.get("ms_per_image", np.nan) for _, r in points], marker="s", color="tab:orange")
        bottom.set_ylabel("stage one, ms/image")
        bottom.set_xlabel(f"{key} (dotted: baseline)")
        fig.suptitle(table["title"] + ("  [RANDOM WEIGHTS]" if report["random_weights"] else ""), fontsize=10)
        fig.tight_layout()
        written[table["name"]] = f"plots/{table['name']}.png"
        (out / "plots").mkdir(exist_ok=True)
        fig.savefig(out / written[table["name"]], dpi=100)
        plt.close(fig)
    return written
