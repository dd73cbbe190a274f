"""Skip-CAM's pieces (CAA boxes and affinity, PAR, Y0), weight loading and the QuickGELU rule, dataset defaults, GPU
precision. The comparison with CLIP-ES's maps is tests/test_clipes_reference.py."""
import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from pseudolabel.cam.caa import affinity_from_attention, box_mask
from pseudolabel.cam.clip_models import clip_architecture, load_clip
from pseudolabel.cam.par import PARConfig, par_refine
from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig
from pseudolabel.classes import get_class_set
from pseudolabel.config import PseudoLabelConfig
from tests.fixtures.clipes_reference import transition_matrix
from tests.fixtures.par_reference import par_reference
from tests.fixtures.tiny_clip import TINY_CLIP, tiny_skipcam
from tests.fixtures.tiny_models import MODEL_CONFIGS

TINY_GELU = TINY_CLIP.removesuffix("-quickgelu")


def open_clip_tokens(texts):
    import open_clip

    return open_clip.get_tokenizer(TINY_CLIP)(texts)


IMAGE = np.random.default_rng(1).integers(0, 255, (61, 83, 3), dtype=np.uint8)


def test_skips_change_the_maps_and_fusion_variants_run():
    base = tiny_skipcam(num_skips=0)(IMAGE, (3, 15)).loc_maps_lowres
    assert not np.allclose(tiny_skipcam(num_skips=3)(IMAGE, (3, 15)).loc_maps_lowres, base, atol=1e-3)
    for entry in ("output", "average"):
        out = tiny_skipcam(skip_entry=entry)(IMAGE, (3, 15))
        assert out.loc_maps_lowres.shape == (2, 4, 6) and np.isfinite(out.loc_maps_lowres).all()


def test_batch_api_equals_single_calls():
    """Two images of one CAM input size go through the networks together: the same maps, scores and Y0 as each
    alone up to float rounding."""
    cam = tiny_skipcam()
    images = [IMAGE, np.ascontiguousarray(IMAGE[::-1]), IMAGE[:40]]
    batch = cam.label_batch(images, cam.frozen([cam.preprocess(i) for i in images]), [(3,), (5, 9), (12,)]).outputs()
    for image, classes, got in zip(images, [(3,), (5, 9), (12,)], batch):
        alone = cam(image, classes)
        np.testing.assert_allclose(got.loc_maps_lowres, alone.loc_maps_lowres, atol=2e-6)
        np.testing.assert_allclose(got.scores, alone.scores, atol=1e-5)
        np.testing.assert_array_equal(got.y0, alone.y0)


def test_resizes_match_pil_reductions_and_opencv_enlargements():
    """The label path's bilinear resizes: a reduction (an image and its scores to PAR's size) as PIL's antialiased
    bilinear filter, an enlargement (token maps and PAR's output to the image size) as ``cv2.resize``."""
    import cv2
    from PIL import Image

    from pseudolabel.cam.skipcam import _resize

    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (375, 500), dtype=np.uint8).astype(np.float32)
    smaller = _resize(torch.from_numpy(image)[None], (240, 320))[0].numpy()
    pil = np.asarray(Image.fromarray(image, mode="F").resize((320, 240), Image.BILINEAR))
    np.testing.assert_allclose(smaller, pil, atol=1e-3)  # of 0..255; without antialiasing about 100 off
    maps = rng.random((2, 24, 32)).astype(np.float32)
    larger = _resize(torch.from_numpy(maps), (375, 500)).numpy()
    opencv = np.stack([cv2.resize(m, (500, 375), interpolation=cv2.INTER_LINEAR) for m in maps])
    np.testing.assert_allclose(larger, opencv, atol=1e-5)


def _brute_force_boxes(cam, tau):
    """Bounding boxes of the 8-connected components of the thresholded map, exclusive end clipped to size-1."""
    scoremap = (cam * 255).astype(np.uint8)
    binary = scoremap > int(tau * scoremap.max())
    labels, _ = ndi.label(binary, structure=np.ones((3, 3)))
    mask = np.zeros(cam.shape, bool)
    for sl in ndi.find_objects(labels):
        y1, x1 = min(sl[0].stop, cam.shape[0] - 1), min(sl[1].stop, cam.shape[1] - 1)
        mask[sl[0].start:y1, sl[1].start:x1] = True
    return mask


