#!/usr/bin/env python3
"""Check a stage-one shard directory: every shard opens, layout and labels are consistent, the manifest's images are
all present exactly once. Prints a summary; exit status 1 on any problem. See docs/viewing.md or --help."""
if __name__ == "__main__":
    import _venv  # noqa: F401  (re-runs this tool inside the project's virtual environment)
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pseudolabel.storage.check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
