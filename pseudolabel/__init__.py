"""Stage one of the CEP toolkit: Skip-CAM localization maps and SAM-refined pseudo labels.

Importing the package has no side effect: the compatibility shims (``pseudolabel.compat``) are applied by the modules
that import torchvision, mmcv or mmseg users, so the evaluator and the storage layer load without torch.
"""

__version__ = "0.1.0"
