"""``tools/ablate.sh`` (``cep-ablate``): a sweep of stage-one settings in one run, each row an ordinary stage-one
output, then one report; what ``--out`` holds, resume, refusals and ranks: docs/ablations.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pseudolabel.ablation.report import REPORT_FILES, TIMING_GLOB, default_gt, write_report
from pseudolabel.ablation.sweep import Sweep, SweepBuilder, gen_pseudo_flags, shipped_sweeps, sweep_file
from pseudolabel.classes import DATA_DIR
from pseudolabel.cli_options import add_dataclass_options, config_from_options, program_name
from pseudolabel.config import MethodOptions, RunConfig
from pseudolabel.console import console_logging
from pseudolabel.datasets import Sample, WeakDataset
from pseudolabel.evaluation.pipeline import EvaluationConfig
from pseudolabel.exits import OutputError, guard_write, prepare_output_dir, tool_main
from pseudolabel.generate import (DATASET_CHOICES, METHOD_CONFIGS, RANDOM_WEIGHTS_NOTE, ReleasesLocks, StageOneRun,
                                  add_method_options, add_run_options, barrier, device_and_precision, distributed,
                                  label_runs, labellers, load_settings, lock_output, logged_dataset, split_of)
from pseudolabel.labellers.sam3_text import SAM3TextLabeller
from pseudolabel.pipeline import STAGES, Labeller
from pseudolabel.storage.atomic import atomic_write
from pseudolabel.storage.format import MANIFEST, SHARD_GLOB
from pseudolabel.storage.lock import OutputLock
from pseudolabel.storage.run_log import RunLog
from pseudolabel.storage.shards import shard_image_ids, shard_problem

LOG = logging.getLogger("pseudolabel.ablation")
SWEEP_FILE = "sweep.json"
ROWS = "rows"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("tools/ablate.sh"),
        description="The paper's ablations in one run: stage one under every setting of a sweep (each image decoded "
                    "once, the work settings share computed once), each setting's labels an ordinary stage-one output, "
                    "then mIoU/mBIoU with bootstrap CIs and paired tests against each table's baseline.\n"
                    "Examples:\n"
                    "  tools/ablate.sh voc --split train --sweep paper --out outputs/ablate   # Tables 5-11\n"
                    "  tools/ablate.sh voc --split train --sweep skips --sweep delta --out outputs/k_delta\n"
                    "  tools/ablate.sh voc --split train --row num_skips=0 --row num_skips=3 --out outputs/k\n"
                    "  tools/ablate.sh demo                           # the bundled photos, offline\n"
                    "  NPROC=4 tools/ablate.sh voc --split train --sweep paper --out outputs/ablate\n"
                    "Rerunning the same command resumes (and relabels the images of a damaged shard); a finished "
                    "sweep only rebuilds the report. One sweep per --out at a time: it is locked before any model "
                    "loads, and each row folder as gen_pseudo locks its own.\n"
                    "Sweep files, the report and what is shared: docs/ablations.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASET_CHOICES, help="what to label")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--sweep", action="append", default=[], metavar="NAME|FILE",
                       help=f"a shipped sweep ({', '.join(shipped_sweeps())}; docs/ablations.md#sweeps) or a sweep "
                            "file; repeatable (default for the demo: demo)")
    sweep.add_argument("--row", action="append", default=[], metavar="OPTIONS",
                       help="a row from the command line, e.g. --row num_skips=0 or --row '--num-skips 0 --no-refine'; "
                            "repeatable; these rows form one table whose baseline is the first")
    sweep.add_argument("--out", type=Path, help="output directory (default: outputs/ablate_<dataset>_<split>, "
                                                "outputs/ablate_demo for the demo)")
    sweep.add_argument("--overwrite", action="store_true",
                       help="start again: delete an earlier sweep's report, times and rows in --out (the rows of this "
                            "sweep are emptied as gen_pseudo's --overwrite empties a folder)")
    sweep.add_argument("--gt", help="ground truth, as tools/evaluate.py's --gt (default: the split's own masks, e.g. "
                                    "voc:train, when present; none for custom folders and the demo); 'none': no "
                                    "evaluation, the report gives each row's agreement with its baseline")
    run = parser.add_argument_group("run (as tools/gen_pseudo.sh, for every row)")
    add_run_options(run)
    add_dataclass_options(parser, EvaluationConfig, "evaluation (tools/evaluate.py's options, prefixed --eval-)",
                          prefix="eval_")
    add_method_options(parser)
    return parser


def sweep_dir(run: RunConfig) -> Path:
    """``--out``, or ``outputs/ablate_<dataset>_<split>`` (``outputs/ablate_demo``) like gen_pseudo's default."""
    name = "ablate_demo" if run.dataset == "demo" else f"ablate_{run.dataset}_{split_of(run)}"
    return run.out or DATA_DIR.parent / "outputs" / name


