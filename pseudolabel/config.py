"""The stage-one configuration in two parts, both built once from the command line at the entry point: the method
(:class:`PseudoLabelConfig`: everything a label depends on, stored in every shard and compared on resume) and the
runtime (:class:`RunConfig`: what to label and how to run; a resume with other values goes on)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path

from pseudolabel.cam.skipcam import SkipCAMConfig
from pseudolabel.cli_options import given_options
from pseudolabel.labellers.config import LabellerConfig
from pseudolabel.storage.shards import method_config
from pseudolabel.sam.refine import POINTS_PER_BATCH, SAMRefineConfig


@dataclass
class PseudoLabelConfig:
    """Everything that decides the labels (stored as JSON in every shard and in ``<out>/config.json``)."""

    dataset: str
    split: str
    cam: SkipCAMConfig | None = None  # None: the dataset's defaults, SkipCAMConfig.for_dataset(dataset)
    refine: SAMRefineConfig = field(default_factory=SAMRefineConfig)
    precision: str = "fp32"  # the one used: pseudolabel/precision.py (a CPU always uses fp32)
    labeller: LabellerConfig = field(default_factory=LabellerConfig)  # stored only when not CEP's

    def __post_init__(self) -> None:
        if self.cam is None:
            self.cam = SkipCAMConfig.for_dataset(self.dataset)

    def to_dict(self) -> dict:
        labeller = {"labeller": self.labeller.to_dict()} if self.labeller.labeller != "cep" else {}
        return {"dataset": self.dataset, "split": self.split, "cam": self.cam.to_dict(),
                "refine": self.refine.to_dict(), "precision": self.precision, **labeller}

    @classmethod
    def from_dict(cls, data: dict) -> "PseudoLabelConfig":
        data = method_config(data)   # a configuration stored by an earlier version may hold a runtime setting
        return cls(data["dataset"], data["split"], SkipCAMConfig.from_dict(data["cam"]),
                   SAMRefineConfig.from_dict(data["refine"]), data["precision"],
                   LabellerConfig.from_dict(data["labeller"]) if "labeller" in data else LabellerConfig())


@dataclass
class MethodOptions:
    """The method options given on the command line, field -> value per config, before the dataset's defaults and
    the precision the device uses are known."""

    cam: dict
    refine: dict
    labeller: dict

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "MethodOptions":
        return cls(given_options(args, SkipCAMConfig), given_options(args, SAMRefineConfig),
                   given_options(args, LabellerConfig))

    def config(self, dataset: str, split: str, precision: str = "fp32") -> PseudoLabelConfig:
        """The configuration: the given options over the dataset's defaults (``SkipCAMConfig.for_dataset``);
        ``precision``: the one the device uses (:func:`pseudolabel.precision.effective_precision`)."""
        return PseudoLabelConfig(dataset, split, SkipCAMConfig.for_dataset(dataset, **self.cam),
                                 SAMRefineConfig(**self.refine), precision, LabellerConfig(**self.labeller))


@dataclass
class RunConfig:
    """What stage one labels and how it runs (gen_pseudo's "run" options): no label depends on these, so they are
    neither stored in the shards nor compared on resume; the run log records them."""

    dataset: str                        # voc, coco, custom or demo
    split: str | None = None            # None: the dataset's default (datasets.DEFAULT_SPLITS)
    out: Path | None = None             # None: outputs/<dataset>_<split> (generate.output_dir)
    data_root: Path | None = None
    label_source: str = "xml"           # VOC image-level labels: Annotations XML or GT masks
    images: Path | None = None          # custom: the image folder, labels, class list
    labels: Path | None = None
    classes: Path | None = None
    device: str = "auto"
    precision: str | None = None        # as asked; the method records the one used (precision.effective_precision)
    batch_size: int | None = None       # None: pipeline.default_batch_size
    workers: int | None = None          # None: pipeline.default_workers
    shard_size: int = 200
    limit: int | None = None            # only the first N images
    compile: bool = False
    overwrite: bool = False
    points_per_batch: int = POINTS_PER_BATCH    # SAM prompts decoded together (speed and memory only)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RunConfig":
        """The run options of a parsed gen_pseudo (or ablate) command line."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
