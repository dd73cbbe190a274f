"""Skip-CAM's localization maps against CLIP-ES's ``attn_highres`` from an independent reference
(tests/fixtures/clipes_reference.py), both reading the same OpenAI-format state dict file (random fp16 weights,
logit scale 100). The implementation runs through its public path: ``SkipCAM.from_config`` with the file as
``clip_weights``, CAA without PAR; the maps compared are at image resolution (CLIP-ES's ``attn_highres``
convention), and one test compares those a CLI run stores."""
import numpy as np
import pytest
from PIL import Image

from pseudolabel.cam.clip_models import DEFAULT_CLIP_MODEL
from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig
from pseudolabel.classes import get_class_set
from pseudolabel.generate import run
from pseudolabel.storage.shards import open_shards
from tests.fixtures.clipes_reference import (CLIPES_VOC_BACKGROUND, CLIPES_VOC_NAMES, ReferenceCLIP,
                                             clipes_attn_highres, preprocess)
from tests.fixtures.openai_checkpoint import VIT_B_16, VIT_T_16_TEST, write_openai_state_dict
from tests.fixtures.tiny_clip import TINY_CLIP
from tests.fixtures.tiny_datasets import make_voc

ATOL = 2e-4  # float32 summation order; measured differences are below 4e-5
# VOC-like mixes of sizes (grids from 3x4 to 8x10 tokens, one exact multiple of 16) and 1-3 classes
CASES = [(np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8), classes) for size, classes in (
    ((61, 83, 3), (3, 8, 15)), ((40, 56, 3), (12,)), ((97, 50, 3), (1, 20)), ((128, 160, 3), (5, 9, 17)))]


def implementation_maps(path, clip_model, num_skips, cases):
    cfg = SkipCAMConfig(clip_model=clip_model, clip_weights=str(path), num_skips=num_skips, use_par=False)
    cam = SkipCAM.from_config(cfg, get_class_set("voc"))
    return cam.weights, [cam(image, classes).loc_maps for image, classes in cases]


def reference_maps(path, head_width, num_skips, cases):
    model = ReferenceCLIP.from_file(path, head_width)
    used = sorted({c for _, classes in cases for c in classes})  # text features of the classes present only
    fg = model.class_text_features([CLIPES_VOC_NAMES[c - 1] for c in used])
    bg = model.class_text_features(CLIPES_VOC_BACKGROUND)
    return [clipes_attn_highres(model, image, [used.index(c) for c in classes], fg, bg, 0.4, num_skips)
            for image, classes in cases]


def informative_share(maps) -> float:
    """Share of maps that are not degenerate (a class whose Grad-CAM is all negative gives an all-zero map)."""
    flat = [m for group in maps for m in group]
    return np.mean([m.max() > 0.5 and m.std() > 0.05 for m in flat])


def mean_abs_differences(got, want):
    return np.concatenate([np.abs(g - w).mean(axis=(1, 2)) for g, w in zip(got, want)])


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return write_openai_state_dict(tmp_path_factory.mktemp("clip") / "tiny-openai.pt", VIT_T_16_TEST, seed=0)


@pytest.fixture(scope="module", params=[0, 3], ids=["K0", "K3"])
def tiny_reference(request, tiny_file):
    return request.param, reference_maps(tiny_file, VIT_T_16_TEST.head_width, request.param, CASES)


