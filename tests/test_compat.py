"""The compatibility shims: each incompatibility is fixed where present and the shims are idempotent."""
import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from pseudolabel import compat


def test_apply_is_idempotent():
    assert compat.apply() == compat.apply()


def test_torchvision_imports_and_nms_matches_greedy_definition():
    import torchvision  # noqa: F401
    from torchvision.ops import batched_nms, nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 9, 9]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (0.95) suppresses box 0 (IoU 0.81) and box 1 (IoU 0.67); box 2 is disjoint.
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.9).tolist() == [3, 0, 1, 2]
    # per group: {0, 2} are disjoint; in {1, 3} box 3 suppresses box 1 (IoU 64/117 = 0.55)
    assert sorted(batched_nms(boxes, scores, torch.tensor([0, 1, 0, 1]), 0.5).tolist()) == [0, 2, 3]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_nms_kernel_agrees_with_brute_force():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=generator) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(40, 2, generator=generator) * 20], dim=1)
    scores = torch.rand(40, generator=generator)
    keep = compat._nms_cpu(boxes, scores, 0.3).tolist()
    from torchvision.ops import box_iou

    iou = box_iou(boxes, boxes)
    expected = []
    for i in scores.argsort(descending=True).tolist():
        if all(iou[i, j] <= 0.3 for j in expected):
            expected.append(i)
    assert keep == expected


def test_mmseg_models_import_and_compiled_ops_fail_clearly():
    import mmseg.models  # noqa: F401  (fails with "No module named mmcv._ext" without the shim)

    ext = sys.modules["mmcv._ext"]
    if not isinstance(ext, compat._MissingExtension):
        pytest.skip("full mmcv installed: the placeholder is not used")
    with pytest.raises(RuntimeError, match="mmcv-lite"):
        ext.point_sample_forward()
    from mmengine.utils.dl_utils import mmcv_full_available

    assert mmcv_full_available() is False


def test_mmengine_resumes_a_training_state_checkpoint(tmp_path):
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    path = tmp_path / "epoch_1.pth"
    state = {"message_hub": {"log": HistoryBuffer([1.0, 2.0], [1, 1]), "lr": np.float64(0.01),
                             "shape": np.zeros((2, 3), np.int64), "dtype": np.dtype("float32")},
             "state_dict": {"w": torch.ones(2)}}
    torch.save(state, path)
    for loaded in (CheckpointLoader.load_checkpoint(str(path), map_location="cpu"), torch.load(path)):
        hub = loaded["message_hub"]
        assert hub["log"].mean() == 1.5 and hub["log"].statistics("max") == 2.0  # its pickled methods work
        assert hub["lr"] == 0.01 and hub["shape"].shape == (2, 3) and hub["dtype"] == np.float32


@pytest.mark.parametrize("module, library", [("pseudolabel.cam.clip_models", "open_clip"),
                                             ("pseudolabel.sam.predictor", "segment_anything"),
                                             ("pseudolabel.sam.fused_attention", "segment_anything"),
                                             ("segtrain", "mmseg.models")])
def test_each_module_importing_a_torchvision_user_applies_the_shims_itself(module, library):
    # a fresh interpreter: the module is the first thing imported, then the library it wraps
    code = f"import {module}, {library}; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


SUBPACKAGES = ("pseudolabel.cam", "pseudolabel.sam", "pseudolabel.storage", "pseudolabel.viewer",
               "pseudolabel.datasets", "pseudolabel.evaluation", "pseudolabel.ablation")
LIGHT_SUBPACKAGES = ("pseudolabel.storage", "pseudolabel.viewer", "pseudolabel.datasets", "pseudolabel.evaluation")
LIGHT_MODULES = ("pseudolabel", *SUBPACKAGES, "pseudolabel.evaluation.cli", "pseudolabel.storage.format",
                 "pseudolabel.storage.shards", "pseudolabel.storage.run_store", "pseudolabel.storage.check",
                 "pseudolabel.storage.export", "pseudolabel.storage.run_log", "pseudolabel.viewer.visualize",
                 "pseudolabel.viewer.html_report", "pseudolabel.viewer.quality_report", "pseudolabel.viewer.cli",
                 "pseudolabel.cli_options")
HEAVY_MODULES = ("torch", "torchvision", "mmengine", "mmcv", "mmseg", "open_clip", "segment_anything",
                 "pseudolabel.compat", "pseudolabel.config")


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules loaded by ``code`` in a fresh interpreter."""
    code += f"; import sys; print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return eval(out.stdout.strip().splitlines()[-1])


def test_the_evaluator_the_storage_layer_and_every_subpackage_import_without_torch_or_the_shims():
    assert heavy_modules_after(f"import {', '.join(LIGHT_MODULES)}") == []


def test_the_public_api_of_the_light_subpackages_needs_no_torch():
    # every exported name resolved, i.e. each module behind the storage, viewer, datasets and evaluation APIs imported
    code = "; ".join(f"import {p}; [getattr({p}, name) for name in {p}.__all__]" for p in LIGHT_SUBPACKAGES)
    assert heavy_modules_after(code) == []


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_subpackage_exports_its_public_api(package):
    module = importlib.import_module(package)
    assert module.__doc__ and len(module.__doc__.split()) > 25   # its one-paragraph description
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None and name in dir(module)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018
