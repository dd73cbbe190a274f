"""The paper's ablation tables as one command (``tools/ablate.sh``, docs/ablations.md): sweep files and rows of
stage-one settings (``sweep``: ``SweepBuilder``, ``Sweep``), the report with tools/evaluate.py's numbers (``report``:
``write_report``) and the command line (``cli``: ``run``, ``SweepRun``), which labels every row with stage one's own
loop and labeller (``pseudolabel.generate.label_runs``, ``pseudolabel.pipeline.Labeller``). The public names import their module (torch) on first use
(``pseudolabel/lazy_exports.py``)."""
from pseudolabel.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "sweep": ("Row", "Sweep", "SweepBuilder", "SweepError", "Table", "shipped_sweeps", "sweep_file"),
    "report": ("write_report",),
    "cli": ("SweepRun", "run"),
})
