"""The paper's ablation tables as one command (``tools/ablate.sh``, docs/ablations.md): sweep files and rows
(``sweep``), the report (``report``) and the command line (``cli``), which labels every row with stage one's own loop
and labeller. The public names import their module (torch) on first use (``pseudolabel/lazy_exports.py``)."""
from pseudolabel.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "sweep": ("Row", "Sweep", "SweepBuilder", "SweepError", "Table", "shipped_sweeps", "sweep_file"),
    "report": ("write_report",),
    "cli": ("SweepRun", "run"),
})
