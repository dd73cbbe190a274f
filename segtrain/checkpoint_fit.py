"""A checkpoint must fit the model it is loaded into: mmengine loads with ``strict=False`` and only logs a warning, so a
checkpoint of another model (or of nothing) would leave the model randomly initialised and the run would go on."""
from __future__ import annotations

import re

from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

SHOWN = 5  # keys named in the error, per kind of mismatch


class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights do not match the model (missing, unexpected or differently shaped keys)."""


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def check_checkpoint_fits(model: nn.Module, checkpoint: str, what: str) -> None:
    """Raise :class:`CheckpointMismatchError` naming the missing, unexpected and differently shaped keys when the
    weights in ``checkpoint`` (loaded safely, as mmengine will load them) do not match ``model`` exactly. ``what``
    names the checkpoint's role in the message (e.g. ``--resume``)."""
    loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location="cpu")
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {}
    state = {re.sub(r"^module\.", "", key): value for key, value in state.items()}  # as mmengine's revise_keys
    target = model.module if is_model_wrapper(model) or isinstance(model, BaseTTAModel) else model
    expected = target.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = sorted(key for key in expected.keys() & state.keys()
                      if tuple(getattr(state[key], "shape", ())) != tuple(expected[key].shape))
    if missing or unexpected or reshaped:
        parts = [f"{len(keys)} {kind} ({_listed(keys)})" for kind, keys in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if keys]
        raise CheckpointMismatchError(
            f"{what} checkpoint '{checkpoint}' does not fit the model of the config: keys {'; '.join(parts)}. "
            "Pass the checkpoint this config trained (or the config it was trained with, --config)")
