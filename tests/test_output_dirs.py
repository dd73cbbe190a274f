"""Every tool that writes a folder refuses an unusable one in one line naming the path, exit status 2, before writing
anything: a path that is a file, a path under a file, an immutable folder (EPERM) and, for a user other than root, a
folder without write permission (EACCES)."""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pseudolabel.exits import OutputError, prepare_output_dir
from tests.fixtures.outputs import one_error_line
from tests.fixtures.tiny_datasets import make_voc
from tests.fixtures.viewer_shards import REPO, make_voc_run

TINY = ["--clip-model", "ViT-T-16-cep-test-quickgelu", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu"]
TRAIN_CONFIG = REPO / "segtrain" / "configs" / "deeplabv3plus_r18-d8_1xb2-20iter_demo-pseudo-64x64.py"
SWEEP = {"tables": [{"name": "skips", "title": "K", "rows": ["num_skips=0"]}]}


def immutable_supported(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    ok = shutil.which("chattr") and subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["chattr", "-i", str(probe)], check=True)
    probe.rmdir()
    return bool(ok)


@contextlib.contextmanager
def unusable(kind: str, tmp_path: Path):
    """An output path of ``kind`` that no tool can use, and the path its error must name."""
    if kind == "a file":
        (tmp_path / "taken").write_text("x")
        yield tmp_path / "taken", tmp_path / "taken"
    elif kind == "under a file":
        (tmp_path / "taken").write_text("x")
        yield tmp_path / "taken" / "sub", tmp_path / "taken"
    elif kind == "immutable":
        if not immutable_supported(tmp_path):
            pytest.skip("chattr +i needs root on a file system with attributes")
        folder = tmp_path / "frozen"
        folder.mkdir()
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield folder, folder
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into any folder whatever its permissions")
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
        try:
            yield folder / "out", folder / "out"
        finally:
            folder.chmod(0o700)


KINDS = ("a file", "under a file", "immutable", "no write permission")


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_output_dir_names_the_path_and_the_fix(kind, tmp_path):
    with unusable(kind, tmp_path) as (out, named):
        with pytest.raises(OutputError) as raised:
            prepare_output_dir(out, "--out")
        message = str(raised.value)
        assert f"'{named}'" in message and "\n" not in message
        assert ("name another --out" in message) if kind in ("a file", "under a file") else \
            ("fix permissions" in message)
        assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".write-test")]


def test_prepare_output_dir_creates_the_folder_and_leaves_it_empty(tmp_path):
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and not list(out.iterdir())
    assert prepare_output_dir(out) == out   # an existing folder is fine


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """What each tool reads: a tiny VOC layout, shards, a sweep file."""
    base = tmp_path_factory.mktemp("inputs")
    voc_root, shards, _ = make_voc_run(base)
    sweep = base / "sweep.json"
    sweep.write_text(json.dumps(SWEEP))
    return {"voc": make_voc(base / "stage_one", n_train=2, n_val=1, size=(40, 56)), "shards": shards, "sweep": sweep,
            "checkpoint": base / "model.pth"}


def tool_calls(inputs: dict, out: Path) -> dict[str, tuple[str, list[str]]]:
    """Per tool: its ``main``'s module and a command line writing into ``out``."""
    stage_one = ["voc", "--data-root", str(inputs["voc"]), "--split", "train", *TINY]
    return {
        "gen_pseudo": ("pseudolabel.generate", [*stage_one, "--out", str(out)]),
        "ablate": ("pseudolabel.ablation.cli", [*stage_one, "--sweep", str(inputs["sweep"]), "--out", str(out)]),
        "export_labels": ("pseudolabel.storage.export", [str(inputs["shards"]), "--out", str(out)]),
        "view_labels": ("pseudolabel.viewer.cli", [str(inputs["shards"]), "--out", str(out)]),
        "view_labels --report": ("pseudolabel.viewer.cli", [str(inputs["shards"]), "--out", str(out), "--report"]),
        "test_seg": ("segtrain.test", [str(inputs["checkpoint"]), "--out", str(out)]),
        "train_seg": ("segtrain.train", [str(TRAIN_CONFIG), "--work-dir", str(out)]),
    }


@pytest.mark.parametrize("tool", ["gen_pseudo", "ablate", "export_labels", "view_labels", "view_labels --report",
                                  "test_seg", "train_seg"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_tool_refuses_an_unusable_output_folder_in_one_line(tool, kind, inputs, tmp_path, capsys):
    with unusable(kind, tmp_path) as (out, named):
        before = sorted(tmp_path.rglob("*"))
        module, argv = tool_calls(inputs, out)[tool]
        assert importlib.import_module(module).main(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"'{named}'" in line, line
        assert sorted(tmp_path.rglob("*")) == before   # nothing written


@pytest.mark.parametrize("option", ["--json", "--plot"])
@pytest.mark.parametrize("kind", ["a folder", "under a file", "immutable"])
def test_evaluate_refuses_an_unusable_output_file_before_scoring(option, kind, inputs, tmp_path, capsys):
    """``tools/evaluate.py --json/--plot``: a path that is a folder, lies under a file or in an immutable folder is
    refused in one line naming it, before any image is scored."""
    from pseudolabel.evaluation.cli import main as evaluate

    if kind == "a folder":
        (tmp_path / "results").mkdir()
        path, named = tmp_path / "results", tmp_path / "results"
        context = contextlib.nullcontext((path, named))
    elif kind == "under a file":
        context = unusable("under a file", tmp_path)
    else:
        context = unusable("immutable", tmp_path)
    with context as (target, named):
        path = target if kind != "immutable" else target / "result.out"
        argv = ["--gt", f"voc:train", "--data-root", str(inputs["voc"]), "--pred", str(inputs["shards"]),
                option, str(path), "--quiet"]
        assert evaluate(argv) == 2
        out, err = capsys.readouterr()
        line = one_error_line(err)
        assert f"'{named}'" in line and option in line, line
        assert "mIoU" not in out   # refused before scoring
