"""Inspection of stage-one outputs: per-image panels (``visualize``) and the static HTML contact sheet
(``html_report``)."""
