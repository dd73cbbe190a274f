"""Imported first by the Python tools: re-run the tool inside the project's virtual environment (created on first use
by ``tools/_env.sh``), so ``tools/evaluate.py ...`` works from any shell."""
import os
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
VENV = Path(os.environ.get("CEP_VENV", TOOLS.parent / ".venv"))

if Path(sys.prefix).resolve() != VENV.resolve():
    os.execvp("bash", ["bash", "-c", 'source "$0" && exec python "$@"', str(TOOLS / "_env.sh"),
                       str(Path(sys.argv[0]).resolve()), *sys.argv[1:]])
