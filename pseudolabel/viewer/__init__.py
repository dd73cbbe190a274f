"""Inspection of stage-one outputs: per-image panels (``visualize``), the static HTML contact sheet (``html_report``),
the label-quality report that needs no ground truth (``quality_report``) and their command line (``cli``)."""