def build_sweep(names: list[str], rows: list[str], run: RunConfig, method: MethodOptions, precision: str) -> Sweep:
    """The sweep of the ``--sweep`` files ``names`` and the ``--row`` options ``rows`` over the sweep's own method
    options, every row checked (the demo defaults to ``demo``)."""
    builder = SweepBuilder(method, "voc" if run.dataset == "demo" else run.dataset, split_of(run), precision)
    names = names or ([] if rows or run.dataset != "demo" else ["demo"])
    descriptions = [builder.add_file(sweep_file(name)) for name in names]
    if rows:
        builder.add_table({"name": "rows", "title": "rows given with --row", "rows": rows}, "--row")
    return builder.build(" + ".join(names + (["--row"] if rows else [])), " ".join(d for d in descriptions if d))


def refuse_another_sweep(out: Path, sweep: Sweep) -> None:
    """Refuse a folder holding another sweep (its ``sweep.json`` differs), naming the differences."""
    path = out / SWEEP_FILE
    changed = sweep.differences(json.loads(path.read_text())) if path.is_file() else []
    if changed:
        raise ValueError(f"'{out}' holds another sweep ({'; '.join(changed[:5])}{'; ...' if len(changed) > 5 else ''})."
                         " Use another --out, or --overwrite to delete its rows and report and start again")


def prepare_folder(out: Path, sweep: Sweep, about: dict, overwrite: bool, rank: int, world: int) -> None:
    """Rank 0: record this sweep in ``out``; on ``overwrite``, first delete an earlier sweep's report, its times and
    the rows this sweep does not have (its own rows are emptied as gen_pseudo's ``--overwrite`` empties a folder)."""
    path = out / SWEEP_FILE
    if rank == 0:
        prepare_output_dir(out)
        if overwrite:
            ours = {row.slug for row in sweep.rows}
            for folder in sorted((out / ROWS).glob("*")):
                if folder.name not in ours:
                    with OutputLock(folder):   # not while a gen_pseudo run writes there
                        shutil.rmtree(folder)
            shutil.rmtree(out / "plots", ignore_errors=True)
            for file in [*REPORT_FILES, *out.glob(TIMING_GLOB), path]:
                (out / file).unlink(missing_ok=True)
        document = {**sweep.identity(), "about": about}
        guard_write(lambda: atomic_write(path, lambda h: h.write(json.dumps(document, indent=1).encode())), path)
    barrier(world)


