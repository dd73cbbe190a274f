"""Numeric precision of stage one's networks (``--precision``) on a GPU; a CPU always computes in fp32.

The precision applies to the image encoders (CLIP's blocks, SAM's image encoder), most of the work:

- ``fp32``: true float32. cuDNN's convolutions (SAM's patch embedding and neck, CLIP's ``conv1``) and matmuls run
  without TF32, which cuDNN would use by default.
- ``tf32``: float32 storage, TF32 tensor-core math in the encoders' matmuls and convolutions.
- ``bf16`` / ``fp16``: autocast to that type (weights stay float32).

Everything else (SAM's prompt decoder, CAA, PAR, filtering, merging) computes in true float32 on every precision:
:func:`use_fp32_math` turns TF32 off for the run, and :func:`encoder_precision` turns it on only around an encoder
for ``tf32``. The precision decides labels, so the run records it in its configuration and a resume compares it
(docs/stage_one.md#precision).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# The default on CUDA (docs/stage_one.md#precision): the fastest precision whose labels agree with fp32's on at least
# 99.5% of pixels in `bench/gpu_check.sh`; measured on an H200, bf16 98.86%, so fp32 (tf32 not yet measured).
DEFAULT_CUDA_PRECISION = "fp32"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def _set_tf32(enabled: bool) -> tuple[bool, bool]:
    """Set TF32 for CUDA matmuls and cuDNN; return the previous (matmul, cuDNN) settings."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    return previous


def use_fp32_math(device: str | torch.device) -> None:
    """On CUDA, true float32 for the rest of the process: TF32 off in matmuls and cuDNN (a run's setting, made once
    when its device is chosen)."""
    if torch.device(device).type == "cuda":
        _set_tf32(False)


@contextlib.contextmanager
def encoder_precision(device: str | torch.device, precision: str) -> Iterator[None]:
    """An image encoder's math on a CUDA ``device`` in ``precision`` (the module docstring); nothing elsewhere. The
    TF32 settings are restored on exit."""
    if torch.device(device).type != "cuda":
        yield
        return
    previous = _set_tf32(precision == "tf32")
    try:
        with torch.autocast("cuda", dtype=AUTOCAST_DTYPES[precision]) if precision in AUTOCAST_DTYPES \
                else contextlib.nullcontext():
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
