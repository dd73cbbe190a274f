"""``--compile``: stage one's image encoders (CLIP's frozen blocks, SAM's image encoder) through ``torch.compile``
(TorchInductor's fused kernels, fewer launches). Each input shape compiles once per process (a few seconds per shape
for small models, a minute or more for ViT-B on a CPU) and PyTorch's compile cache keeps the kernels for later runs.
Compiled kernels round differently from eager ones, as other batch shapes do on a GPU, so a label may change at a
near-tie; ``bench/gpu_check.sh`` measures whether it pays off, compile time included (docs/stage_one.md#compiled-encoders).
"""
from __future__ import annotations

import torch


def is_compiled(function) -> bool:
    """Whether ``function`` (a function or module) is already a ``torch.compile`` wrapper."""
    return hasattr(function, "_torchdynamo_orig_callable") or hasattr(function, "_orig_mod")


def compile_encoders(cam, refiner) -> None:
    """Compile ``cam``'s frozen blocks (a :class:`~pseudolabel.cam.skipcam.SkipCAM`) and, when given, the image
    encoder of ``refiner`` (a :class:`~pseudolabel.sam.refine.SAMRefiner`), in place; what is compiled already
    (a model shared by a sweep's rows) is left as it is."""
    if not is_compiled(cam.frozen_blocks):
        cam.frozen_blocks = torch.compile(cam.frozen_blocks)
    if refiner is None:
        return
    model = refiner.predictor.model
    name = "forward_image" if hasattr(model, "forward_image") else "image_encoder"  # SAM 2.1: trunk, neck, projections
    if not is_compiled(getattr(model, name)):
        setattr(model, name, torch.compile(getattr(model, name)))
