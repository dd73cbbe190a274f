"""Checkpoints load without running code from them (docs/stage_two.md#checkpoint-safety).

Every ``torch.load`` of the project runs with ``weights_only=True``: :func:`forbid_code_in_checkpoints` makes it the
rule for the whole process (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``), so the libraries' own loaders (mmengine's, local and
remote, open_clip's) follow it too. torch's safe unpickler restores tensors, numbers, strings and containers; the only
other things allowed are what mmengine's training state holds (:func:`allow_training_state`): its ``HistoryBuffer``
of logged values, numpy arrays, scalars and dtypes, and ``getattr`` restricted to the buffer's statistics methods. A
checkpoint that needs anything else is refused with one line (:class:`CheckpointRefusedError`); nothing in it runs.
"""
from __future__ import annotations

import inspect
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (one line naming the file)."""


class CheckpointRefusedError(CheckpointError):
    """A checkpoint that holds more than weights and training state; nothing of it was run."""


def forbid_code_in_checkpoints() -> None:
    """Make ``weights_only=True`` the rule of every ``torch.load`` in this process (and its child processes)."""
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"


_OUTSIDE = " is not part of mmengine's training state"
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6")


def _reason(error: Exception) -> str:
    """The line of torch's safe-unpickler message that says what went wrong (the rest is the same for every file)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith(_BOILERPLATE)), lines[0] if lines else repr(error))


def _unsafe_globals(path: str | Path | None, error: Exception) -> list[str]:
    """What the file refers to outside the allow-list (globals, or a ``getattr`` the allow-list refused)."""
    refused_getattr = re.findall(rf"(getattr\(.*?\)){_OUTSIDE}", str(error))
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) + refused_getattr
    except Exception:  # noqa: BLE001 - no such file or not a torch.save zip archive: the unpickler's message
        return re.findall(r"GLOBAL (\S+)", str(error)) + refused_getattr


def refusal(path: str | Path | None, error: Exception) -> CheckpointError:
    """The one-line error for ``path`` (None: a checkpoint a library fetched), whose safe loading failed with
    ``error``: :class:`CheckpointRefusedError` when it refers to objects outside the allow-list, else a
    :class:`CheckpointError` saying it cannot be read."""
    checkpoint = f"checkpoint '{path}'" if path else "a checkpoint"
    names = _unsafe_globals(path, error)
    if not names:
        return CheckpointError(f"cannot read {checkpoint} ({_reason(error)}); is it truncated, or not a PyTorch "
                               "checkpoint of weights?")
    return CheckpointRefusedError(
        f"refused to load {checkpoint}: it refers to {', '.join(names[:4])}, which is neither weights nor training "
        "state and could run code while loading. Use a checkpoint of tensors (a state dict), the official file, or "
        "one written by tools/train_seg.sh")


def load_weights(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``. A refused file raises :class:`CheckpointRefusedError`, an unreadable
    one (truncated, not a PyTorch file) :class:`CheckpointError`; both one line naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise refusal(path, error) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint '{path}' ({_reason(error)}); is it truncated, or not a "
                              "PyTorch checkpoint of weights?") from None


def _numpy_reconstruction() -> list:
    """numpy's pickle helpers: array reconstruction, scalars, dtypes and the dtype classes of numpy >= 1.25."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    dtype_classes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGUSV"] + [type(np.dtype("O"))]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *set(dtype_classes) - {np.dtype}]


def allow_training_state() -> None:
    """Add what mmengine's training checkpoints hold (resume state, logged history) to torch's safe unpickler."""
    from mmengine.logging import HistoryBuffer

    def statistics_method(owner, name: str):
        """``getattr`` as HistoryBuffer pickles its statistics methods (``HistoryBuffer.mean`` ...), nothing else."""
        if owner is not HistoryBuffer or name.startswith("_") or not inspect.isfunction(vars(owner).get(name)):
            owner_name = getattr(owner, "__name__", type(owner).__name__)
            raise pickle.UnpicklingError(f"getattr({owner_name}, {name!r}){_OUTSIDE}")
        return getattr(owner, name)

    torch.serialization.add_safe_globals([HistoryBuffer, *_numpy_reconstruction(),
                                          (statistics_method, "builtins.getattr")])
