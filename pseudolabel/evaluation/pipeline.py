"""The evaluation run: match image ids, read and check label maps (in parallel), count, score, bootstrap.

``evaluate(gt, pred, pred2=None, config)`` is the Python API behind ``tools/evaluate.py``; stage two's test script
and the label viewer call it too.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tqdm import tqdm

from pseudolabel.classes import IGNORE_INDEX, ClassSet, class_name_key
from pseudolabel.cli_options import DictConfig
from pseudolabel.evaluation.bootstrap import PairedTest, bootstrap_statistics, paired_test, percentile_interval
from pseudolabel.evaluation.counts import BoundarySpec, CountTable, ImageCounts, count_image
from pseudolabel.evaluation.metrics import MEAN_OVER, class_iou, coverage, labelled_only_sums, mean_iou
from pseudolabel.evaluation.sources import LabelSource, open_source
from pseudolabel.exits import worker_pool
from pseudolabel.storage.format import REFINED


class EvaluationError(ValueError):
    """Inputs that cannot be scored as given; the message names the image, the file and the option that helps."""


@dataclass
class EvaluationConfig(DictConfig):
    """Options of an evaluation run (docs/evaluation.md#usage explains each); bounds checked when it is built."""

    num_classes: int | None = field(default=None, metadata={
        "help": "number of classes incl. background; inferred from a dataset/shard source or --classes, required "
                "for PNG folders otherwise", "min": 1})
    classes: str | None = field(default=None, metadata={
        "help": "class list (.txt, one class per line, or .json) naming the classes of PNG folder sources in index "
                "order, so they are compared with the other sources' class names like shards and datasets are"})
    ignore_index: int = field(default=IGNORE_INDEX, metadata={
        "help": "GT label that is not scored (labels are 8-bit)", "min": 0, "max": 255})
    mean_over: str = field(default="mmseg", metadata={
        "help": "classes averaged: 'mmseg' = union > 0 (mmseg IoUMetric), 'gt-present' = present in GT "
                "(CLIP-ES/WeCLIP)", "choices": MEAN_OVER})
    boundary_kernel: int = field(default=23, metadata={
        "help": "odd erosion kernel size of the mBIoU bands", "min": 1})
    boundary_border: str = field(default="default", metadata={
        "help": "'default': image edge is not a boundary (cv2 erode default); 'pad': zero padding, the edge is one "
                "(Boundary IoU reference)", "choices": ("default", "pad")})
    bootstrap: int = field(default=10_000, metadata={
        "help": "bootstrap resamples for CIs and the paired test (0: off)", "min": 0})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap resampling", "min": 0})
    confidence: float = field(default=0.95, metadata={
        "help": "confidence level of the percentile intervals", "min": 0.0, "max": 1.0})
    workers: int = field(default=min(8, os.cpu_count() or 1), metadata={
        "help": "processes reading and counting label maps (1: in this process)", "min": 1})
    allow_missing: bool = field(default=False, metadata={
        "help": "score the GT ids that have predictions and report the missing ones instead of failing"})
    allow_size_mismatch: bool = field(default=False, metadata={
        "help": "skip (and report) images whose prediction size differs from the GT instead of failing"})
    allow_out_of_range: bool = field(default=False, metadata={
        "help": "count (and report) class values >= num_classes other than ignore instead of failing: in a "
                "prediction they count as wrong, in the GT those pixels are not scored"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.boundary_kernel % 2 == 0:
            raise ValueError(f"--boundary-kernel {self.boundary_kernel}: must be odd (the paper uses 23)")


@dataclass
class ImageOutcome:
    """What one image gave: counts per system, or why it was skipped, and out-of-range pixel counts."""

    image_id: str
    counts: list[ImageCounts] | None
    skipped_reason: str | None = None
    out_of_range: dict[str, int] = field(default_factory=dict)


@dataclass
class ImageScorer:
    """Reads, checks and counts one image for every system (picklable: runs in worker processes)."""

    gt: LabelSource
    preds: list[LabelSource]
    num_classes: int
    config: EvaluationConfig

    def _out_of_range(self, labels: np.ndarray, role: str, source: LabelSource, image_id: str) -> int:
        invalid = int(np.count_nonzero((labels >= self.num_classes) & (labels != self.config.ignore_index)))
        if invalid and not self.config.allow_out_of_range:
            value = int(labels[(labels >= self.num_classes) & (labels != self.config.ignore_index)].max())
            raise EvaluationError(
                f"image '{image_id}': {role} {source.location(image_id)} has class value {value} >= num_classes "
                f"{self.num_classes} in {invalid} pixels (only 0..{self.num_classes - 1} and "
                f"{self.config.ignore_index} are valid); check --num-classes, or pass --allow-out-of-range to "
                "count them (as wrong in predictions, unscored in GT)"
            )
        return invalid

    def __call__(self, image_id: str) -> ImageOutcome:
        cfg = self.config
        gt = self.gt.read(image_id)
        out_of_range = {"gt": self._out_of_range(gt, "GT", self.gt, image_id)}
        maps = []
        for number, source in enumerate(self.preds, start=1):
            pred = source.read(image_id)
            if pred.shape != gt.shape:
                message = (f"image '{image_id}': prediction {source.location(image_id)} has size {pred.shape} but "
                           f"the GT {self.gt.location(image_id)} has {gt.shape}")
                if not cfg.allow_size_mismatch:
                    raise EvaluationError(message + "; pass --allow-size-mismatch to skip such images")
                return ImageOutcome(image_id, None, "size_mismatch", out_of_range)
            out_of_range[f"pred{number}"] = self._out_of_range(pred, "prediction", source, image_id)
            maps.append(pred)
        boundary = BoundarySpec(cfg.boundary_kernel, cfg.boundary_border)
        counts = [count_image(gt, pred, self.num_classes, cfg.ignore_index, boundary) for pred in maps]
        return ImageOutcome(image_id, counts, None, out_of_range)


def check_class_names(sources: list[LabelSource], classes_file: str | None = None) -> None:
    """Give PNG folder sources the class names of ``classes_file``, then refuse sources whose class names differ
    (names and order; case, spaces and punctuation ignored), naming both lists: labels of one would be scored as
    another's classes (refused rather than remapped: the same names in another order mean the outputs were made
    with different class lists). A source left without names is scored with the others' and a note on stderr names
    the class list assumed."""
    if classes_file:
        try:
            names = ClassSet.from_file(classes_file).classes
        except ValueError as error:
            raise EvaluationError(f"--classes {classes_file}: {error}") from None
        for source in sources:
            if source.class_names is None:
                source.class_names, source.num_classes = tuple(names), len(names)
    named = [source for source in sources if source.class_names is not None]
    unnamed = [source.description for source in sources if source.class_names is None]
    if unnamed:
        assumed = (f"the classes of {named[0].description}: {list(named[0].class_names)}" if named
                   else "class indices 0, 1, ... with no names, so no class order is checked")
        print(f"note: {', '.join(unnamed)} {'names' if len(unnamed) == 1 else 'name'} no classes (PNG folders "
              f"without --classes): label values are scored as {assumed}; pass --classes FILE to have the class "
              "order checked", file=sys.stderr)
    for source in named[1:]:
        if [class_name_key(n) for n in source.class_names] != [class_name_key(n) for n in named[0].class_names]:
            raise EvaluationError(
                f"the sources name their classes differently: {named[0].description} has "
                f"{list(named[0].class_names)} but {source.description} has {list(source.class_names)}; label "
                "values would be scored as another class. Compare outputs made with the same class list (PNG "
                "folders take theirs from --classes)")


def _resolve_num_classes(config: EvaluationConfig, sources: list[LabelSource]) -> int:
    known = {s.description: s.num_classes for s in sources if s.num_classes is not None}
    if config.num_classes is not None:
        for description, count in known.items():
            if count != config.num_classes:
                raise EvaluationError(f"--num-classes {config.num_classes} contradicts {description}, which has "
                                      f"{count} classes")
        return config.num_classes
    if not known:
        raise EvaluationError("cannot infer the number of classes from PNG folders: pass --num-classes "
                              "(21 for VOC, 81 for COCO)")
    if len(set(known.values())) > 1:
        raise EvaluationError(f"the sources disagree on the number of classes: {known}; pass --num-classes")
    return next(iter(known.values()))


def match_ids(gt: LabelSource, preds: list[LabelSource], allow_missing: bool) -> tuple[list[str], dict[str, list[str]]]:
    """GT ids that every prediction has, and the missing ids per prediction (an error unless ``allow_missing``)."""
    ids = gt.ids()
    if not ids:
        raise EvaluationError(f"the GT {gt.description} has no label images (<id>.png) to score against; point --gt "
                              "at the folder of GT label PNGs or give a dataset spec like voc:val")
    missing = {}
    for number, source in enumerate(preds, start=1):
        available = set(source.ids())
        missing[f"pred{number}"] = [i for i in ids if i not in available]
        if missing[f"pred{number}"] and not allow_missing:
            first = missing[f"pred{number}"][0]
            raise EvaluationError(
                f"{len(missing[f'pred{number}'])} of {len(ids)} GT images have no prediction in {source.description}, "
                f"e.g. image '{first}' (expected {source.location(first)}); pass --allow-missing to score the "
                "images that have one and report the rest"
            )
    absent = set().union(*missing.values()) if missing else set()
    return [i for i in ids if i not in absent], missing


def collect_counts(
    scorer: ImageScorer, image_ids: list[str], workers: int, progress: bool = True
) -> list[ImageOutcome]:
    """Score every image, in ``workers`` processes when > 1 (tqdm progress)."""
    bar = dict(total=len(image_ids), desc="scoring", unit="img", disable=not progress)
    if workers <= 1 or len(image_ids) < 2:
        return [scorer(i) for i in tqdm(image_ids, **bar)]
    chunk = max(1, min(64, len(image_ids) // (8 * workers)))
    with worker_pool(workers) as pool:
        return list(tqdm(pool.map(scorer, image_ids, chunksize=chunk), **bar))


@dataclass
class SystemScores:
    """Scores of one prediction source (percent; NaN for classes excluded from the mean)."""

    name: str
    counts: CountTable
    class_iou: np.ndarray                 # (C,) strict: predicted ignore counts as a miss (= mmseg)
    class_biou: np.ndarray                # (C,)
    miou: float
    mbiou: float
    miou_labelled: float                  # labelled-only: pixels predicted as ignore are not scored
    coverage: float                       # labelled pixels / scored pixels
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    random_weights: bool = False          # the predictions were made with random model weights

    def to_json(self, class_names: list[str]) -> dict:
        per_class = {name: {"IoU": _num(100 * iou), "BIoU": _num(100 * biou)}
                     for name, iou, biou in zip(class_names, self.class_iou, self.class_biou)}
        return {"name": self.name, "mIoU": _num(self.miou), "mBIoU": _num(self.mbiou),
                "mIoU_labelled_only": _num(self.miou_labelled), "coverage": _num(self.coverage),
                "random_weights": self.random_weights, "per_class": per_class,
                "ci": {k: [_num(v) for v in ci] for k, ci in self.ci.items()}}


def _num(value: float) -> float | None:
    """JSON has no NaN: excluded classes become null."""
    return None if not np.isfinite(value) else float(value)


@dataclass
class EvaluationResult:
    """Everything an evaluation run found; ``to_json()`` is the documented JSON (docs/evaluation.md)."""

    class_names: list[str]
    split: str | None
    image_ids: list[str]
    systems: list[SystemScores]
    config: EvaluationConfig
    paired: dict[str, PairedTest] | None = None
    missing: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    out_of_range_pixels: dict[str, int] = field(default_factory=dict)
    gt_random_weights: bool = False       # the GT itself was made with random weights (e.g. shards as --gt)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def random_weights_sources(self) -> list[str]:
        """The roles (``gt``, ``pred1``, ``pred2``) of the sources made with random model weights."""
        return (["gt"] if self.gt_random_weights else []) + [
            f"pred{k + 1}" for k, s in enumerate(self.systems) if s.random_weights]

    def to_json(self) -> dict:
        first = self.systems[0].to_json(self.class_names)
        return {
            "mIoU": first["mIoU"], "mBIoU": first["mBIoU"], "per_class": first["per_class"], "ci": first["ci"],
            "mIoU_flavour": "strict (predicted ignore = miss, mmseg IoUMetric); mean over " + (
                "classes with union > 0" if self.config.mean_over == "mmseg" else "classes present in GT"),
            "split": self.split, "num_images": self.num_images,
            "random_weights": bool(self.random_weights_sources), "random_weights_sources": self.random_weights_sources,
            "systems": [s.to_json(self.class_names) for s in self.systems],
            # ``paired`` holds the mIoU test at its top level (diff, ci, p_value) and the mBIoU test under "mBIoU".
            "paired": ({"metric": "mIoU", **self.paired["mIoU"].to_json(), "mBIoU": self.paired["mBIoU"].to_json()}
                       if self.paired else None),
            "missing": {k: len(v) for k, v in self.missing.items()},
            "missing_ids": self.missing,
            "skipped": self.skipped,
            "out_of_range_pixels": self.out_of_range_pixels,
            "config": asdict(self.config),
        }


def _scores(name: str, table: CountTable, mean_over: str, random_weights: bool = False) -> SystemScores:
    gt_total = table.total("gt")
    inter_l, union_l = labelled_only_sums(table)
    return SystemScores(
        name=name, counts=table,
        class_iou=class_iou(table.total("tp"), table.total("union")),
        class_biou=class_iou(table.total("band_inter"), table.total("band_union")),
        miou=float(mean_iou(table.total("tp"), table.total("union"), gt_total, mean_over)),
        mbiou=float(mean_iou(table.total("band_inter"), table.total("band_union"), gt_total, mean_over)),
        miou_labelled=float(mean_iou(inter_l, union_l, gt_total, mean_over)),
        coverage=coverage(table),
        random_weights=random_weights,
    )


def bootstrap_means(tables: list[CountTable], config: EvaluationConfig, progress: bool = False) -> np.ndarray:
    """(B, 2 * systems) resampled [mIoU, mBIoU] of each system's counts, all on the same image resamples."""
    num_classes = tables[0].num_classes
    columns = [tables[0].gt] + [block for t in tables for block in (t.tp, t.union, t.band_inter, t.band_union)]

    def statistic(sums: np.ndarray) -> np.ndarray:
        gt, *ratios = np.split(sums, sums.shape[1] // num_classes, axis=1)  # gt, then (inter, union) pairs
        return np.stack([mean_iou(ratios[j], ratios[j + 1], gt, config.mean_over)
                         for j in range(0, len(ratios), 2)], axis=1)

    counts = np.hstack(columns, dtype=np.float64)
    return bootstrap_statistics(counts, statistic, config.bootstrap, config.seed, progress)


@dataclass
class CountedSystems:
    """Per-image counts of one or more prediction sources against one GT, with their point estimates and no
    bootstrap yet (:func:`count_systems`); :func:`score_counts` completes them into an :class:`EvaluationResult`.
    Counting is the expensive part: a caller scoring one source against several others counts each source once and
    pairs them with :meth:`followed_by`."""

    class_names: list[str]
    split: str | None
    systems: list[SystemScores]
    missing: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    out_of_range_pixels: dict[str, int] = field(default_factory=dict)
    gt_random_weights: bool = False

    @property
    def image_ids(self) -> list[str]:
        return self.systems[0].counts.image_ids

    def followed_by(self, other: "CountedSystems", config: EvaluationConfig) -> "CountedSystems":
        """These systems, then ``other``'s (counted against the same GT), on the images both have: what one
        :func:`count_systems` call over all of them gives."""
        common = set(other.image_ids)
        ids = [i for i in self.image_ids if i in common]
        systems = [replace(s, ci={}) if s.counts.image_ids == ids else _scores(s.name, s.counts.subset(ids),
                                                                                config.mean_over, s.random_weights)
                   for s in self.systems + other.systems]
        renumber = {f"pred{k + 1}": f"pred{k + 1 + len(self.systems)}" for k in range(len(other.systems))}
        missing = {**self.missing, **{renumber[k]: v for k, v in other.missing.items()}}
        out_of_range = {**self.out_of_range_pixels,
                        **{renumber[k]: v for k, v in other.out_of_range_pixels.items() if k != "gt"}}
        skipped = {reason: sorted(set(ids_a) | set(other.skipped.get(reason, [])))
                   for reason, ids_a in self.skipped.items()}
        return CountedSystems(self.class_names, self.split, systems, missing, skipped, out_of_range,
                              self.gt_random_weights)


def count_systems(
    gt: str | LabelSource,
    preds: list[tuple[str | LabelSource, str]],
    config: EvaluationConfig,
    data_root: str | None = None,
    progress: bool = True,
) -> CountedSystems:
    """Match image ids, read, check and count every image of ``preds`` (``(source, label kind)`` pairs, paired on the
    same images) against ``gt``; sources as in ``open_source``."""
    gt_source = open_source(gt, data_root=data_root)
    sources = [open_source(pred, kind, data_root) for pred, kind in preds]
    check_class_names([gt_source, *sources], config.classes)
    num_classes = _resolve_num_classes(config, [gt_source, *sources])
    if config.ignore_index < num_classes:
        raise EvaluationError(f"--ignore-index {config.ignore_index} must be >= num_classes {num_classes}")
    class_names = list(next((s.class_names for s in [gt_source, *sources] if s.class_names
                             and len(s.class_names) == num_classes), [str(c) for c in range(num_classes)]))
    image_ids, missing = match_ids(gt_source, sources, config.allow_missing)
    if not image_ids:
        raise EvaluationError(f"no image of {gt_source.description} has a prediction to score")
    outcomes = collect_counts(ImageScorer(gt_source, sources, num_classes, config), image_ids, config.workers,
                              progress)
    scored = [o for o in outcomes if o.counts is not None]
    skipped = {"size_mismatch": [o.image_id for o in outcomes if o.skipped_reason == "size_mismatch"]}
    if not scored:
        raise EvaluationError("every image was skipped (size mismatch); nothing to score")
    out_of_range = {key: sum(o.out_of_range.get(key, 0) for o in outcomes)
                    for key in ["gt"] + [f"pred{n}" for n in range(1, len(sources) + 1)]}
    ids = [o.image_id for o in scored]
    systems = [_scores(source.description, CountTable.stack(ids, [o.counts[k] for o in scored], num_classes),
                       config.mean_over, getattr(source, "random_weights", False)) for k, source in enumerate(sources)]
    split = gt_source.split or next((s.split for s in sources if s.split), None)
    return CountedSystems(class_names, split, systems, missing, skipped, out_of_range,
                          getattr(gt_source, "random_weights", False))


def score_counts(counted: CountedSystems, config: EvaluationConfig, progress: bool = True) -> EvaluationResult:
    """Bootstrap intervals of every system and, for two systems, the paired test: the finished result."""
    systems = counted.systems
    paired = None
    if config.bootstrap > 0:
        samples = bootstrap_means([s.counts for s in systems], config, progress)   # columns: [mIoU, mBIoU] per system
        for k, system in enumerate(systems):
            system.ci = {"mIoU": percentile_interval(samples[:, 2 * k], config.confidence),
                         "mBIoU": percentile_interval(samples[:, 2 * k + 1], config.confidence)}
        if len(systems) == 2:
            a, b = systems
            paired = {"mIoU": paired_test(a.miou - b.miou, samples[:, 0] - samples[:, 2], config.confidence),
                      "mBIoU": paired_test(a.mbiou - b.mbiou, samples[:, 1] - samples[:, 3], config.confidence)}
    return EvaluationResult(counted.class_names, counted.split, counted.image_ids, systems, config, paired,
                            counted.missing, counted.skipped, counted.out_of_range_pixels, counted.gt_random_weights)


def evaluate(
    gt: str | LabelSource,
    pred: str | LabelSource,
    pred2: str | LabelSource | None = None,
    config: EvaluationConfig | None = None,
    pred_kind: str = REFINED,
    pred2_kind: str = REFINED,
    data_root: str | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Score ``pred`` (and ``pred2``, paired on the same images) against ``gt``; sources as in ``open_source``."""
    config = config or EvaluationConfig()
    preds = [(pred, pred_kind)] + ([(pred2, pred2_kind)] if pred2 is not None else [])
    return score_counts(count_systems(gt, preds, config, data_root, progress), config, progress)
