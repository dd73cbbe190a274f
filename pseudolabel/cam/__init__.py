"""Stage one's first half, image -> localization maps -> initial label Y0: Skip-CAM on a frozen CLIP ViT
(``skipcam``: ``SkipCAM``, its config ``SkipCAMConfig``, the frozen blocks' per-image ``FrozenFeatures``,
per-image ``CAMOutput`` and several images' ``CAMBatch``), its text prompts (``prompts``),
class-aware attention affinity (``caa``), PAR (``par``), and the CLIP model registry and weights (``clip_models``:
``load_clip``). The public names below import their module (torch, open_clip) on first use, so ``import
pseudolabel.cam`` alone loads neither (``pseudolabel/lazy_exports.py``)."""
from pseudolabel.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "skipcam": ("CAMBatch", "CAMOutput", "DATASET_DEFAULTS", "FrozenFeatures", "SkipCAM", "SkipCAMConfig"),
    "clip_models": ("DEFAULT_CLIP_MODEL", "available_models", "clip_architecture", "load_clip"),
    "prompts": ("PROMPT_SETS",),
    "par": ("PARConfig",),
})
