"""Which labeller stage one runs (``--labeller``) and SAM 3's options when it runs SAM 3 from the tags."""
from __future__ import annotations

from dataclasses import dataclass, field

from pseudolabel.cli_options import DictConfig

LABELLERS = ("cep", "sam3-text")


@dataclass
class LabellerConfig(DictConfig):
    """The labeller. Defaults: CEP; for SAM 3, its own confidence threshold (its ``Sam3Processor``'s 0.5) and the
    highest score winning an overlap (docs/stage_one.md#sam-3-from-the-tags)."""

    labeller: str = field(default="cep", metadata={
        "help": "cep: Skip-CAM + SAM refinement; sam3-text: SAM 3 prompted with each tagged class's name (no CAM; "
                "the .[sam3] extra, SAM License)", "choices": LABELLERS})
    sam3_checkpoint: str | None = field(default=None, metadata={
        "help": "sam3-text: local SAM 3 checkpoint (sam3.pt), or random (untrained: checks only); default: SAM 3's "
                "own download from the Hugging Face hub (facebook/sam3, access granted there)"})
    sam3_score_threshold: float = field(default=0.5, metadata={
        "help": "sam3-text: an instance counts where its score >= this"})
    sam3_overlap: str = field(default="score", metadata={
        "help": "sam3-text: pixels in instances of several tagged classes go to the highest-scoring class (score) "
                "or to 255 (ignore)", "choices": ("score", "ignore")})
