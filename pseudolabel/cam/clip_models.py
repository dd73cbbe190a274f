"""CLIP models through open_clip: its registry of model configs (``open_clip.add_model_config`` adds more), and weights:
``"openai"`` (downloaded and cached by open_clip), a local file (OpenAI's TorchScript archive such as ``ViT-B-16.pt``,
or a state dict in OpenAI / open_clip key format), or ``"random"`` (seeded; demo, tests, benchmarks). OpenAI's weights
always run on the QuickGELU config they were trained with, a plain state dict on the config named
(docs/stage_one.md#the-clip-model-and-its-activation).
"""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import torch

from pseudolabel import compat
from pseudolabel.checkpoints import CheckpointRefusedError, load_weights
from pseudolabel.download import file_sha256

compat.apply()  # before open_clip imports torchvision
import open_clip  # noqa: E402
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME  # noqa: E402
from open_clip.transformer import QuickGELU  # noqa: E402

LOG = logging.getLogger(__name__)
DEFAULT_CLIP_MODEL = "ViT-B-16-quickgelu"  # OpenAI's ViT-B/16 as OpenAI trained it (the paper's backbone)
QUICKGELU_SUFFIX = "-quickgelu"  # open_clip's name for the QuickGELU variant of a config
# In OpenAI's files but not in open_clip's state dict (attn_mask is a non-persistent buffer there).
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def available_models() -> list[str]:
    """Model names accepted by ``load_clip``: open_clip's registry, read now (so it includes configs added since)."""
    return open_clip.list_models()


def is_torchscript(path: Path) -> bool:
    """Whether a checkpoint file is a TorchScript archive (OpenAI's format); ``torch.save`` files have no
    ``constants.pkl``. Reads only the zip directory."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def is_openai_weights(weights: str) -> bool:
    """Whether ``weights`` are known to be OpenAI's: the ``openai`` tag or a TorchScript archive."""
    return weights == "openai" or (Path(weights).is_file() and is_torchscript(Path(weights)))


def _builds_quick_gelu(name: str) -> bool:
    return bool(open_clip.get_model_config(name).get("quick_gelu"))


def clip_architecture(name: str, weights: str) -> str:
    """The open_clip config that ``load_clip(name, weights)`` builds.

    OpenAI's spelling ``ViT-B/16`` becomes ``ViT-B-16``. With OpenAI's weights a GELU config becomes its QuickGELU
    variant (``ViT-B-16`` -> ``ViT-B-16-quickgelu``); a GELU config without one is an error. Otherwise ``name``.
    """
    name = name.replace("/", "-")
    if name not in available_models():
        raise ValueError(f"unknown CLIP model '{name}'; choose one of open_clip's configs, e.g. {DEFAULT_CLIP_MODEL}")
    if not is_openai_weights(weights) or _builds_quick_gelu(name):
        return name
    variant = name + QUICKGELU_SUFFIX
    if variant in available_models() and _builds_quick_gelu(variant):
        LOG.info("OpenAI's weights were trained with QuickGELU: building %s for --clip-model %s", variant, name)
        return variant
    raise ValueError(f"CLIP model '{name}' builds GELU, but OpenAI's weights ({weights}) were trained with QuickGELU "
                     f"and '{name}' has no QuickGELU variant; name a QuickGELU config (e.g. {DEFAULT_CLIP_MODEL}) or "
                     f"add \"quick_gelu\": true to the model config")


def model_activation(model: torch.nn.Module) -> str:
    """The MLP activation a built model uses: ``QuickGELU``, ``GELU`` (``+``-joined if mixed, ``unknown`` if none)."""
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}
    return "+".join(sorted(kinds)) or "unknown"


def openai_weights_cached(name: str) -> bool:
    """Whether OpenAI's weights for ``name`` are in the Hugging Face cache, where open_clip looks first (no
    download)."""
    from huggingface_hub import try_to_load_from_cache

    hub = open_clip.get_pretrained_cfg(clip_architecture(name, "openai"), "openai").get("hf_hub", "")
    repo, filename = os.path.split(hub)
    names = (filename,) if filename else (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
    return bool(repo) and any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """State dict of a local CLIP checkpoint.

    OpenAI's archives are TorchScript (read with ``torch.jit.load``, which unpickles nothing arbitrary); other
    files are read with ``torch.load(weights_only=True)``, and one holding more than weights is refused in one line.
    """
    try:
        if is_torchscript(path):
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = load_weights(path)
    except CheckpointRefusedError:
        raise
    except Exception as error:  # noqa: BLE001 - report any unreadable file the same way
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ValueError(f"{path}: not a CLIP checkpoint readable as TorchScript or a state dict ({first})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a CLIP state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}


def load_clip(name: str = DEFAULT_CLIP_MODEL, weights: str = "openai", device: str | torch.device = "cpu",
              seed: int = 0):
    """A frozen CLIP model in eval mode, its tokenizer and a weights identity dict (stored with every output: kind,
    the config built, its activation, and the seed or the file's path and SHA-256)."""
    arch = clip_architecture(name, weights)
    torch.manual_seed(seed)  # random init is seeded, so "random" weights are reproducible
    if weights == "random":
        model = open_clip.create_model(arch, pretrained=None)
        kind, source = "random", {"seed": seed}
        LOG.warning("CLIP %s uses RANDOM weights (seed %d): maps and labels are not meaningful", arch, seed)
    elif weights == "openai":
        try:
            model = open_clip.create_model(arch, pretrained="openai")
        except RuntimeError as error:
            raise RuntimeError(
                f"could not download OpenAI CLIP weights for {arch} ({error}). Without internet, download "
                f"OpenAI's {arch.removesuffix(QUICKGELU_SUFFIX)}.pt elsewhere and pass --clip-weights /path/to/it"
            ) from None
        kind, source = "openai", {}
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"CLIP weights file '{path}' does not exist (expected a {arch} checkpoint, "
                                    "e.g. OpenAI's ViT-B-16.pt, or use --clip-weights openai)")
        model = open_clip.create_model(arch, pretrained=None)
        try:
            model.load_state_dict(read_state_dict(path), strict=True)
        except RuntimeError as error:
            first = str(error).splitlines()[1:3]
            raise ValueError(f"{path}: weights do not match the {arch} architecture ({' '.join(first)}); "
                             "pass --clip-model with the checkpoint's architecture") from None
        kind, source = "file", {"path": str(path), "sha256": file_sha256(path)}
    activation = model_activation(model)
    if is_openai_weights(weights) and activation != QuickGELU.__name__:
        raise ValueError(f"CLIP model {arch} builds {activation}, but OpenAI's weights ({weights}) need QuickGELU")
    if kind == "file" and not is_openai_weights(weights):
        LOG.info("%s is a plain state dict, which does not record its activation: loaded into --clip-model %s (%s). "
                 "Name the config the weights were trained with: ViT-B-16-quickgelu for OpenAI's ViT-B/16, ViT-B-16 "
                 "for GELU-trained ones such as LAION's", weights, arch, activation)
    model = model.to(device).eval().requires_grad_(False)
    return model, open_clip.get_tokenizer(arch), {"kind": kind, "model": arch, "activation": activation, **source}
