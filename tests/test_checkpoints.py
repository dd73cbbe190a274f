"""No code from checkpoints: a crafted pickle is refused in one line by every loader (stage one's SAM and CLIP, stage
two's mmengine loader, and a plain torch.load in a process that applied the shims) and nothing in it runs; the
allow-list for mmengine's training state is exactly as wide as it must be."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from pseudolabel.checkpoints import CheckpointRefusedError, load_weights


class _Payload:
    """Unpickling this runs ``exec``: it creates the file ``marker`` (the evidence that code ran)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


class _Getattr:
    """Unpickling this calls ``getattr(owner, name)``, as mmengine's HistoryBuffer pickles its methods."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


@pytest.fixture
def crafted(tmp_path):
    """A checkpoint that looks like SAM's (a state dict) plus the payload; returns (checkpoint, marker)."""
    marker = tmp_path / "marker"
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1), "evil": _Payload(marker)}, path)
    return path, marker


def assert_refused_in_one_line(error, path, marker):
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "builtins.exec" in message
    assert not marker.exists(), "the crafted checkpoint ran code"


def test_plain_torch_load_is_forced_safe_in_this_process(crafted):
    path, marker = crafted
    assert os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"  # tests/conftest.py applies the shims
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=False)  # even asked for explicitly
    assert not marker.exists()


def test_sam_loader_refuses_a_crafted_checkpoint(crafted):
    from pseudolabel.sam.models import load_sam

    path, marker = crafted
    with pytest.raises(CheckpointRefusedError) as error:
        load_sam("vit_b", str(path))
    assert_refused_in_one_line(error, path, marker)


def test_clip_loader_refuses_a_crafted_checkpoint(crafted):
    from pseudolabel.cam.clip_models import load_clip

    path, marker = crafted
    with pytest.raises(CheckpointRefusedError) as error:
        load_clip("ViT-T-16-cep-test", str(path))
    assert_refused_in_one_line(error, path, marker)


def test_mmengine_local_loader_refuses_a_crafted_checkpoint(crafted):
    from mmengine.runner.checkpoint import CheckpointLoader

    path, marker = crafted
    with pytest.raises(CheckpointRefusedError) as error:
        CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    assert_refused_in_one_line(error, path, marker)


def test_getattr_is_allowed_for_the_history_buffer_methods_only(tmp_path):
    from mmengine.logging import HistoryBuffer

    good = tmp_path / "good.pth"
    torch.save({"mean": _Getattr(HistoryBuffer, "mean")}, good)
    assert load_weights(good)["mean"] is HistoryBuffer.mean
    for owner, name in ((HistoryBuffer, "__class__"), (HistoryBuffer, "_statistics_methods"),
                        (HistoryBuffer, "__init__"), (np.ndarray, "tofile")):
        bad = tmp_path / "bad.pth"
        torch.save({"x": _Getattr(owner, name)}, bad)
        with pytest.raises(CheckpointRefusedError):
            load_weights(bad)


def test_unreadable_checkpoint_is_one_line(tmp_path):
    from pseudolabel.sam.models import load_sam

    path = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="cannot read checkpoint") as error:
        load_sam("vit_b", str(path))
    assert "\n" not in str(error.value) and str(path) in str(error.value)
