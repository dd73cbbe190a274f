#!/usr/bin/env python3
"""Inspection panels, HTML contact sheet and the label-quality report of stage-one shards. See docs/viewing.md or
--help."""
if __name__ == "__main__":
    import _venv  # noqa: F401  (re-runs this tool inside the project's virtual environment)
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pseudolabel.viewer.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
