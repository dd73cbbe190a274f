"""Skip-CAM against the CLIP-ES reference recipe, CAA pieces, PAR, Y0 properties, weight loading, GPU precision."""
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from pseudolabel.cam.caa import affinity_from_attention, box_mask
from pseudolabel.cam.clip_models import load_clip
from pseudolabel.cam.par import PARConfig, par_refine
from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig, default_tau
from tests.fixtures.clipes_reference import clipes_reference_maps, sinkhorn_reference
from tests.fixtures.tiny_clip import TINY_CLIP, tiny_skipcam

def open_clip_tokens(texts):
    import open_clip

    return open_clip.get_tokenizer(TINY_CLIP)(texts)


IMAGE = np.random.default_rng(1).integers(0, 255, (61, 83, 3), dtype=np.uint8)


@pytest.mark.parametrize("num_skips", [0, 3])
def test_fast_maps_equal_the_clipes_reference_loop(num_skips):
    cam = tiny_skipcam(num_skips=num_skips)
    classes = (3, 8, 15)
    out = cam(IMAGE, classes)
    text = torch.cat([cam.fg_text[[c - 1 for c in classes]], cam.bg_text])
    reference = clipes_reference_maps(cam.model, cam.preprocess(IMAGE)[None], text, len(classes), num_skips, 0.4)
    assert out.loc_maps_lowres.shape == reference.shape == (3, 4, 6)
    np.testing.assert_allclose(out.loc_maps_lowres, reference, atol=2e-5)


def test_skips_change_the_maps_and_fusion_variants_run():
    base = tiny_skipcam(num_skips=0)(IMAGE, (3, 15)).loc_maps_lowres
    assert not np.allclose(tiny_skipcam(num_skips=3)(IMAGE, (3, 15)).loc_maps_lowres, base, atol=1e-3)
    for entry in ("output", "average"):
        out = tiny_skipcam(skip_entry=entry)(IMAGE, (3, 15))
        assert out.loc_maps_lowres.shape == (2, 4, 6) and np.isfinite(out.loc_maps_lowres).all()


def test_batch_api_equals_single_calls():
    cam = tiny_skipcam()
    other = np.ascontiguousarray(IMAGE[::-1])
    batch = cam.predict_batch([IMAGE, other, IMAGE[:40]], [(3,), (5, 9), (12,)])
    for image, classes, got in zip([IMAGE, other, IMAGE[:40]], [(3,), (5, 9), (12,)], batch):
        np.testing.assert_allclose(got.loc_maps_lowres, cam(image, classes).loc_maps_lowres, atol=1e-5)


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
    expected = sinkhorn_reference(attention.mean(dim=0)[1:, 1:].double().numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(got, got.T, rtol=1e-6)


def test_par_keeps_constant_scores_constant_and_smooths_within_regions():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, 3, 30, 40))).float() * 255
    constant = torch.full((1, 2, 30, 40), 0.5)
    out = par_refine(image, constant)
    np.testing.assert_allclose(out.numpy(), out.numpy().flat[0], rtol=1e-5)
    two_tone = torch.zeros(1, 3, 30, 40)
    two_tone[..., 20:] = 255
    noisy = torch.zeros(1, 2, 30, 40)
    noisy[:, 0, :, :20], noisy[:, 1, :, 20:] = 1, 1
    noisy[:, :, 5, 5] = torch.tensor([0.0, 1.0])  # a wrong pixel inside the left region
    labels = par_refine(two_tone, noisy, PARConfig()).argmax(dim=1)[0]
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


def test_local_openai_and_open_clip_state_dicts_give_the_same_maps(tmp_path):
    model, _, _ = load_clip(TINY_CLIP, "random", "cpu", seed=7)
    state = model.state_dict()
    openai = dict(state, input_resolution=torch.tensor(64), context_length=torch.tensor(77),
                  vocab_size=torch.tensor(49408))
    torch.save(openai, tmp_path / "openai.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "open_clip.pt")
    # OpenAI's own ViT-B-16.pt is a traced TorchScript archive: make one the same way
    example = (torch.rand(1, 3, 64, 64), open_clip_tokens(["a photo"]))
    torch.jit.trace(model, example, strict=False, check_trace=False).save(str(tmp_path / "archive.pt"))
    maps = []
    for name in ("openai.pt", "open_clip.pt", "archive.pt"):
        cfg = SkipCAMConfig(clip_model=TINY_CLIP, clip_weights=str(tmp_path / name))
        from pseudolabel.classes import get_class_set

        cam = SkipCAM.from_config(cfg, get_class_set("voc"))
        assert cam.weights["kind"] == "file" and len(cam.weights["sha256"]) == 64
        maps.append(cam(IMAGE, (3, 15)).loc_maps_lowres)
    np.testing.assert_array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], maps[2])
    assert not np.allclose(maps[0], tiny_skipcam()(IMAGE, (3, 15)).loc_maps_lowres)  # seed 7 != seed 0


def test_missing_and_mismatched_weights_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt.*ViT-T-16-cep-test"):
        load_clip(TINY_CLIP, str(tmp_path / "nope.pt"))
    model, _, _ = load_clip(TINY_CLIP, "random")
    state = model.state_dict()
    state["visual.proj"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="wrong.pt.*do not match the ViT-T-16-cep-test"):
        load_clip(TINY_CLIP, str(tmp_path / "wrong.pt"))


def test_default_tau_per_dataset():
    assert (default_tau("voc"), default_tau("coco"), default_tau("custom")) == (0.4, 0.7, 0.4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_autocast_matches_fp32(precision):
    model, tokenizer, weights = load_clip(TINY_CLIP, "random", "cuda", seed=0)
    from pseudolabel.classes import get_class_set

    maps = {}
    for p in ("fp32", precision):
        cfg = SkipCAMConfig(clip_model=TINY_CLIP, clip_weights="random", precision=p)
        maps[p] = SkipCAM(model, tokenizer, get_class_set("voc"), cfg, "cuda", weights)(IMAGE, (3, 15)).loc_maps_lowres
    assert np.abs(maps[precision] - maps["fp32"]).max() < 0.05
