"""Numeric precision of stage one's networks (``--precision``): autocast for CLIP's blocks and SAM's image encoder on
a GPU. A CPU always computes in fp32, whatever is asked.

The precision decides labels (bf16 changes a small share of pixels), so the run records the precision it used in
its configuration and a resume compares it (docs/stage_one.md#stage-one-on-a-gpu).
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
# The default on CUDA (docs/stage_one.md#precision): bf16 only where its labels agree with fp32's on at least 99.5% of
# pixels in `bench/gpu_check.sh`; measured on an H200, 98.86%, so fp32.
DEFAULT_CUDA_PRECISION = "fp32"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def effective_precision(requested: str | None, device: str | torch.device) -> tuple[str, str | None]:
    """The precision a run on ``device`` uses for ``--precision requested`` (None: the device's default), and a note
    to log when the request is not honoured (a CPU computes in fp32)."""
    if requested is not None and requested not in PRECISIONS:
        raise ValueError(f"unknown precision '{requested}'; choose one of {PRECISIONS}")
    if torch.device(device).type != "cuda":
        note = f"--precision {requested} applies on CUDA only; the CPU computes in fp32" \
            if requested not in (None, "fp32") else None
        return "fp32", note
    return requested or DEFAULT_CUDA_PRECISION, None


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` to ``precision`` on a CUDA device; nothing (fp32) elsewhere or for fp32."""
    if torch.device(device).type == "cuda" and precision != "fp32":
        return torch.autocast("cuda", dtype=DTYPES[precision])
    return contextlib.nullcontext()
