"""SAM 2.1's variants for the SAM registry (``pseudolabel/sam/models.py``, with the predictor that prompts them,
:mod:`pseudolabel.sam.sam2_predictor`): the official ``sam2`` package's configs, checkpoints and builder.

``sam2`` (Apache-2.0) is imported when a variant is built, not with this module. Its official checkpoints
(``dl.fbaipublicfiles.com/segment_anything_2/092824/``) hold the weights under ``"model"``; no SHA-256 of them is
published by the package or its repository, so the download is not checked against one (the weights identity
records the file's SHA-256 all the same).
"""
from __future__ import annotations

import torch

URL_ROOT = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
STATE_KEY = "model"  # the official checkpoints: {"model": state dict}

# --sam-model name: (the package's config, the official checkpoint's file name)
SAM2_CONFIGS = {
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}


def build_sam2_model(config: str, overrides: tuple[str, ...] = (), checkpoint=None) -> torch.nn.Module:
    """An untrained SAM 2.1 from the package's hydra ``config`` (with ``overrides``), on the CPU in eval mode:
    ``sam2.build_sam.build_sam2`` without a checkpoint (``load_sam`` loads it). ``checkpoint`` is there for the
    registry's calling convention and must be None."""
    if checkpoint is not None:
        raise ValueError("build_sam2_model builds untrained models; load_sam loads the checkpoint")
    from pseudolabel import compat

    compat.apply()  # before sam2 imports torchvision
    from sam2.build_sam import build_sam2

    return build_sam2(config, None, device="cpu", mode="eval", hydra_overrides_extra=list(overrides))