@pytest.mark.parametrize("attn_blocks", [1, 4, 9])
def test_frozen_blocks_equal_clipes_and_keep_only_the_attentions_caa_reads(tiny_file, attn_blocks):
    """The frozen pass (fused attention where no weights are read) against CLIP-ES's, which computes every block's
    attention weights: the same outputs, and the attentions of the last ``attn_blocks - 1`` frozen blocks only."""
    cfg = SkipCAMConfig(clip_model="ViT-T-16-cep-test-quickgelu", clip_weights=str(tiny_file), attn_blocks=attn_blocks)
    cam = SkipCAM.from_config(cfg, get_class_set("voc"))
    reference = ReferenceCLIP.from_file(tiny_file, VIT_T_16_TEST.head_width)
    image = CASES[0][0]
    outputs, attentions = cam.frozen_blocks(cam.preprocess(image)[None])
    want_outputs, want_attentions = reference.frozen_blocks(preprocess(image)[0])
    assert len(outputs) == len(want_outputs) == VIT_T_16_TEST.vision_layers - 1
    assert len(attentions) == attn_blocks - 1
    for got, want in zip(outputs, want_outputs):
        np.testing.assert_allclose(got[0].numpy(), want.numpy(), atol=ATOL)
    for got, want in zip(attentions, want_attentions[len(want_attentions) - len(attentions):]):
        np.testing.assert_allclose(got[0].numpy(), want.numpy(), atol=1e-5)


def test_maps_equal_clipes_attn_highres(tiny_file, tiny_reference):
    num_skips, want = tiny_reference
    weights, got = implementation_maps(tiny_file, TINY_CLIP, num_skips, CASES)
    assert weights["activation"] == "QuickGELU" and informative_share(want) >= 0.75
    for g, w, (image, classes) in zip(got, want, CASES):
        assert g.shape == w.shape == (len(classes), *image.shape[:2])
        np.testing.assert_allclose(g, w, rtol=0, atol=ATOL)


def test_the_gelu_build_of_the_same_weights_does_not_match(tiny_file, tiny_reference):
    """The check above is sensitive to the activation: open_clip's GELU config on the same file is far off."""
    num_skips, want = tiny_reference
    weights, got = implementation_maps(tiny_file, TINY_CLIP.removesuffix("-quickgelu"), num_skips, CASES)
    assert weights["activation"] == "GELU"
    differences = mean_abs_differences(got, want)
    assert np.median(differences) > 5 * ATOL and max(np.abs(g - w).max() for g, w in zip(got, want)) > 50 * ATOL


def test_stored_maps_of_a_cli_run_equal_clipes_attn_highres(tiny_file, tmp_path):
    """``tools/gen_pseudo.sh voc --num-skips 0 --no-refine --clip-weights FILE``. The shards keep the maps in fp16 at
    token resolution (2.4e-4 rounding). On these flat synthetic scenes the CAA-refined maps span ~1e-4 before their
    final min-max, which magnifies CLIP-ES's float32 Sinkhorn rounding (this project's is float64) to ~7e-4."""
    voc = make_voc(tmp_path / "data", n_train=3, n_val=1, size=(61, 83))
    out = tmp_path / "out"
    run(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--device", "cpu", "--clip-model",
         TINY_CLIP, "--clip-weights", str(tiny_file), "--num-skips", "0", "--no-refine", "--no-par"])
    shards = open_shards(out)
    ids = sorted(shards)
    cases = [(np.asarray(Image.open(voc / "JPEGImages" / f"{i}.jpg").convert("RGB")), shards[i].class_ids)
             for i in ids]
    want = reference_maps(tiny_file, VIT_T_16_TEST.head_width, 0, cases)
    assert informative_share(want) >= 0.75
    for image_id, w in zip(ids, want):
        np.testing.assert_allclose(shards[image_id].loc_maps, w, rtol=0, atol=1.5e-3)


def test_vit_b16_maps_equal_clipes_attn_highres(tmp_path):
    """The paper's architecture at full size (default --clip-model), one small image."""
    path = write_openai_state_dict(tmp_path / "ViT-B-16-openai.pt", VIT_B_16, seed=1)
    cases = [(np.random.default_rng(1).integers(0, 255, (50, 75, 3), dtype=np.uint8), (3, 15))]
    weights, got = implementation_maps(path, DEFAULT_CLIP_MODEL, 0, cases)
    assert (weights["model"], weights["activation"]) == ("ViT-B-16-quickgelu", "QuickGELU")
    want = reference_maps(path, VIT_B_16.head_width, 0, cases)
    assert informative_share(want) == 1
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=ATOL)
