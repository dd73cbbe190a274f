"""The stage-one configuration: Skip-CAM and SAM-refinement configs, JSON round trip, and the config built from the
command line that :mod:`pseudolabel.cli_options` generates from the dataclass fields."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from pseudolabel.cam.skipcam import SkipCAMConfig
from pseudolabel.cli_options import config_from_options, given_options
from pseudolabel.labellers.config import LabellerConfig
from pseudolabel.sam.refine import SAMRefineConfig


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
        return cls(data["dataset"], data["split"], SkipCAMConfig.from_dict(data["cam"]),
                   SAMRefineConfig.from_dict(data["refine"]), data["precision"],
                   LabellerConfig.from_dict(data["labeller"]) if "labeller" in data else LabellerConfig())


def config_from_args(args: argparse.Namespace, dataset: str, split: str, precision: str = "fp32") -> PseudoLabelConfig:
    """Build the config: given options override the dataset's defaults (``SkipCAMConfig.for_dataset``);
    ``precision``: the one the device uses (:func:`pseudolabel.precision.effective_precision`)."""
    return PseudoLabelConfig(dataset, split, SkipCAMConfig.for_dataset(dataset, **given_options(args, SkipCAMConfig)),
                             config_from_options(args, SAMRefineConfig), precision,
                             config_from_options(args, LabellerConfig))
