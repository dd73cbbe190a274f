"""Stage one's second half, Y0 -> refined label (``refine``), the SAM registry and checkpoints (``models``), and the
batched single-point predictor with its shared-image mask decoder (``predictor``, ``decoder``). The public names
below import their module (torch, segment_anything) on first use, so ``import pseudolabel.sam`` alone loads neither
(``pseudolabel/lazy_exports.py``)."""
from pseudolabel.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "refine": ("ImageEmbedding", "RefinedBatch", "Refinement", "SAMInput", "SAMRefineConfig", "SAMRefiner", "grid_points"),
    "models": ("SAM_VARIANTS", "cache_dir", "download_checkpoint", "load_sam", "register_sam_variant"),
    "predictor": ("BatchedPointPredictor", "MaskResize"),
    "decoder": ("SharedImageMaskDecoder",),
})
