"""Test-wide settings: never reach a model hub, keep torch single-threaded-friendly on 2 cores; the tests' tiny
models registered (tests/fixtures/tiny_models.py)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pseudolabel import compat  # noqa: E402

compat.apply()  # tests import torchvision, segment_anything and mmseg directly
from tests.fixtures.tiny_models import register_tiny_models  # noqa: E402

register_tiny_models()
