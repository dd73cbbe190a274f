"""The model registries: the tests' tiny models are registered by the tests (tests/fixtures/tiny_models.py), not
shipped, so a plain run neither offers nor accepts them; a registered SAM variant is offered by the next parser and
built by ``load_sam``; a name cannot be registered twice with different models."""
import os
import re
import subprocess
import sys

import pytest

from pseudolabel.generate import build_parser
from pseudolabel.sam import models as sam_models
from pseudolabel.sam.models import load_sam, register_sam_variant
from tests.fixtures.tiny_models import TINY_CLIP, TINY_SAM, build_tiny_sam

# Three runs of the stage-one command in one fresh interpreter, where nothing registers the tiny models: its help,
# then the tiny SAM and the tiny CLIP asked for. A line "exit status N" on stdout and on stderr ends each run.
PLAIN_RUNS = """
import sys
from pseudolabel.generate import main
for argv in (["--help"], ["demo", "--sam-model", {sam!r}], ["demo", "--clip-model", {clip!r}, "--out", {out!r}]):
    try:
        status = main(argv)
    except SystemExit as stop:
        status = stop.code
    print("exit status", status, flush=True)
    print("exit status", status, file=sys.stderr, flush=True)
"""


def test_a_plain_run_lists_only_the_real_models_and_refuses_the_tiny_ones(tmp_path):
    code = PLAIN_RUNS.format(sam=TINY_SAM, clip=TINY_CLIP, out=str(tmp_path / "out"))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = re.split(r"exit status (\d+)\n", result.stdout)
    errors = re.split(r"exit status (\d+)\n", result.stderr)
    assert outputs[1::2] == errors[1::2] == ["0", "2", "2"], result.stderr[-3000:]
    assert "--sam-model {vit_b,vit_l,vit_h,sam2.1_hiera_t,sam2.1_hiera_s,sam2.1_hiera_b+,sam2.1_hiera_l}" in outputs[0]
    assert TINY_SAM not in outputs[0] and "cep-test" not in outputs[0]
    assert errors[2].rstrip().endswith("error: argument --sam-model: invalid choice: 'vit_tiny_test' "
                                       "(choose from 'vit_b', 'vit_l', 'vit_h', 'sam2.1_hiera_t', 'sam2.1_hiera_s', "
                                       "'sam2.1_hiera_b+', 'sam2.1_hiera_l')")
    assert errors[4].rstrip() == (f"error: unknown CLIP model '{TINY_CLIP}'; choose one of open_clip's configs, "
                                  "e.g. ViT-B-16-quickgelu")
    assert not (tmp_path / "out").exists()


def test_the_tests_see_the_registered_tiny_models():
    assert TINY_SAM in sam_models.SAM_VARIANTS
    assert build_parser().parse_args(["demo", "--sam-model", TINY_SAM]).sam_model == TINY_SAM


def test_a_registered_variant_is_offered_by_the_next_parser_and_built_by_load_sam(monkeypatch):
    monkeypatch.setattr(sam_models, "SAM_VARIANTS", dict(sam_models.SAM_VARIANTS))  # the registry as it was, after
    earlier = build_parser()
    register_sam_variant("vit_tiny_copy", build_tiny_sam)
    assert build_parser().parse_args(["demo", "--sam-model", "vit_tiny_copy"]).sam_model == "vit_tiny_copy"
    with pytest.raises(SystemExit):
        earlier.parse_args(["demo", "--sam-model", "vit_tiny_copy"])
    model, identity = load_sam("vit_tiny_copy", "random", seed=4)
    assert identity == {"kind": "random", "model": "vit_tiny_copy", "seed": 4}
    build_tiny_sam().load_state_dict(model.state_dict())  # strict: the registered builder's architecture


def test_a_name_is_registered_once(monkeypatch):
    monkeypatch.setattr(sam_models, "SAM_VARIANTS", dict(sam_models.SAM_VARIANTS))
    register_sam_variant(TINY_SAM, build_tiny_sam)  # the same variant again: nothing changes
    with pytest.raises(ValueError, match="'vit_b' is already registered"):
        register_sam_variant("vit_b", build_tiny_sam)
    with pytest.raises(ValueError, match=f"'{TINY_SAM}' is already registered"):
        register_sam_variant(TINY_SAM, build_tiny_sam, "sam_tiny.pth", "0" * 64)
    assert sam_models.SAM_VARIANTS["vit_b"].filename == "sam_vit_b_01ec64.pth"
