"""Stage one of the CEP toolkit: Skip-CAM localization maps and SAM-refined pseudo labels.

Subpackages, one per step (docs/design.md#layout-and-data-flow): ``cam`` (image -> localization maps -> Y0), ``sam``
(Y0 -> refined label), ``storage`` (the HDF5 shards and their readers), ``viewer`` (panels and reports), beside
``datasets`` (images, tags, GT) and ``evaluation`` (mIoU, mBIoU, confidence intervals); ``generate`` runs stage one.

Importing the package has no side effect: the compatibility shims (``pseudolabel.compat``) are applied by the modules
that import torchvision, mmcv or mmseg users, so the evaluator and the storage layer load without torch.
"""

__version__ = "0.1.0"
