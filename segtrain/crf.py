"""DenseCRF post-processing of segmenter probabilities, with WeCLIP's test-time parameters
(docs/stage_two.md#test-tta-crf)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax


@dataclass
class CRFConfig:
    """DenseCRF parameters; defaults are WeCLIP's ``test_msc_flip_voc.py crf_proc``."""

    iterations: int = field(default=10, metadata={"help": "mean-field iterations"})
    gaussian_sxy: float = field(default=3, metadata={"help": "spatial std of the smoothness kernel (pixels)"})
    gaussian_compat: float = field(default=3, metadata={"help": "weight of the smoothness kernel"})
    bilateral_sxy: float = field(default=64, metadata={"help": "spatial std of the appearance kernel (pixels)"})
    bilateral_srgb: float = field(default=5, metadata={"help": "colour std of the appearance kernel"})
    bilateral_compat: float = field(default=4, metadata={"help": "weight of the appearance kernel"})


def dense_crf(image: np.ndarray, probs: np.ndarray, config: CRFConfig | None = None) -> np.ndarray:
    """Refine softmax probabilities ``(C, H, W)`` on the RGB ``image`` ``(H, W, 3) uint8``; returns ``(C, H, W)``
    float32 marginals (argmax them for a label map)."""
    config = config or CRFConfig()
    num_classes, height, width = probs.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f"CRF: image {image.shape[:2]} and probabilities {(height, width)} differ in size")
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=config.gaussian_sxy, compat=config.gaussian_compat)
    crf.addPairwiseBilateral(sxy=config.bilateral_sxy, srgb=config.bilateral_srgb,
                             rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=config.bilateral_compat)
    marginals = crf.inference(config.iterations)
    return np.asarray(marginals, np.float32).reshape(num_classes, height, width)
