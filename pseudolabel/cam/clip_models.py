"""CLIP models through open_clip: its registry of configs plus ours (``pseudolabel/cam/model_configs``), and weights.

Weights: ``"openai"`` (downloaded and cached by open_clip), a local file (OpenAI's original TorchScript archive such as
``ViT-B-16.pt``, or a state dict in OpenAI / open_clip key format), or ``"random"`` (seeded; demo, tests, benchmarks).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from pseudolabel import compat

compat.apply()  # before open_clip imports torchvision
import open_clip  # noqa: E402

LOG = logging.getLogger(__name__)
MODEL_CONFIGS = Path(__file__).with_name("model_configs")
open_clip.add_model_config(MODEL_CONFIGS)
# In OpenAI's files but not in open_clip's state dict (attn_mask is a non-persistent buffer there).
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def available_models() -> list[str]:
    """Model names accepted by ``load_clip`` (open_clip's and ours)."""
    return open_clip.list_models()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """State dict of a local CLIP checkpoint.

    OpenAI's archives are TorchScript (read with ``torch.jit.load``, which unpickles nothing arbitrary); other
    files are read with ``torch.load(weights_only=True)``.
    """
    try:
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - report any unreadable file the same way
            raise ValueError(f"{path}: not a CLIP checkpoint readable as TorchScript or a state dict ({error})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    return state


def load_clip(name: str = "ViT-B-16", weights: str = "openai", device: str | torch.device = "cpu", seed: int = 0):
    """A frozen CLIP model in eval mode, its tokenizer and a weights identity dict (stored with every output)."""
    if name not in available_models():
        raise ValueError(f"unknown CLIP model '{name}'; choose one of open_clip's configs, e.g. ViT-B-16")
    torch.manual_seed(seed)  # random init is seeded, so "random" weights are reproducible
    if weights == "random":
        model = open_clip.create_model(name, pretrained=None)
        identity = {"kind": "random", "model": name, "seed": seed}
        LOG.warning("CLIP %s uses RANDOM weights (seed %d): maps and labels are not meaningful", name, seed)
    elif weights == "openai":
        try:
            model = open_clip.create_model(name, pretrained="openai")
        except RuntimeError as error:
            raise RuntimeError(
                f"could not download OpenAI CLIP weights for {name} ({error}). Without internet, download "
                f"OpenAI's {name}.pt elsewhere and pass --clip-weights /path/to/{name}.pt"
            ) from None
        identity = {"kind": "openai", "model": name}
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"CLIP weights file '{path}' does not exist (expected a {name} checkpoint, "
                                    "e.g. OpenAI's ViT-B-16.pt, or use --clip-weights openai)")
        model = open_clip.create_model(name, pretrained=None)
        try:
            model.load_state_dict(read_state_dict(path), strict=True)
        except RuntimeError as error:
            first = str(error).splitlines()[1:3]
            raise ValueError(f"{path}: weights do not match the {name} architecture ({' '.join(first)}); "
                             "pass --clip-model with the checkpoint's architecture") from None
        identity = {"kind": "file", "model": name, "path": str(path), "sha256": file_sha256(path)}
    model = model.to(device).eval().requires_grad_(False)
    return model, open_clip.get_tokenizer(name), identity
