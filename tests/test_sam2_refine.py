"""SAM 2.1 as CEP's refiner, on a tiny random SAM 2.1 built from the sam2 package's classes
(tests/fixtures/tiny_models.py): the refinement against an independent reference on the package's stock
``SAM2ImagePredictor`` (one point per call, the method's selection, δ filter and merge written here from
docs/method.md), the batched path, the registry and checkpoints."""
import numpy as np
import pytest
import torch

from pseudolabel.sam import models as sam_models
from pseudolabel.sam.models import SAM_VARIANTS, download_checkpoint, load_sam
from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner
from pseudolabel.sam.sam2_predictor import SAM2PointPredictor
from tests.fixtures.fake_sam import assert_batched_equals_alone
from tests.fixtures.file_server import serving
from pseudolabel.storage.shards import open_shards
from tests.fixtures.tiny_models import TINY_CLIP, TINY_SAM2, build_tiny_sam2

SIZES_AND_CLASSES = (((50, 70), (3, 15)), ((61, 37), (1, 2, 4)))


@pytest.fixture(scope="module")
def tiny_sam2():
    return load_sam(TINY_SAM2, "random", seed=3)[0]


@pytest.fixture(scope="module")
def scenes():
    """Images with block-shaped Y0 regions (which SAM 2.1's masks can match) and random scores."""
    rng = np.random.default_rng(5)
    out = []
    for (height, width), classes in SIZES_AND_CLASSES:
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        y0 = np.asarray((0, *classes), np.uint8)[rng.integers(0, 1 + len(classes), (height // 9 + 1, width // 9 + 1))]
        y0 = np.kron(y0, np.ones((9, 9), np.uint8))[:height, :width]
        out.append((image, y0, rng.random((1 + len(classes), height, width)).astype(np.float32), classes))
    return out


GRID = 5


@pytest.fixture(scope="module")
def reference_masks(tiny_sam2, scenes):
    """Per scene, the stock ``SAM2ImagePredictor`` on its own copy of the model, one ``predict`` call per grid point
    at a cell centre ``((j+.5)W/n, (i+.5)H/n)`` on a class's Y0 region: ``(class, 3 masks, 3 scores)`` per point."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    copy = build_tiny_sam2()
    copy.load_state_dict(tiny_sam2.state_dict())
    predictor = SAM2ImagePredictor(copy.eval())
    out = []
    for image, y0, _, classes in scenes:
        predictor.set_image(image)
        height, width = y0.shape
        points = []
        for i in range(GRID):
            for j in range(GRID):
                x, y = (j + 0.5) * width / GRID, (i + 0.5) * height / GRID
                if y0[int(y), int(x)] in classes:
                    masks, scores, _ = predictor.predict(point_coords=np.array([[x, y]]), point_labels=np.array([1]),
                                                         multimask_output=True)
                    points.append((int(y0[int(y), int(x)]), masks > 0.5, scores))
        out.append(points)
    return out


def reference_labels(points, y0, classes, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The method (docs/method.md) from the stock predictor's masks: of a point's 3 masks the one with the best IoU
    with its class's Y0 region R (ties: SAM's score), kept if that IoU >= δ; a class's support is the union of its
    kept masks, or R when none is kept; a pixel in one support gets that class, in none background. Returns the
    labels and the conflict pixels (in several supports: the scores decide them, not SAM)."""
    supports = []
    for c in classes:
        region, kept = y0 == c, np.zeros(y0.shape, bool)
        for _, masks, scores in (p for p in points if p[0] == c):
            inter = (masks & region).sum(axis=(1, 2))
            iou = inter / np.maximum((masks | region).sum(axis=(1, 2)), 1)
            best = max(range(3), key=lambda m: (iou[m], scores[m]))
            if iou[best] >= delta:
                kept |= masks[best]
        supports.append(kept if kept.any() else region)
    supports = np.stack(supports)
    claims = supports.sum(axis=0)
    return np.where(claims == 1, np.asarray(classes, np.uint8)[supports.argmax(axis=0)], 0), claims > 1


def test_sam2_refinement_equals_the_stock_predictor_outside_conflict_pixels(tiny_sam2, scenes, reference_masks):
    """0 pixels differ outside conflict pixels; with ``conflict_ignore`` the conflict pixels are exactly the
    reference's (255). δ = 0.3: the tiny random model's masks are large, so some pass and some do not."""
    delta = 0.3
    refiner = SAMRefiner(SAM2PointPredictor(tiny_sam2), SAMRefineConfig(delta=delta, grid_size=GRID))
    ignoring = SAMRefiner(refiner.predictor, SAMRefineConfig(delta=delta, grid_size=GRID, conflict_ignore=True))
    compared = changed = 0
    for embedding, (_, y0, scores, classes), points in zip(refiner.embed([s[0] for s in scenes]), scenes,
                                                           reference_masks):
        expected, conflicts = reference_labels(points, y0, classes, delta)
        labels = refiner.refine_embedded(embedding, y0, scores, classes).labels
        assert int((labels != expected)[~conflicts].sum()) == 0
        assert set(np.unique(labels[conflicts])) <= set(classes)
        ignored = ignoring.refine_embedded(embedding, y0, scores, classes).labels
        assert np.array_equal(ignored, np.where(conflicts, 255, expected))
        compared += int((~conflicts).sum())
        changed += int((labels != y0)[~conflicts].sum())
    assert compared > 4000 and changed > 1000  # SAM 2.1's masks changed many compared pixels


def test_batched_sam2_refinement_equals_image_by_image(tiny_sam2, scenes):
    refiner = SAMRefiner(SAM2PointPredictor(tiny_sam2), SAMRefineConfig(delta=0.0, grid_size=6))
    assert_batched_equals_alone(refiner, [s[0] for s in scenes], [s[1:] for s in scenes])


def test_sam2_point_predictor_equals_the_stock_predictors_logits(tiny_sam2, scenes):
    """Masks and IoUs of SAM2PointPredictor (the factored decoder) against the stock ``SAM2ImagePredictor`` on its own
    copy of the model, at logits clear of the threshold by 1e-4; step sizes and worker threads change nothing."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    image = scenes[0][0]
    copy = build_tiny_sam2()
    copy.load_state_dict(tiny_sam2.state_dict())
    stock = SAM2ImagePredictor(copy.eval())
    stock.set_image(image)
    xy = np.random.default_rng(2).random((6, 1, 2)) * [image.shape[1], image.shape[0]]
    logits, expected_iou, _ = stock.predict(point_coords=xy, point_labels=np.ones((6, 1)), multimask_output=True,
                                            return_logits=True)
    pixels = torch.from_numpy(image).permute(2, 0, 1)

    def predict(predictor: SAM2PointPredictor) -> tuple[np.ndarray, np.ndarray]:
        predictor.set_batch([predictor.encode([pixels])], [image.shape[:2]], [image.shape[:2]])
        masks, iou = predictor.predict_points(torch.from_numpy(xy).float().view(1, 6, 2))
        return masks[0].numpy(), iou[0].numpy()

    masks, iou = predict(SAM2PointPredictor(tiny_sam2, prompts_per_substep=4, threads=1))
    clear = np.abs(logits) > 1e-4
    assert np.array_equal(masks[clear], logits[clear] > 0) and clear.mean() > 0.999
    np.testing.assert_allclose(iou, expected_iou, rtol=1e-4, atol=1e-6)
    for steps, threads in ((1, 2), (5, 2), (6, 1)):
        assert np.array_equal(predict(SAM2PointPredictor(tiny_sam2, prompts_per_substep=steps, threads=threads))[0],
                              masks)


def test_packed_embeddings_hold_the_stock_predictors_features(tiny_sam2, scenes):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    image = scenes[0][0]
    predictor = SAM2PointPredictor(tiny_sam2)
    high_res, embedding = predictor.unpack(predictor.encode([torch.from_numpy(image).permute(2, 0, 1)]))
    stock = SAM2ImagePredictor(tiny_sam2)
    stock.set_image(image)
    assert torch.equal(embedding, stock._features["image_embed"])
    assert all(torch.equal(a, b) for a, b in zip(high_res, stock._features["high_res_feats"]))


def test_the_sam2_variants_and_their_checkpoints(tmp_path, tiny_sam2, monkeypatch):
    for name, filename in (("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt"), ("sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt")):
        spec = SAM_VARIANTS[name]
        assert spec.url == "https://dl.fbaipublicfiles.com/segment_anything_2/092824/" + filename
        assert spec.state_key == "model" and spec.sha256 is None  # no SHA-256 is published for SAM 2.1
    assert {"sam2.1_hiera_s", "sam2.1_hiera_l"} <= set(SAM_VARIANTS)

    official = tmp_path / "official.pt"  # the official layout: {"model": state dict}
    torch.save({"model": tiny_sam2.state_dict()}, official)
    model, identity = load_sam(TINY_SAM2, str(official))
    assert identity["kind"] == "file" and identity["model"] == TINY_SAM2 and len(identity["sha256"]) == 64
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_sam2.state_dict().values()))
    plain = tmp_path / "plain.pt"
    torch.save(tiny_sam2.state_dict(), plain)
    with pytest.raises(ValueError, match=r"plain.pt: not a SAM sam2.1_tiny_test checkpoint \(no 'model' entry\)"):
        load_sam(TINY_SAM2, str(plain))

    with serving({"sam2.1_hiera_tiny.pt": b"weights"}) as base:
        monkeypatch.setitem(SAM_VARIANTS, "sam2.1_hiera_t",
                            sam_models.SAMVariant(**{**vars(SAM_VARIANTS["sam2.1_hiera_t"]),
                                                     "url": base + "sam2.1_hiera_tiny.pt"}))
        assert download_checkpoint("sam2.1_hiera_t", tmp_path).read_bytes() == b"weights"


def test_from_config_picks_the_sam2_predictor():
    refiner = SAMRefiner.from_config(SAMRefineConfig(sam_model=TINY_SAM2, sam_checkpoint="random"))
    assert isinstance(refiner.predictor, SAM2PointPredictor)
    assert refiner.weights == {"kind": "random", "model": TINY_SAM2, "seed": 0}


def test_gen_pseudo_with_sam2_records_the_refiner_and_resumes(tmp_path, capsys):
    from pseudolabel.generate import main, run

    out = tmp_path / "out"
    argv = ["demo", "--clip-model", TINY_CLIP, "--clip-weights", "random", "--sam-model", TINY_SAM2,
            "--sam-checkpoint", "random", "--grid-size", "2", "--device", "cpu", "--out", str(out), "--limit", "2"]
    assert run(argv)["images"] == 2
    shards = open_shards(out)
    assert shards.attrs["config"]["refine"]["sam_model"] == TINY_SAM2
    assert shards.attrs["weights"]["sam"] == {"kind": "random", "model": TINY_SAM2, "seed": 0}
    again = run(argv[:-1] + ["3"])
    assert again["already_done"] == 2 and again["images"] == 1
    other = [("vit_tiny_test" if a == TINY_SAM2 else a) for a in argv]
    capsys.readouterr()
    assert main(other) == 2  # another refiner: not resumed into these shards
    assert "sam_model" in capsys.readouterr().err
