"""The mission's flow as written: ``tools/gen_pseudo.sh voc`` then ``tools/train_seg.sh`` chain with their default
paths (stage one writes where the stage-two configs read), and the tools' console holds none of the dependencies'
warnings.

The two commands run literally (the shell scripts, no path given) on a copy of the checkout whose default data root
holds a tiny VOC tree (:mod:`tests.fixtures.checkout`): the copy's ``data/``, ``outputs/`` and ``work_dirs/`` are the
defaults, so nothing of the developer's data or outputs is read or written. The options given are the tiny random
models (stage one) and a short, small schedule (stage two), none of them a path.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from mmengine.config import Config

from pseudolabel import generate
from pseudolabel.config import RunConfig
from pseudolabel.datasets import build_dataset
from pseudolabel.storage.shards import open_shards
from tests.fixtures.checkout import REPO, copy_checkout, environment_with_tiny_models
from tests.fixtures.stage_two import SHORT_SCHEDULE, TINY_DEEPLAB
from tests.fixtures.tiny_datasets import make_coco, make_voc
from tests.fixtures.tiny_models import TINY_CLIP, TINY_SAM

CONFIGS = REPO / "segtrain" / "configs"
VOC_CONFIG = "deeplabv3plus_r101-d8_4xb4-20k_voc12aug-pseudo-512x512.py"
COCO_CONFIG = "deeplabv3plus_r101-d8_4xb4-20k_coco14-pseudo-512x512.py"
TINY_MODELS = ("--device", "cpu", "--clip-model", TINY_CLIP, "--clip-weights", "random", "--sam-model", TINY_SAM,
               "--sam-checkpoint", "random")
# A Python warning printed by the warnings module ("path:line: Category: message") or a library's log line.
WARNING_LINE = re.compile(r"^(?P<path>\S+\.py):\d+: (?P<category>\w*Warning): (?P<message>.*)$", re.M)


def foreign_warnings(console: str, checkout: Path) -> list[str]:
    """The warnings on a console that do not come from the toolkit's own files, and mmengine's logged warnings."""
    found = [m[0] for m in WARNING_LINE.finditer(console) if not Path(m["path"]).resolve().is_relative_to(checkout)]
    return found + [line for line in console.splitlines() if " - mmengine - WARNING - " in line or
                    line.startswith("[root]")]


def run(command: list[str], checkout: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_gen_pseudo_voc_then_train_seg_chain_with_their_defaults(tmp_path):
    checkout = copy_checkout(tmp_path / "checkout")
    voc = make_voc(checkout / "data", n_train=3, n_val=2, n_aug_only=1, with_aug=True, size=(48, 64))
    env = environment_with_tiny_models(checkout)

    stage_one = run(["tools/gen_pseudo.sh", "voc", *TINY_MODELS], checkout, env)
    written = checkout / "outputs" / "voc_train_aug"
    shards = open_shards(written)
    train_aug = (voc / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert sorted(shards) == sorted(train_aug) and shards.attrs["random_weights"]

    stage_two = run(["tools/train_seg.sh", "--gpus", "0", "--no-pretrained", "--cfg-options", *SHORT_SCHEDULE,
                     *TINY_DEEPLAB], checkout, env)
    work = checkout / "work_dirs" / Path(VOC_CONFIG).stem
    info = json.loads((work / "versions.json").read_text())
    assert (checkout / info["shards_dir"]).resolve() == written.resolve()       # the shards stage one wrote
    assert info["shards"]["weights"] == shards.attrs["weights"] and info["shards"]["split"] == "train_aug"
    assert (work / "iter_2.pth").is_file()
    log = next(work.glob("*/*.log")).read_text()
    assert "Iter(train) [2/2]" in log and "Iter(val)" in log and "mIoU" in log  # trained, then validated

    for name, result in (("gen_pseudo.sh", stage_one), ("train_seg.sh", stage_two)):
        assert not foreign_warnings(result.stderr + result.stdout, checkout), name
    assert "RANDOM" in stage_one.stderr and "RANDOM model weights" in stage_two.stderr   # ours stay


def stage_two_configs(dataset: str) -> list[Path]:
    """The stage-two configs that train on a dataset's stage-one output (the demo's and the aliases aside)."""
    tag = {"voc": "_voc12aug-", "coco": "_coco14-"}[dataset]
    return sorted(path for path in CONFIGS.glob("*.py") if tag in path.name)


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_stage_two_configs_read_what_stage_one_writes_by_default(dataset, tmp_path, monkeypatch):
    """Every stage-two config of a dataset trains on stage one's default output for it (the chain test above runs
    the VOC one) and reads the images from the dataset root stage one reads: ``$CEP_DATA_ROOT`` here, the
    checkout's ``data/`` when it is not set (the chain test)."""
    monkeypatch.setenv("CEP_DATA_ROOT", str(tmp_path))
    make_voc(tmp_path, with_aug=True) if dataset == "voc" else make_coco(tmp_path / "coco", split="train")
    run = RunConfig.from_args(generate.build_parser().parse_args([dataset]))
    split = generate.split_of(run)
    out, root = generate.output_dir(run, split), build_dataset(dataset, None, split).root
    configs = stage_two_configs(dataset)
    assert len(configs) == {"voc": 3, "coco": 1}[dataset]
    for path in configs:
        train = Config.fromfile(str(path)).train_dataloader.dataset
        assert REPO / train.shards_dir == out, path.name                   # relative to the repository root
        assert Path(train.data_root) == root, path.name


