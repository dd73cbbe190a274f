"""Multi-scale + flip test-time augmentation through mmseg's own ``SegTTAModel`` and ``TestTimeAug``.

mmseg's TTA averages the softmax *probabilities* of the augmented views (WeCLIP averages logits); the mean
probabilities are kept as ``seg_probs`` so DenseCRF can run on them.
"""
from __future__ import annotations

import torch
from mmengine.structures import PixelData
from mmseg.models import SegTTAModel
from mmseg.registry import MODELS


@MODELS.register_module()
class SegTTAWithProbs(SegTTAModel):
    """``SegTTAModel`` (mean of softmax over views, then argmax) that also stores the mean as ``seg_probs``."""

    def merge_preds(self, data_samples_list):
        merged = super().merge_preds(data_samples_list)
        for sample, views in zip(merged, data_samples_list):
            probs = torch.stack([view.seg_logits.data.softmax(dim=0) for view in views]).mean(dim=0)
            sample.set_data({"seg_probs": PixelData(data=probs)})
        return merged


def tta_pipeline(scale: tuple[int, int], ratios: tuple[float, ...] = (1.0, 0.75), flip: bool = True) -> list[dict]:
    """Test pipeline: every ``ratio`` of the single-scale ``Resize(scale, keep_ratio=True)``, each with and without
    a horizontal flip (mmseg's ``TestTimeAug``)."""
    if not ratios or min(ratios) <= 0:
        raise ValueError(f"--scales must be positive numbers, got {ratios}")
    resizes = [dict(type="Resize", scale=(round(scale[0] * r), round(scale[1] * r)), keep_ratio=True) for r in ratios]
    flips = [dict(type="RandomFlip", prob=0.0, direction="horizontal")]
    if flip:
        flips.append(dict(type="RandomFlip", prob=1.0, direction="horizontal"))
    return [dict(type="LoadImageFromFile"),
            dict(type="TestTimeAug", transforms=[resizes, flips, [dict(type="PackSegInputs")]])]


def wrap_tta(model_cfg: dict) -> dict:
    """The TTA model config around a segmentor config."""
    return dict(type="SegTTAWithProbs", module=model_cfg)
