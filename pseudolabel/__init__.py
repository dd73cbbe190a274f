"""Stage one of the CEP toolkit: Skip-CAM localization maps and SAM-refined pseudo labels."""
from pseudolabel import compat as _compat

_compat.apply()  # must run before torchvision / mmcv / mmseg are imported anywhere

__version__ = "0.1.0"
