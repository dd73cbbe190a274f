"""Imported first by the Python tools and benchmarks: re-run the script inside the project's virtual environment
(created on first use by ``tools/_env.sh``) with the runtime settings that script exports, so ``tools/evaluate.py ...``
works from any shell and benchmarks measure what the entry scripts run.

``CEP_SYSTEM_PYTHON=1`` keeps the running interpreter as it is (a machine without internet whose Python already has
the packages, e.g. ``bench/gpu_check.sh`` on a GPU machine)."""
import os
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
VENV = Path(os.environ.get("CEP_VENV", TOOLS.parent / ".venv"))

if os.environ.get("CEP_SYSTEM_PYTHON") != "1" and (
        Path(sys.prefix).resolve() != VENV.resolve() or "THP_MEM_ALLOC_ENABLE" not in os.environ):
    os.execvp("bash", ["bash", "-c", 'source "$0" && exec python "$@"', str(TOOLS / "_env.sh"),
                       str(Path(sys.argv[0]).resolve()), *sys.argv[1:]])
