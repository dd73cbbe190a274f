"""Stage two of the CEP toolkit: train an MMSegmentation model on the stage-one shards."""
from pseudolabel import compat

compat.apply()  # before mmseg imports mmcv and torchvision

from segtrain.datasets import (  # noqa: E402  (registers the datasets)
    ClassSetSegDataset,
    ShardMismatchError,
    ShardPseudoLabelDataset,
    check_shards,
)
from segtrain.prediction_writer import PalettePredictionWriter  # noqa: E402  (registers the evaluator)
from segtrain.transforms import LoadShardLabel  # noqa: E402  (registers the transform)
from segtrain.tta import SegTTAWithProbs  # noqa: E402  (registers the TTA model)

__all__ = ["ClassSetSegDataset", "LoadShardLabel", "PalettePredictionWriter", "SegTTAWithProbs", "ShardMismatchError",
           "ShardPseudoLabelDataset", "check_shards"]