def test_the_readme_and_stage_two_docs_show_the_commands_run_here():
    """The sessions in README.md and docs/stage_two.md chain stage one into stage two with the commands above, with
    no path given."""
    for doc in ("README.md", "docs/stage_two.md"):
        commands = [line.split("#")[0].strip() for line in (REPO / doc).read_text().splitlines()]
        assert commands.index("tools/train_seg.sh") == commands.index("tools/gen_pseudo.sh voc") + 1, doc
        assert f"tools/train_seg.sh segtrain/configs/{COCO_CONFIG}" in (REPO / doc).read_text(), doc


def test_train_seg_reads_relative_paths_in_the_callers_directory(tmp_path):
    """From another working directory, a relative config, ``--shards`` and ``--work-dir`` mean that directory: the
    shards of the caller's ``outputs/mine`` are read although the checkout has an ``outputs/mine`` too, and the work
    dir is made (locked) there, not in the checkout."""
    checkout = copy_checkout(tmp_path / "checkout")
    caller = tmp_path / "caller"
    for root in (checkout, caller):
        (root / "outputs" / "mine").mkdir(parents=True)       # no shards in either: the error names the one read
    env = environment_with_tiny_models(checkout)
    config = f"../checkout/segtrain/configs/{VOC_CONFIG}"
    result = subprocess.run(["../checkout/tools/train_seg.sh", config, "--gpus", "0", "--no-pretrained",
                             "--shards", "outputs/mine", "--work-dir", "work"], cwd=caller, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert str(caller / "outputs" / "mine") in error, error
    assert (caller / "work").is_dir() and not (checkout / "work").exists()
    refused = subprocess.run(["../checkout/tools/train_seg.sh", "--gpus", "-1"], cwd=caller, env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--gpus -1: must be an integer >= 0" in refused.stderr.strip().splitlines()[-1]



def test_test_seg_reads_relative_paths_in_the_callers_directory(tmp_path):
    """``tools/test_seg.sh`` from another working directory: a relative checkpoint means the caller's file although
    the checkout has one at the same path (with a config beside it, which the caller's lacks)."""
    checkout = copy_checkout(tmp_path / "checkout")
    caller = tmp_path / "caller"
    for root in (checkout, caller):
        (root / "work").mkdir(parents=True)
        (root / "work" / "iter_1.pth").write_bytes(b"")
    (checkout / "work" / "model.py").write_text("# a config beside the checkout's checkpoint only\n")
    result = subprocess.run(["../checkout/tools/test_seg.sh", "work/iter_1.pth", "--out", "preds"], cwd=caller,
                            env=environment_with_tiny_models(checkout), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert str(caller / "work") in error and "config" in error, error
    assert not (checkout / "preds").exists()


def test_a_moved_checkout_keeps_its_virtual_environment(tmp_path):
    """The environment stamp of ``tools/_env.sh`` hashes the requirement files' contents, not their paths: the same
    venv (``CEP_VENV``) is up to date for a moved checkout and stale after a requirement changes."""
    first = copy_checkout(tmp_path / "first")
    env = dict(environment_with_tiny_models(first), PYTHON="/bin/false")   # a reinstall would fail at once
    moved = first.rename(tmp_path / "moved")
    source = ["bash", "-c", 'source "$1/tools/_env.sh"; echo activated', "_"]
    kept = subprocess.run([*source, str(moved)], env=env, capture_output=True, text=True, timeout=60)
    assert kept.returncode == 0 and "activated" in kept.stdout and "setting up" not in kept.stderr, kept.stderr
    with open(moved / "requirements.txt", "a") as requirements:
        requirements.write("# changed\n")
    stale = subprocess.run([*source, str(moved)], env=env, capture_output=True, text=True, timeout=60)
    assert stale.returncode != 0 and "setting up the virtual environment" in stale.stderr