def test_box_mask_matches_contour_semantics():
    rng = np.random.default_rng(0)
    for _ in range(30):
        cam = ndi.gaussian_filter(rng.random((14, 19)), 1.2)
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        for tau in (0.2, 0.4, 0.7):
            assert np.array_equal(box_mask(cam, tau), _brute_force_boxes(cam, tau))
    full = np.ones((5, 6))
    mask = box_mask(full, 0.4)
    assert not mask[-1].any() and not mask[:, -1].any() and mask[:-1, :-1].all()  # exclusive, clipped end
    assert not box_mask(np.zeros((5, 6)), 0.4).any()


def test_larger_tau_gives_subset_boxes():
    rng = np.random.default_rng(3)
    for _ in range(20):
        cam = ndi.gaussian_filter(rng.random((16, 16)), 2)
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        masks = [box_mask(cam, t) for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
        for small, large in zip(masks[1:], masks[:-1]):
            assert not (small & ~large).any()


def test_sinkhorn_order_and_symmetry():
    rng = np.random.default_rng(0)
    attention = torch.from_numpy(rng.random((3, 13, 13))).float().softmax(dim=-1)
    got = affinity_from_attention(attention).double().numpy()
    expected = transition_matrix(attention.mean(dim=0)[1:, 1:].double()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(got, got.T, rtol=1e-6)


def test_par_keeps_constant_scores_constant_and_smooths_within_regions():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((3, 30, 40))).float() * 255
    constant = torch.full((2, 30, 40), 0.5)
    (out,) = par_refine([image], [constant])
    np.testing.assert_allclose(out.numpy(), out.numpy().flat[0], rtol=1e-5)
    two_tone = torch.zeros(3, 30, 40)
    two_tone[..., 20:] = 255
    noisy = torch.zeros(2, 30, 40)
    noisy[0, :, :20], noisy[1, :, 20:] = 1, 1
    noisy[:, 5, 5] = torch.tensor([0.0, 1.0])  # a wrong pixel inside the left region
    labels = par_refine([two_tone], [noisy], PARConfig())[0].argmax(dim=0)
    assert (labels[:, :20] == 0).all() and (labels[:, 20:] == 1).all()


def test_y0_contains_only_background_and_the_images_classes():
    cam = tiny_skipcam()
    rng = np.random.default_rng(5)
    for _ in range(4):
        classes = tuple(sorted(rng.choice(np.arange(1, 21), size=int(rng.integers(1, 4)), replace=False).tolist()))
        out = cam(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8), classes)
        assert set(np.unique(out.y0)) <= {0, *classes}
        assert out.scores.shape == (1 + len(classes), 45, 70) and out.loc_maps.shape == (len(classes), 45, 70)
    with pytest.raises(ValueError, match="at least one"):
        cam(IMAGE, ())


def _traced_archive(model, path):
    """OpenAI's own ViT-B-16.pt is a traced TorchScript archive: make one the same way."""
    example = (torch.rand(1, 3, 64, 64), open_clip_tokens(["a photo"]))
    torch.jit.trace(model, example, strict=False, check_trace=False).save(str(path))
    return path


def _maps(model_name, weights):
    cam = SkipCAM.from_config(SkipCAMConfig(clip_model=model_name, clip_weights=str(weights)), get_class_set("voc"))
    return cam.weights, cam(IMAGE, (3, 15)).loc_maps_lowres


