"""Stage two of the CEP toolkit: train an MMSegmentation model on the stage-one shards."""
import pseudolabel  # noqa: F401  (applies the compatibility shims before mmseg is imported)
