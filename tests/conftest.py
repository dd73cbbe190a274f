"""Test-wide settings: never reach a model hub, keep torch single-threaded-friendly on 2 cores."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pseudolabel  # noqa: E402,F401  (compatibility shims before any test imports torchvision)