def test_state_dict_formats_and_the_activation_each_runs_on(tmp_path, caplog):
    model, _, _ = load_clip(TINY_CLIP, "random", "cpu", seed=7)
    state = model.state_dict()
    openai = dict(state, input_resolution=torch.tensor(64), context_length=torch.tensor(77),
                  vocab_size=torch.tensor(49408))
    torch.save(openai, tmp_path / "openai.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "open_clip.pt")
    archive = _traced_archive(model, tmp_path / "archive.pt")
    weights, expected = _maps(TINY_CLIP, tmp_path / "openai.pt")
    assert weights["kind"] == "file" and len(weights["sha256"]) == 64
    assert (weights["model"], weights["activation"]) == (TINY_CLIP, "QuickGELU")
    np.testing.assert_array_equal(_maps(TINY_CLIP, tmp_path / "open_clip.pt")[1], expected)
    # OpenAI's archive runs on QuickGELU whatever the spelling of the model name
    weights, got = _maps(TINY_GELU, archive)
    assert (weights["model"], weights["activation"]) == (TINY_CLIP, "QuickGELU")
    np.testing.assert_array_equal(got, expected)
    # a plain state dict runs on the config the user names, here the GELU one, and the log says so
    with caplog.at_level("INFO", logger="pseudolabel.cam.clip_models"):
        weights, got = _maps(TINY_GELU, tmp_path / "openai.pt")
    assert (weights["model"], weights["activation"]) == (TINY_GELU, "GELU")
    assert f"openai.pt is a plain state dict, which does not record its activation: loaded into --clip-model " \
           f"{TINY_GELU} (GELU)" in caplog.text
    assert not np.allclose(got, expected, atol=1e-3)
    assert not np.allclose(expected, tiny_skipcam()(IMAGE, (3, 15)).loc_maps_lowres)  # seed 7 != seed 0


def test_openai_weights_are_built_with_quickgelu_or_refused(tmp_path):
    for spelling in ("ViT-B/16", "ViT-B-16", "ViT-B-16-quickgelu"):
        assert clip_architecture(spelling, "openai") == "ViT-B-16-quickgelu"
        assert SkipCAMConfig(clip_model=spelling).clip_model == "ViT-B-16-quickgelu"  # default weights: openai
    assert clip_architecture("ViT-B-16", "random") == "ViT-B-16"
    assert clip_architecture("ViT-B-16", str(tmp_path / "state_dict.pt")) == "ViT-B-16"
    assert SkipCAMConfig().clip_model == "ViT-B-16-quickgelu"
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-Q-99'"):
        SkipCAMConfig(clip_model="ViT-Q-99")
    # a GELU config with no QuickGELU variant cannot take OpenAI's weights
    import open_clip

    config = json.loads((MODEL_CONFIGS / f"{TINY_GELU}.json").read_text())
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ViT-T-16-gelu-only-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "configs")
    archive = _traced_archive(load_clip(TINY_CLIP, "random")[0], tmp_path / "archive.pt")
    for weights in ("openai", str(archive)):
        with pytest.raises(ValueError, match="'ViT-T-16-gelu-only-test' builds GELU.*trained with QuickGELU"):
            load_clip("ViT-T-16-gelu-only-test", weights)


def test_missing_and_mismatched_weights_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt.*ViT-T-16-cep-test"):
        load_clip(TINY_CLIP, str(tmp_path / "nope.pt"))
    model, _, _ = load_clip(TINY_CLIP, "random")
    state = model.state_dict()
    state["visual.proj"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="wrong.pt.*do not match the ViT-T-16-cep-test"):
        load_clip(TINY_CLIP, str(tmp_path / "wrong.pt"))
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pt: not a CLIP checkpoint"):
        load_clip(TINY_CLIP, str(tmp_path / "text.pt"))


def test_dataset_defaults_are_the_same_from_python_and_the_cli():
    from pseudolabel.config import MethodOptions
    from pseudolabel.generate import build_parser

    assert [SkipCAMConfig.for_dataset(d).tau for d in ("voc", "coco", "custom")] == [0.4, 0.7, 0.4]
    assert SkipCAMConfig.for_dataset("coco", tau=0.5, num_skips=0).tau == 0.5
    assert PseudoLabelConfig("coco", "train").cam.tau == 0.7 and PseudoLabelConfig("voc", "train").cam.tau == 0.4
    parser = build_parser()
    assert MethodOptions.from_args(parser.parse_args(["coco"])).config("coco", "train").cam.tau == 0.7
    assert MethodOptions.from_args(parser.parse_args(["coco", "--tau", "0.3"])).config("coco", "train").cam.tau == 0.3
    tau_help = next(a.help for a in parser._actions if a.dest == "tau")
    assert tau_help.endswith("(default: 0.4; coco: 0.7)") and tau_help.count("default") == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_autocast_matches_fp32(precision):
    model, tokenizer, weights = load_clip(TINY_CLIP, "random", "cuda", seed=0)
    maps = {}
    for p in ("fp32", precision):
        cfg = SkipCAMConfig(clip_model=TINY_CLIP, clip_weights="random")
        cam = SkipCAM(model, tokenizer, get_class_set("voc"), cfg, "cuda", weights, precision=p)
        maps[p] = cam(IMAGE, (3, 15)).loc_maps_lowres
    assert np.abs(maps[precision] - maps["fp32"]).max() < 0.05


