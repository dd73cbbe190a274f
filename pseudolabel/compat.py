"""Compatibility shims for the pinned stack (see ``requirements.txt``).

Three known incompatibilities are handled here, each a no-op where it is not needed:

1. ``torchvision`` CUDA wheel on a CPU-only torch: its compiled library does not load, and
   ``import torchvision`` then fails with ``operator torchvision::nms does not exist``. We define the
   missing ``torchvision::nms`` / ``torchvision::qnms`` schemas before torchvision is imported and give
   ``nms`` a pure-PyTorch CPU kernel (``ops.nms`` / ``batched_nms`` work; ``roi_align`` uses torchvision's
   own Python fallback). Image decoding through ``torchvision.io`` stays unavailable
   (the project decodes with PIL).
2. ``mmsegmentation`` with ``mmcv-lite``: a few mmseg modules import ``mmcv.ops`` unconditionally, which
   needs the compiled ``mmcv._ext``. We register a placeholder ``mmcv._ext`` whose functions raise a clear
   error when called. It switches itself off when full mmcv is installed.
3. Checkpoints: every ``torch.load`` runs with ``weights_only=True`` (``pseudolabel/checkpoints.py``), and
   mmengine 0.10.7's training state (``HistoryBuffer``, numpy scalars and dtypes), which the safe unpickler rejects
   by default, is allow-listed so that resume works; mmengine's local-file loader refuses anything else in one line.

:func:`apply` also hides the stack's warnings that are not the user's business (``pseudolabel/console.py``).

Call :func:`apply` before importing torchvision, mmcv or mmseg or a library that imports them. The modules that do
call it first: ``pseudolabel/cam/clip_models.py`` (open_clip), ``pseudolabel/sam/models.py`` and
``pseudolabel/sam/predictor.py`` (segment_anything) and ``segtrain/__init__.py`` (mmseg); ``import pseudolabel``
alone applies nothing.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

from pseudolabel.console import hide_foreign_warnings

_STATE = {"torchvision": False, "mmcv_ext": False, "checkpoints": False}


def _torchvision_ops_missing() -> bool:
    """True when torchvision is installed but its compiled ops library cannot be loaded."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return False
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - probing the op registry
        return False
    except (AttributeError, RuntimeError):
        pass
    spec = importlib.util.find_spec("torchvision")
    from pathlib import Path

    for location in spec.submodule_search_locations or []:
        for lib in Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
                return False
            except (OSError, RuntimeError):
                return True
    return True


def _nms_cpu(dets, scores, iou_threshold: float):
    """Greedy non-maximum suppression, the semantics of ``torchvision.ops.nms``.

    Hand-written because it stands in for torchvision's compiled kernel when that cannot load.
    """
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1)
        yy1 = torch.maximum(y1[i], y1)
        xx2 = torch.minimum(x2[i], x2)
        yy2 = torch.minimum(y2[i], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _patch_torchvision() -> None:
    if not _torchvision_ops_missing():
        return
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", _nms_cpu, "CPU")
    _STATE["torchvision"] = lib  # keep the Library alive, or its definitions are dropped
    import torchvision.ops.boxes

    # ``ops.nms`` asserts the compiled library before dispatching; our kernel now serves the op.
    # Other ops (roi_align, ...) keep torchvision's own pure-Python fallback.
    torchvision.ops.boxes._assert_has_ops = lambda: None


class _MissingExtension(types.ModuleType):
    """Placeholder for ``mmcv._ext``: any compiled function raises a clear error when called."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def _unavailable(*args, **kwargs):
            raise RuntimeError(
                f"mmcv compiled op '{name}' is not available with mmcv-lite. Use a model that needs no "
                "compiled mmcv op (DeepLabV3/V3+, FCN, PSPNet do not), or install full mmcv: "
                "pip install --no-build-isolation mmcv==2.1.0"
            )

        return _unavailable


def _patch_mmcv_ext() -> None:
    if "mmcv._ext" in sys.modules or importlib.util.find_spec("mmcv") is None:
        return
    if importlib.util.find_spec("mmcv._ext") is not None:
        return  # full mmcv: nothing to do
    module = _MissingExtension("mmcv._ext")
    # A real ModuleSpec: mmengine's mmcv_full_available() calls pkgutil.find_loader on it.
    module.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None)
    sys.modules["mmcv._ext"] = module
    _STATE["mmcv_ext"] = True


def _safe_checkpoint_loading() -> None:
    from pseudolabel.checkpoints import allow_training_state, forbid_code_in_checkpoints, load_weights

    forbid_code_in_checkpoints()
    _STATE["checkpoints"] = True
    if importlib.util.find_spec("mmengine") is None:
        return
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_local_safely(filename, map_location=None):
        """A local checkpoint: weights and mmengine training state only, a one-line refusal for anything else."""
        from pathlib import Path

        if not Path(filename).expanduser().is_file():
            raise FileNotFoundError(f"checkpoint '{filename}' does not exist")
        return load_weights(Path(filename).expanduser(), map_location)

    allow_training_state()
    CheckpointLoader.register_scheme(prefixes="", force=True)(load_local_safely)


def apply() -> dict:
    """Apply every shim that is needed here; safe to call repeatedly. Returns what was applied."""
    hide_foreign_warnings()   # before mmengine (imported below) imports pkg_resources
    if not _STATE["torchvision"]:
        _patch_torchvision()
    if not _STATE["mmcv_ext"]:
        _patch_mmcv_ext()
    if not _STATE["checkpoints"]:
        _safe_checkpoint_loading()
    return {key: bool(value) for key, value in _STATE.items()}
