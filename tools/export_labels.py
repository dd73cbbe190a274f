#!/usr/bin/env python3
"""Export stage-one labels as palette PNGs (VOC layout or flat) and CLIP-ES .npy maps. See docs/export.md or --help."""
if __name__ == "__main__":
    import _venv  # noqa: F401  (re-runs this tool inside the project's virtual environment)
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pseudolabel.storage.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