def test_the_token_budget_caps_large_inputs_and_leaves_voc_and_coco_sizes_alone():
    cam = tiny_skipcam()
    assert cam.cfg.max_tokens == 1600
    for height in range(1, 641, 13):              # every VOC (<= 500x500) and COCO (<= 640x640) size
        for width in (height, 333, 500, 640):
            assert cam.input_size(height, width) == tuple(16 * -(-side // 16) for side in (height, width))
    h, w = cam.input_size(4000, 6000)
    assert (h // 16, w // 16) == (33, 48) and abs(w / h - 1.5) < 0.05   # 1584 tokens: the largest such grid
    assert cam.input_size(6000, 400)[0] // 16 * cam.input_size(6000, 400)[1] // 16 <= 1600
    assert tiny_skipcam(max_tokens=0).input_size(4000, 6000) == (4000, 6000)  # 0: no budget
    assert tiny_skipcam(image_size="512").input_size(4000, 6000) == (352, 512)   # under the budget already


def test_a_capped_input_gives_maps_on_the_capped_grid_and_y0_at_full_size():
    image = np.random.default_rng(4).integers(0, 255, (100, 300, 3), dtype=np.uint8)
    out = tiny_skipcam(max_tokens=12)(image, (3, 15))      # 7 x 19 = 133 tokens without the budget
    assert out.loc_maps_lowres.shape == (2, 2, 6) and out.y0.shape == (100, 300) and out.scores.shape[1:] == (100, 300)


def test_par_of_several_images_equals_the_reference_of_each():
    """PAR of images of different sizes together (one block-diagonal operator) against an independent reference
    (tests/fixtures/par_reference.py) on each image: each keeps its own replicate border (a 1-pixel-high image and
    one narrower than the largest dilation included); and against each image refined alone."""
    rng = np.random.default_rng(3)
    sizes, channels = [(37, 53), (53, 37), (1, 30), (20, 9), (40, 56)], [2, 4, 3, 2, 1]
    images = [torch.from_numpy(rng.random((3, *s))).float() * 255 for s in sizes]
    scores = [torch.from_numpy(rng.random((k, *s))).float() for k, s in zip(channels, sizes)]
    for image, score, together in zip(images, scores, par_refine(images, scores)):
        assert together.shape == score.shape
        np.testing.assert_allclose(together.numpy(), par_reference(image.numpy(), score.numpy()), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(together, par_refine([image], [score])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("entry", ["input", "output", "average"])
def test_label_batch_equals_each_image_alone(entry):
    """Skip-CAM of several images together (last block and gradients for all (image, class) pairs of a CAM size,
    one host copy for CAA's boxes, PAR for all) against each image alone: the same Y0, maps and scores up to float
    rounding."""
    rng = np.random.default_rng(6)
    sizes = [(40, 56), (56, 40), (40, 56), (33, 47), (20, 300)]  # two CAM sizes shared, three alone
    images = [rng.integers(0, 255, (*s, 3), dtype=np.uint8) for s in sizes]
    classes = [(3,), (5, 9), (12, 15, 2), (7,), (8, 1)]
    cam = tiny_skipcam(skip_entry=entry, par_max_side=30)  # PAR below the size of most images: resized there
    features = cam.frozen([cam.preprocess(i) for i in images])
    alone = [cam.label_batch([i], [f], [c]).outputs()[0] for i, f, c in zip(images, features, classes)]
    together = cam.label_batch(images, features, classes).outputs()
    for a, b, c in zip(alone, together, classes):
        assert b.class_ids == a.class_ids == tuple(sorted(c))
        np.testing.assert_array_equal(b.y0, a.y0)
        np.testing.assert_allclose(b.loc_maps_lowres, a.loc_maps_lowres, atol=2e-6)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)
    assert len({o.y0.tobytes() for o in together}) == len(images) and any(len(np.unique(o.y0)) > 1 for o in together)


def test_preprocess_gives_clip_s_normalisation_bit_for_bit():
    """The host preprocessing (numpy, so the decoding threads start no torch thread teams) against CLIP's transform
    written with torch: PIL bicubic resize, /255, (x - mean) / std per channel in float32, channels first."""
    from PIL import Image

    cam = tiny_skipcam()
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    for seed, size in enumerate([(37, 50), (48, 64), (500, 375)]):
        image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
        h, w = cam.input_size(*size)
        resized = torch.from_numpy(np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))).float()
        expected = (resized.permute(2, 0, 1) / 255 - mean) / std
        got = cam.preprocess(image)
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got, expected)
