"""The Python tools and benchmarks start from any interpreter: they switch to the project venv before importing
anything outside the standard library (``tools/_venv.py``)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    str(path.relative_to(REPO))
    for path in [*REPO.glob("bench/bench_*.py"), *REPO.glob("tools/*.py")]
    if "_venv" in path.read_text() and path.name != "_venv.py"
)


def test_every_benchmark_is_covered():
    assert {Path(s).name for s in SCRIPTS} >= {p.name for p in REPO.glob("bench/bench_*.py")}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_from_an_interpreter_without_the_venv_packages(script):
    # `-S` leaves out site-packages, as a system python without torch or numpy would; the switch must come first.
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env["CEP_VENV"] = sys.prefix
    result = subprocess.run([sys.executable, "-S", script, "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
