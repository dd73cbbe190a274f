"""SAM variants (segment-anything's builders and official checkpoints, SAM 2.1's from ``sam2_models``; more through
:func:`register_sam_variant`) and checkpoint loading.

Official checkpoints are plain state dicts, loaded with ``torch.load(weights_only=True)``
(``pseudolabel/checkpoints.py``). Without a local file the official checkpoint is downloaded into a cache directory
and its SHA-256 checked before use (``pseudolabel/download.py``).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from pseudolabel import compat
from pseudolabel.checkpoints import load_weights
from pseudolabel.download import DownloadError, download_file, file_sha256
from pseudolabel.sam import sam2_models
from pseudolabel.sam.fused_attention import install_fused_attention
from pseudolabel.sam.sam2_predictor import SAM2PointPredictor

compat.apply()  # before segment_anything imports torchvision
from segment_anything import sam_model_registry  # noqa: E402

LOG = logging.getLogger(__name__)
URL_ROOT = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class SAMVariant:
    """How to build a SAM variant (``build(checkpoint=None)`` -> an untrained ``Sam``, as segment-anything's
    ``sam_model_registry`` entries) and its official checkpoint's file name and SHA-256 (None: random weights only)."""

    build: Callable[..., torch.nn.Module]
    filename: str | None = None
    sha256: str | None = None
    url: str | None = None             # where the checkpoint is downloaded from (None: URL_ROOT + filename)
    state_key: str | None = None       # the checkpoint holds the state dict under this key (None: it is one)
    predictor: Callable | None = None  # predictor(model, precision=...) for the refiner (None: BatchedPointPredictor)


# The SHA-256 values of the official checkpoints, as published by several independent public install scripts (some
# verify the download with `sha256sum -c`); SAM 2.1 Hiera-T/S/B+/L from ``sam2_models``.
SAM_VARIANTS = {
    "vit_b": SAMVariant(sam_model_registry["vit_b"], "sam_vit_b_01ec64.pth",
                        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": SAMVariant(sam_model_registry["vit_l"], "sam_vit_l_0b3195.pth",
                        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_h": SAMVariant(sam_model_registry["vit_h"], "sam_vit_h_4b8939.pth",
                        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    **{name: SAMVariant(partial(sam2_models.build_sam2_model, config), filename, None, sam2_models.URL_ROOT + filename,
                        sam2_models.STATE_KEY, SAM2PointPredictor)
       for name, (config, filename) in sam2_models.SAM2_CONFIGS.items()},
}


def register_sam_variant(name: str, build: Callable[..., torch.nn.Module], filename: str | None = None,
                         sha256: str | None = None, *, url: str | None = None, state_key: str | None = None,
                         predictor: Callable | None = None) -> None:
    """Add a SAM variant to the registry, so ``load_sam`` builds it and ``--sam-model`` accepts it (the choices are
    read from the registry when a parser is built). ``build(checkpoint=None)`` returns an untrained ``Sam``; without
    ``filename`` the variant runs with random weights only. Registering a name again with another variant is an
    error. ``url``, ``state_key`` and ``predictor``: see :class:`SAMVariant`."""
    variant = SAMVariant(build, filename, sha256, url, state_key, predictor)
    if SAM_VARIANTS.setdefault(name, variant) != variant:
        raise ValueError(f"SAM variant '{name}' is already registered with another builder or checkpoint")


def cache_dir() -> Path:
    """Where downloaded checkpoints live: ``$CEP_CACHE/sam`` or ``~/.cache/cep/sam``."""
    return Path(os.environ.get("CEP_CACHE", Path.home() / ".cache" / "cep")) / "sam"


def download_checkpoint(variant: str, directory: Path | None = None) -> Path:
    """The official checkpoint in the cache, downloaded (timeout, SHA-256 check, atomic rename) if absent."""
    spec = SAM_VARIANTS[variant]
    target = (directory or cache_dir()) / spec.filename
    if target.is_file():
        return target
    url = spec.url or URL_ROOT + spec.filename
    LOG.info("downloading %s to %s", url, target)
    if spec.sha256 is None:
        LOG.warning("no published SHA-256 for the SAM %s checkpoint: the download is not verified", variant)
    try:
        return download_file(url, target, spec.sha256)
    except DownloadError as error:
        raise RuntimeError(f"could not get the SAM {variant} checkpoint: {error}. Download it elsewhere and put it at "
                           f"{target}, or pass --sam-checkpoint PATH") from None


def load_sam(variant: str = "vit_b", checkpoint: str | None = None, device="cpu", seed: int = 0):
    """A frozen SAM in eval mode and its weights identity. ``checkpoint``: a local file, None (cache/download), or
    ``"random"`` (seeded random weights: pipeline checks only)."""
    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant '{variant}'; choose one of {tuple(SAM_VARIANTS)}")
    spec = SAM_VARIANTS[variant]
    torch.manual_seed(seed)
    model = spec.build(checkpoint=None)
    if checkpoint == "random" or spec.filename is None:
        if checkpoint not in ("random", None):
            raise ValueError(f"the {variant} variant has no checkpoint; use --sam-checkpoint random")
        LOG.warning("SAM %s uses RANDOM weights (seed %d): refined labels are not meaningful", variant, seed)
        identity = {"kind": "random", "model": variant, "seed": seed}
    else:
        path = Path(checkpoint) if checkpoint else download_checkpoint(variant)
        if not path.is_file():
            raise FileNotFoundError(f"SAM checkpoint '{path}' does not exist (expected the official {variant} file "
                                    f"{spec.filename})")
        state = load_weights(path)  # weights only: a file holding anything else is refused in one line
        if spec.state_key is not None:
            if not isinstance(state, dict) or spec.state_key not in state:
                raise ValueError(f"{path}: not a SAM {variant} checkpoint (no '{spec.state_key}' entry); pass "
                                 "--sam-model with the checkpoint's variant")
            state = state[spec.state_key]
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{path}: not a SAM {variant} checkpoint ({str(error).splitlines()[1:2]}); "
                             "pass --sam-model with the checkpoint's variant") from None
        identity = {"kind": "file", "model": variant, "path": str(path), "sha256": file_sha256(path)}
    install_fused_attention(model)  # every path gets SDPA attention in the encoder
    return model.to(device).eval().requires_grad_(False), identity

