"""Looking at stage-one output: per-image panels of photo, localization maps, Y0, refined label and GT
(``visualize``: ``render_panel``), a folder of them with the images chosen by id or by lowest IoU against GT
(``panels``), the photo behind a record (``photos``), the static HTML contact sheet (``html_report``), the
label-quality report that needs no ground truth (``quality_report``: ``write_report``) and their command line
(``cli``, ``tools/view_labels.py``, docs/viewing.md). Nothing here imports torch; the public names below import their
module on first use (``pseudolabel/lazy_exports.py``)."""
from pseudolabel.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "visualize": ("class_coverage", "colorize_labels", "heatmap", "image_iou", "render_panel", "save_panel"),
    "html_report": ("ReportEntry", "render_html", "write_html"),
    "quality_report": ("QualitySummary", "write_report"),
    "photos": ("PhotoFinder",),
    "panels": ("GroundTruth", "panel_name", "worst_images", "write_panels"),
})
