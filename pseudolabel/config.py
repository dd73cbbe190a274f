"""The stage-one configuration: Skip-CAM and SAM-refinement configs, JSON round trip, and the command line generated
from the dataclass fields (so ``--help`` documents every field with its default)."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field

from pseudolabel.sam.refine import SAMRefineConfig
from pseudolabel.cam.skipcam import SkipCAMConfig, default_tau

FLAG_NAMES = {"use_par": "par", "enabled": "refine"}  # --no-par, --no-refine


@dataclass
class PseudoLabelConfig:
    """Everything that decides the labels (stored as JSON in every shard and in ``<out>/config.json``)."""

    dataset: str
    split: str
    cam: SkipCAMConfig = field(default_factory=SkipCAMConfig)
    refine: SAMRefineConfig = field(default_factory=SAMRefineConfig)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "cam": self.cam.to_dict(),
                "refine": self.refine.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "PseudoLabelConfig":
        return cls(data["dataset"], data["split"], SkipCAMConfig.from_dict(data["cam"]),
                   SAMRefineConfig.from_dict(data["refine"]))


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, title: str) -> None:
    """One option per field: ``--field-name VALUE``; booleans as ``--flag`` / ``--no-flag``. Defaults are None so
    that the caller can tell what was given."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = f.default
        help_text = f"{meta.get('help', '')} (default: {default})"
        name = FLAG_NAMES.get(f.name, f.name).replace("_", "-")
        if hints[f.name] is bool:
            group.add_argument(f"--{name}", dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
            continue
        kind = hints[f.name]
        kind = str if typing.get_origin(kind) in (typing.Union, types.UnionType) else kind  # "str | None" -> str
        group.add_argument(f"--{name}", dest=f.name, type=kind, default=None, choices=meta.get("choices"),
                           help=help_text)


def config_from_args(args: argparse.Namespace, dataset: str, split: str) -> PseudoLabelConfig:
    """Build the config: given options override the dataclass defaults; τ defaults per dataset (0.4 VOC, 0.7 COCO)."""
    def build(cls):
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}
        return cls(**given)

    cam, refine = build(SkipCAMConfig), build(SAMRefineConfig)
    if args.tau is None:
        cam.tau = default_tau(dataset)
    return PseudoLabelConfig(dataset, split, cam, refine)
