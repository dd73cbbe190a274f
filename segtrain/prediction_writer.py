"""An mmengine evaluator that writes predictions as palette PNGs, optionally after DenseCRF."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from mmengine.evaluator import BaseMetric
from mmseg.registry import METRICS

from pseudolabel.classes import pascal_palette
from pseudolabel.image_io import read_rgb, write_label_png
from segtrain.crf import CRFConfig, dense_crf


@METRICS.register_module()
class PalettePredictionWriter(BaseMetric):
    """Write ``<out_dir>/<image stem>.png`` (PASCAL palette) for every test image; scoring is done afterwards by
    ``pseudolabel.evaluation`` on the written files (so CRF and non-CRF results are scored the same way).

    Args:
        out_dir: folder for the PNGs (created).
        crf: run DenseCRF on the (TTA-averaged) softmax probabilities before the argmax.
        crf_config: ``CRFConfig`` fields as a dict (default: WeCLIP's parameters).
    """

    default_prefix = "pred"

    def __init__(self, out_dir: str, crf: bool = False, crf_config: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.crf = CRFConfig(**(crf_config or {})) if crf else None
        self.palette = pascal_palette()

    def _labels(self, sample: dict) -> np.ndarray:
        if self.crf is None:
            return sample["pred_sem_seg"]["data"].squeeze(0).cpu().numpy()
        if "seg_probs" in sample:
            probs = sample["seg_probs"]["data"]
        else:
            probs = sample["seg_logits"]["data"].softmax(dim=0)
        probs = dense_crf(read_rgb(sample["img_path"]), probs.float().cpu().numpy(), self.crf)
        return probs.argmax(axis=0)

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            path = self.out_dir / f"{Path(sample['img_path']).stem}.png"
            write_label_png(path, self._labels(sample).astype(np.uint8), self.palette)
            self.results.append(str(path))

    def compute_metrics(self, results: list) -> dict:
        return {"written": len(results)}
