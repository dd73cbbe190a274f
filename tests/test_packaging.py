"""Packaging: the wheel installs commands that run outside the repository, carries its package data, declares ranges
that the pinned combination satisfies, and offers one command per user-facing tool."""
import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# tools/ entry -> its console script. A new tool goes into one of these two tables (tests below check both).
COMMANDS = {"gen_pseudo.sh": "cep-gen-pseudo", "evaluate.py": "cep-evaluate", "view_labels.py": "cep-view",
            "check_shards.py": "cep-check-shards", "export_labels.py": "cep-export", "ablate.sh": "cep-ablate"}
NOT_COMMANDS = {"_env.sh", "_venv.py", "run_tests.sh", "prepare_data.sh", "render_coco_gt.py", "train_seg.sh",
                "test_seg.sh"}


def pins() -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    return {Requirement(line).name.lower(): line.split("==")[1] for line in lines if line}


def test_pinned_versions_satisfy_the_declared_ranges():
    pinned = pins()
    declared = [Requirement(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]]
    for requirement in declared:
        name = requirement.name.lower()
        assert name in pinned, f"{name} is a dependency but requirements.txt does not pin it"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (requirement, pinned[name])
    assert set(pinned) == {r.name.lower() for r in declared}, "requirements.txt pins a package that is not declared"


def test_every_tool_is_a_command_or_listed_as_not_one():
    tools = {p.name for p in (REPO / "tools").iterdir() if p.is_file()}
    assert tools == set(COMMANDS) | NOT_COMMANDS, "add the new tool to COMMANDS (and [project.scripts]) or NOT_COMMANDS"
    assert set(PROJECT["scripts"]) == set(COMMANDS.values())
    for tool, command in COMMANDS.items():
        module, function = PROJECT["scripts"][command].split(":")
        assert callable(getattr(importlib.import_module(module), function))
        # the tool and the command run the same code
        shim = (REPO / "tools" / tool).read_text()
        called = re.search(r"-m (\S+) \"\$@\"", shim) or re.search(r"from (\S+) import main", shim)
        assert called and called[1] == module and function == "main", tool


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources, installed with --no-deps into a fresh venv whose imports fall back
    on the project's environment (a .pth naming its site-packages)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("pseudolabel", "segtrain"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(base / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((base / "dist").glob("cep_pseudolabel-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "project_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return wheel, venv, base


def test_wheel_carries_the_package_data_and_no_test_model(installed):
    wheel, _, _ = installed
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    wanted = [p.relative_to(REPO).as_posix() for pattern in ("pseudolabel/class_lists/*.json",
                                                              "pseudolabel/ablation/sweeps/*.json",
                                                              "segtrain/configs/*.py", "segtrain/configs/_base_/*/*.py")
              for p in REPO.glob(pattern)]
    assert {"pseudolabel/class_lists/voc.json", "pseudolabel/class_lists/coco.json",
            "segtrain/configs/_base_/datasets/voc12aug_pseudo.py"} <= set(wanted)
    assert set(wanted) <= names
    # the tests' tiny models (tests/fixtures/tiny_models.py) are neither files nor names in the wheel
    assert not [name for name in names if "model_configs" in name or name.startswith("tests/")]
    for name in names:
        content = archive.read(name)
        assert b"cep-test" not in content and b"vit_tiny_test" not in content, name


@pytest.mark.parametrize("command", ["cep-gen-pseudo", "cep-evaluate", "cep-ablate"])
def test_installed_commands_run_outside_the_repository(installed, command):
    _, venv, outside = installed
    result = subprocess.run([str(venv / "bin" / command), "--help"], cwd=outside, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {command} ")


def test_installed_package_is_the_wheel_finds_its_class_lists_and_looks_for_data_here(installed):
    _, venv, outside = installed
    code = ("import pseudolabel; from pseudolabel.classes import get_class_set; from pseudolabel.datasets.base import "
            "data_root; print(pseudolabel.__file__, get_class_set('coco').num_classes, data_root().resolve())")
    env = {key: value for key, value in os.environ.items() if key != "CEP_DATA_ROOT"}
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=outside, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    location, classes, root = result.stdout.split()
    assert Path(location).is_relative_to(venv) and classes == "81"
    assert Path(root) == outside.resolve() / "data"     # not site-packages/data


def test_installed_demo_without_the_photos_says_where_they_are(installed):
    _, venv, outside = installed
    result = subprocess.run([str(venv / "bin" / "cep-gen-pseudo"), "demo"], cwd=outside, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2 and "come with the source checkout" in result.stderr, result.stderr[-2000:]
    assert not (outside / "outputs").exists()