@dataclass
class SweepRun(ReleasesLocks):
    """One rank's sweep: :meth:`setup` builds it (models, one stage-one run per row, the work list),
    :meth:`label_images` labels image by image, :meth:`finish` closes the rows and writes the report. Use it as a
    context manager: leaving it releases the rows' output locks."""

    sweep: Sweep
    out: Path
    rows: list[StageOneRun]             # one per sweep row, same order; their models come from one ModelPool
    labellers: list[tuple[list[StageOneRun], Labeller | SAM3TextLabeller]]   # the rows by what labels them
    working: list[bool]                 # whether a row has images left on any rank (closed at the end if so)
    images: list[Sample]                # this rank's images that some row still needs
    rank: int
    world: int
    random_weights: bool
    locks: contextlib.ExitStack         # the rows' output locks
    start: float = field(default_factory=time.perf_counter)
    image_passes: int = 0

    @classmethod
    def setup(cls, run: RunConfig, log: RunLog, sweep: Sweep, dataset: WeakDataset, device: str,
              precision: str) -> "SweepRun":
        """Models and settings of every row (checked before anything is written), the folder, one stage-one run per
        row as gen_pseudo would start it with the row's options (its folder locked, its store opened and recovered,
        or emptied on ``--overwrite``, and the images of this rank it still lacks, those an earlier run failed on
        included) and this rank's images that some row needs. The caller holds the lock of ``--out``."""
        split = split_of(run)
        rank, world, _ = distributed()
        configs = [copy.deepcopy(row.config) for row in sweep.rows]
        settings = load_settings(run, configs, dataset.class_set, device, log,
                                 ("The sweep runs", "its labels and numbers are"))
        out = sweep_dir(run)
        defaults = MethodOptions({}, {}, {}).config("voc" if run.dataset == "demo" else run.dataset, split, precision)
        about = {"name": sweep.name, "description": sweep.description, "dataset": run.dataset, "split": split,
                 "data_root": str(run.data_root) if run.data_root else None, "limit": run.limit,
                 "gen_pseudo": {row.slug: gen_pseudo_command(run, split, gen_pseudo_flags(row.config, defaults),
                                                             out / ROWS / row.slug) for row in sweep.rows}}
        prepare_folder(out, sweep, about, run.overwrite, rank, world)
        log.attach()
        with contextlib.ExitStack() as held:
            runs = []
            for row, config, setting in zip(sweep.rows, configs, settings):
                with lock_output(out / ROWS / row.slug, rank) as locks:
                    runs.append(held.enter_context(StageOneRun.with_models(
                        run, config, dataset, setting.cam, setting.refiner, out / ROWS / row.slug, device, log, locks)))
            samples = dataset.samples[: run.limit]   # None: all
            every = {s.image_id for s in samples}
            needed = {s.image_id for run in runs for s in run.todo}
            groups = labellers(runs, settings, device)
            for rows, labeller in groups:
                if isinstance(labeller, Labeller):
                    for line in labeller.sharing_plan([r.store.out.name for r in rows]):
                        LOG.info(line)
            images = [s for s in samples[rank::world] if s.image_id in needed]
            LOG.info("%s; sweep %s: %d rows in %d tables; rank %d/%d: %d images to label (%d row-images, %d already "
                     "done) -> %s; %s, %s, batches of %d", dataset.describe(), sweep.name, len(sweep.rows),
                     len(sweep.tables), rank, world, len(images), sum(len(r.todo) for r in runs),
                     sum(r.already_done for r in runs), out, device, precision, runs[0].batch_size)
            return cls(sweep=sweep, out=out, rows=runs, labellers=groups, images=images, rank=rank, world=world,
                       working=[not every <= run.store.finished() for run in runs],
                       random_weights=any(run.random_weights for run in runs), locks=held.pop_all())

    def label_images(self) -> None:
        """Every row's images through one :class:`~pseudolabel.pipeline.Labeller` of the rows' settings
        (:func:`~pseudolabel.generate.label_runs`, gen_pseudo's loop): each image decoded once, what rows share
        computed once; a SAM 3 row (``labeller=sam3-text``) through SAM 3's labeller, as gen_pseudo. An image that
        cannot be read, or fails for a row, becomes that row's failure and the sweep goes on."""
        for rows, labeller in self.labellers:
            label_runs(rows, labeller)
        self.image_passes += len(self.images)

    def finish(self, evaluation: EvaluationConfig, gt: tuple[str | None, str]) -> dict | None:
        """Close the rows that had work (pack, failures, summary, manifest), add this run's times to the ledger and
        (rank 0) write the report (:func:`~pseudolabel.ablation.report.write_report` of ``evaluation`` and ``gt``).
        Returns the report's JSON on rank 0."""
        for run, working in zip(self.rows, self.working):
            if working:
                LOG.info("closing row '%s'", run.store.out.name)
                run.close(sum(run.stage_seconds[s] for s in STAGES))
        self.record_times(time.perf_counter() - self.start)
        barrier(self.world)
        if self.rank != 0:
            return None
        report = write_report(self.out, evaluation, gt)
        print(f"\nsweep done: {len(self.sweep.rows)} rows in {len(self.sweep.tables)} tables -> {self.out}\n"
              f"report: {self.out / 'report.md'} (and report.csv, report.json, plots/)")
        if self.random_weights:
            print(RANDOM_WEIGHTS_NOTE, file=sys.stderr)
        return report

    def record_times(self, wall: float) -> None:
        """Add this run's per-row stage seconds and the sweep's wall time to ``timing-r<rank>.json``."""
        path = self.out / f"timing-r{self.rank:03d}.json"
        ledger = json.loads(path.read_text()) if path.is_file() else {"rows": {}, "sweep": {}}
        for run in self.rows:
            entry = ledger["rows"].setdefault(run.store.out.name, {"images": 0, "seconds": {}})
            entry["images"] += run.labelled
            for stage, seconds in run.stage_seconds.items():
                entry["seconds"][stage] = entry["seconds"].get(stage, 0.0) + seconds
        totals = ledger["sweep"]
        totals.update(runs=totals.get("runs", 0) + 1, images=totals.get("images", 0) + self.image_passes,
                      wall_seconds=totals.get("wall_seconds", 0.0) + wall)
        guard_write(lambda: atomic_write(path, lambda h: h.write(json.dumps(ledger, indent=1).encode())), path)


def gen_pseudo_command(run: RunConfig, split: str, flags: list[str], out: Path) -> str:
    """The standalone command that writes the same row."""
    words = ["tools/gen_pseudo.sh", run.dataset]
    if run.dataset != "demo":
        words += ["--split", split]
    for option in ("data_root", "images", "labels", "classes"):
        if getattr(run, option):
            words += [f"--{option.replace('_', '-')}", str(getattr(run, option))]
    if run.dataset == "voc" and run.label_source != "xml":
        words += ["--label-source", run.label_source]
    if run.limit:
        words += ["--limit", str(run.limit)]
    if run.shard_size != RunConfig.shard_size:
        words += ["--shard-size", str(run.shard_size)]  # shards of the same images, byte for byte
    return " ".join(words + flags + ["--out", str(out)])


def finished(out: Path, sweep: Sweep, samples: list) -> bool:
    """Whether ``out`` (holding this sweep: :func:`refuse_another_sweep`) has every row's shards holding every
    image, each shard intact and nothing staged."""
    if not (out / SWEEP_FILE).is_file():
        return False
    wanted = {s.image_id for s in samples}
    for row in sweep.rows:
        folder = out / ROWS / row.slug
        if any(folder.glob(".staging/r*/*.npz")) or not (folder / MANIFEST).is_file():
            return False
        shards = sorted(folder.glob(SHARD_GLOB))
        if any(shard_problem(shard) for shard in shards):
            return False        # the rows' stores set damaged shards aside and label their images again
        if not wanted <= {i for shard in shards for i in shard_image_ids(shard)}:
            return False
    return True


def run(argv: list[str] | None = None) -> dict | None:
    """Parse options, run the sweep's rows on this rank's images, and (rank 0) return the report's JSON. A sweep
    whose rows are all finished only gets its report rebuilt. ``--out`` is locked (one sweep per folder) before any
    model loads."""
    parser = build_parser()
    args = parser.parse_args(argv)
    evaluation = config_from_options(args, EvaluationConfig, "eval_", parser)
    for cls in METHOD_CONFIGS:                      # bounds refused before anything is written
        config_from_options(args, cls, "", parser)
    run_config = RunConfig.from_args(args)
    console_logging()
    rank, world, local_rank = distributed()
    out = sweep_dir(run_config)
    with RunLog(out, rank, world) as log:
        device, precision = device_and_precision(run_config, local_rank)
        sweep = build_sweep(args.sweep, args.row, run_config, MethodOptions.from_args(args), precision)
        dataset = logged_dataset(run_config, split_of(run_config), log)
        gt = default_gt(args.gt, run_config, dataset)
        with lock_output(out, rank):
            if not run_config.overwrite:
                refuse_another_sweep(out, sweep)
            if not run_config.overwrite and finished(out, sweep, dataset.samples[: run_config.limit]):
                log.attach()
                LOG.info("every row of sweep %s in %s is finished: rebuilding the report", sweep.name, out)
                return write_report(out, evaluation, gt) if rank == 0 else None
            with SweepRun.setup(run_config, log, sweep, dataset, device, precision) as sweep_run:
                sweep_run.label_images()
                return sweep_run.finish(evaluation, gt)


@tool_main(OutputError, FileNotFoundError, ValueError, RuntimeError)
def main(argv: list[str] | None = None) -> int:
    """``tools/ablate.sh``: exit status 0, 2 (an error, one line) or 130 (interrupted)."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
