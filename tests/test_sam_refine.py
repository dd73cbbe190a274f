"""SAM refinement with a fake predictor (known masks) and with a tiny real SAM against the per-point loop."""
import numpy as np
import pytest
import torch
from segment_anything.utils.amg import build_point_grid

from pseudolabel.sam import models as sam_models
from pseudolabel.sam.models import SAM_VARIANTS, download_checkpoint, load_sam
from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner, grid_points
from tests.fixtures.fake_sam import (FakePredictor, LoopSAMRefiner, assert_batched_equals_alone, fake_embedding,
                                     refine_one, refine_together)
from tests.fixtures.file_server import serving

H, W = 64, 64


def box(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[max(y0, 0):y1, max(x0, 0):x1] = True
    return m


def y0_two_classes():
    y0 = np.zeros((H, W), np.uint8)
    y0[8:32, 8:32] = 3      # class 3 region
    y0[36:60, 30:60] = 15   # class 15 region
    return y0


def scores_for(y0, classes):
    return np.stack([(y0 == 0)] + [(y0 == c) for c in classes]).astype(np.float32)


def refiner(mask_fn, **cfg):
    return SAMRefiner(FakePredictor(mask_fn), SAMRefineConfig(**cfg))


def test_grid_equals_sam_point_grid():
    np.testing.assert_allclose(grid_points(37, 53, 16), build_point_grid(16) * [53, 37])


def test_only_points_on_a_class_prompt_that_class():
    y0 = y0_two_classes()
    r = refiner(lambda x, y: np.stack([box(0, 1, 0, 1)] * 3))
    refinement = refine_one(r, y0, scores_for(y0, (3, 15)), (3, 15))
    owners = np.repeat([3, 15], refinement.prompts)  # one image's prompts come grouped by class, in its classes' order
    assert len(r.predictor.prompted) == len(owners) and r.predictor.images == 1
    for (x, y), c in zip(r.predictor.prompted, owners):
        assert y0[int(y), int(x)] == c
    grid = grid_points(H, W, 16)
    on = y0[grid[:, 1].astype(int), grid[:, 0].astype(int)]
    assert refinement.prompts == (int((on == 3).sum()), int((on == 15).sum())) and len(owners) == (on != 0).sum()


def test_delta_one_keeps_y0_when_no_mask_is_exact_and_delta_zero_replaces_with_masks():
    y0 = y0_two_classes()
    grown = {3: box(6, 34, 6, 34), 15: box(36, 60, 30, 60)}
    fn = lambda x, y: np.stack([grown[3] if y < 33 else grown[15]] * 3)  # noqa: E731
    s = scores_for(y0, (3, 15))
    assert np.array_equal(refine_one(refiner(fn, delta=1.0), y0, s, (3, 15)).labels, y0)  # grown boxes: IoU < 1
    out = refine_one(refiner(fn, delta=0.0), y0, s, (3, 15)).labels
    assert (out[grown[3]] == 3).all() and (out[~grown[3] & ~grown[15]] == 0).all()


def test_iou_versus_containment():
    y0 = y0_two_classes()
    small = box(10, 16, 10, 16)  # inside R_3: containment 1, IoU 36/576
    fn = lambda x, y: np.stack([small] * 3)  # noqa: E731
    s = scores_for(y0, (3, 15))
    iou = refine_one(refiner(fn, delta=0.5), y0, s, (3, 15)).labels
    contain = refine_one(refiner(fn, delta=0.5, filter_metric="containment"), y0, s, (3, 15)).labels
    assert np.array_equal(iou, y0)  # rejected: fallback to R
    assert (contain == 3).sum() == 36 and contain[36:60, 30:60].max() == 15  # replaced by the small mask


def test_component_scope_accepts_per_instance_masks():
    y0 = np.zeros((H, W), np.uint8)
    y0[4:20, 4:20] = 3
    y0[40:56, 40:56] = 3  # two instances of class 3
    inst = {0: box(3, 21, 3, 21), 1: box(39, 57, 39, 57)}
    fn = lambda x, y: np.stack([inst[int(y > 30)]] * 3)  # noqa: E731
    s = scores_for(y0, (3,))
    by_class = refine_one(refiner(fn), y0, s, (3,)).labels
    by_component = refine_one(refiner(fn, filter_scope="component"), y0, s, (3,)).labels
    assert np.array_equal(by_class, y0)  # IoU ~0.4 with the whole class region: rejected
    assert np.array_equal(by_component == 3, inst[0] | inst[1])


def test_mask_selection_variants():
    y0 = y0_two_classes()
    masks = np.stack([box(8, 32, 8, 32), box(0, 40, 0, 40), box(8, 20, 8, 20)])  # region-best, sam-best, largest
    fn = lambda x, y: masks  # noqa: E731
    sc = lambda x, y: np.array([0.1, 0.9, 0.2])  # noqa: E731
    s = scores_for(y0, (3,))
    y3 = np.where(y0 == 3, 3, 0).astype(np.uint8)
    pick = {m: refine_one(SAMRefiner(FakePredictor(fn, sc), SAMRefineConfig(mask_select=m, delta=0.0)), y3, s[:2],
                          (3,)).labels for m in ("region_iou", "sam_score", "largest")}
    assert (pick["region_iou"] == 3).sum() == 24 * 24
    assert (pick["sam_score"] == 3).sum() == 40 * 40
    assert (pick["largest"] == 3).sum() == 12 * 12  # S2C's fixed index 2


def test_merge_conflicts_and_ignore_flags():
    y0 = y0_two_classes()
    big = box(0, 64, 0, 64)
    fn = lambda x, y: np.stack([big] * 3)  # noqa: E731
    s = scores_for(y0, (3, 15))
    s[1, :, :32] += 0.5  # class 3 scores higher on the left half
    out = refine_one(refiner(fn, delta=0.0), y0, s, (3, 15)).labels
    assert (out[:, :32][s[2, :, :32] <= s[1, :, :32]] == 3).all()
    assert set(np.unique(out)) <= {3, 15}
    ignored = refine_one(refiner(fn, delta=0.0, conflict_ignore=True), y0, s, (3, 15)).labels
    assert (ignored == 255).all()
    unsure = refine_one(refiner(fn, delta=0.0, uncertain_ignore=True), y0, s, (3, 15)).labels
    assert (unsure[out != y0] == 255).all() and np.array_equal(unsure[out == y0], y0[out == y0])
    over = refiner(lambda x, y: np.stack([box(8, 20, 8, 20)] * 3), delta=0.0, merge="overwrite")
    assert np.array_equal(refine_one(over, y0, s, (3, 15)).labels, y0)  # overwrite can only grow classes


def test_ensure_point_for_a_small_class():
    y0 = np.zeros((H, W), np.uint8)
    y0[3:5, 3:5] = 7  # between grid centres (2, 6, ...): no grid point lands on it
    fn = lambda x, y: np.stack([box(0, 5, 0, 5)] * 3)  # noqa: E731
    s = scores_for(y0, (7,))
    plain = refiner(fn, delta=0.0)
    assert np.array_equal(refine_one(plain, y0, s, (7,)).labels, y0) and plain.predictor.prompted == []
    ensured = refiner(fn, delta=0.0, ensure_point_per_class=True)
    assert (refine_one(ensured, y0, s, (7,)).labels == 7).sum() == 25 and len(ensured.predictor.prompted) == 1


def test_never_a_label_outside_the_image_classes():
    rng = np.random.default_rng(0)
    for trial in range(10):
        classes = tuple(sorted(rng.choice(np.arange(1, 21), size=3, replace=False).tolist()))
        y0 = np.asarray(classes + (0,), np.uint8)[rng.integers(0, 4, (H, W))]
        fn = lambda x, y: rng.random((3, H, W)) > 0.5  # noqa: E731
        s = rng.random((4, H, W)).astype(np.float32)
        for cfg in ({}, {"filter_scope": "component"}, {"merge": "overwrite", "delta": 0.0}):
            out = refine_one(refiner(fn, **cfg), y0, s, classes).labels
            assert set(np.unique(out)) <= {0, *classes}


def test_disabled_refinement_returns_y0():
    y0 = y0_two_classes()
    refinement = refine_one(refiner(lambda x, y: None, enabled=False), y0, scores_for(y0, (3, 15)), (3, 15))
    assert np.array_equal(refinement.labels, y0) and refinement.labels is not y0
    assert refinement.prompts == refinement.masks_accepted == (0, 0)


def test_prompts_and_accepted_masks_per_class_are_returned_with_the_labels():
    # Grid centres of a 64x64 image at 16x16 are 2, 6, ..., 62. Class 3 (rows and columns 8..31) holds the centres
    # 10..30 on both axes: 6 x 6 = 36 points; class 15 (rows 36..59, columns 30..59) 6 rows x 8 columns = 48 points.
    # Class 3's points left of x = 20 (columns 10, 14, 18: 3 x 6 = 18) get the class region itself (IoU 1), its other
    # points a 1-pixel mask (IoU < 0.5); every class-15 point gets its region.
    y0 = y0_two_classes()
    regions = {3: y0 == 3, 15: y0 == 15}
    fn = lambda x, y: np.stack([regions[15] if y > 33 else regions[3] if x < 20 else box(0, 1, 0, 1)] * 3)  # noqa: E731
    refinement = refine_one(refiner(fn, delta=0.5), y0, scores_for(y0, (3, 15)), (3, 15))
    assert refinement.prompts == (36, 48)
    assert refinement.masks_accepted == (18, 48)
    assert set(refinement.timings) == {"sam_decoder", "filter_merge"}
    # δ = 1 keeps exactly the masks equal to their class region (metric >= δ); δ outside [0, 1] is refused
    assert refine_one(refiner(fn, delta=1.0), y0, scores_for(y0, (3, 15)), (3, 15)).masks_accepted == (18, 48)
    with pytest.raises(ValueError, match=r"--delta 1.01: must be in \[0.0, 1.0\]"):
        SAMRefineConfig(delta=1.01)


def test_refinement_equals_the_per_point_predict_loop():
    from pseudolabel.sam.predictor import BatchedPointPredictor

    model, _ = load_sam("vit_tiny_test", "random", seed=3)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    y0 = np.zeros((50, 70), np.uint8)
    y0[5:30, 5:40], y0[25:48, 35:68] = 3, 15
    s = rng.random((3, 50, 70)).astype(np.float32)
    for cfg, step in ((SAMRefineConfig(delta=0.0), 7), (SAMRefineConfig(delta=0.3, mask_select="sam_score"), 256)):
        fast = refine_one(SAMRefiner(BatchedPointPredictor(model), cfg, points_per_batch=step), y0, s, (3, 15),
                          image=image).labels
        loop = LoopSAMRefiner(model, cfg).refine_image(image, y0, s, (3, 15)).labels
        assert np.array_equal(fast, loop)


def test_checkpoints_local_roundtrip_missing_and_offline(tmp_path, monkeypatch):
    model, identity = load_sam("vit_tiny_test", "random", seed=1)
    assert identity["kind"] == "random"
    with pytest.raises(ValueError, match="no checkpoint"):
        load_sam("vit_tiny_test", str(tmp_path / "x.pth"))
    with pytest.raises(FileNotFoundError, match="sam_vit_b_01ec64.pth"):
        load_sam("vit_b", str(tmp_path / "absent.pth"))

    with serving({}) as base:  # the file is not there: e.g. a proxy's error page
        monkeypatch.setattr(sam_models, "URL_ROOT", base)
        with pytest.raises(RuntimeError, match="sam_vit_b_01ec64.pth.*--sam-checkpoint"):
            download_checkpoint("vit_b", tmp_path)
    cached = tmp_path / SAM_VARIANTS["vit_b"].filename
    cached.write_bytes(b"x")
    assert download_checkpoint("vit_b", tmp_path) == cached  # a cache hit does not download


def test_download_rejects_a_checksum_mismatch(tmp_path, monkeypatch):
    with serving({SAM_VARIANTS["vit_b"].filename: b"junk"}) as base:
        monkeypatch.setattr(sam_models, "URL_ROOT", base)
        with pytest.raises(RuntimeError, match="checksum mismatch.*--sam-checkpoint"):
            download_checkpoint("vit_b", tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-downloaded is left


def test_pieces_bound_the_memory_and_never_change_a_label(monkeypatch):
    # The same refinement in one piece and in the smallest pieces (one prompt per step, one row per merge band), with
    # the real batched predictor of a tiny SAM, every merge option and both filter scopes.
    from pseudolabel.sam import refine
    from pseudolabel.sam.predictor import BatchedPointPredictor

    model, _ = load_sam("vit_tiny_test", "random", seed=5)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (45, 61, 3), dtype=np.uint8)
    y0 = np.zeros((45, 61), np.uint8)
    y0[3:30, 4:40], y0[20:44, 30:60], y0[0:10, 50:61] = 3, 15, 8
    s = rng.random((4, 45, 61)).astype(np.float32)
    configs = [SAMRefineConfig(grid_size=6, delta=0.2),
               SAMRefineConfig(grid_size=6, delta=0.1, merge="overwrite", conflict_ignore=True),
               SAMRefineConfig(grid_size=6, delta=0.3, filter_scope="component", uncertain_ignore=True)]
    whole = [refine_one(SAMRefiner(BatchedPointPredictor(model), cfg), y0, s, (3, 8, 15), image=image)
             for cfg in configs]
    assert SAMRefiner(None, configs[0]).prompts_per_step(45, 61) == 256   # small images: one piece
    monkeypatch.setattr(refine, "PIECE_BYTES", 1)
    assert SAMRefiner(None, configs[0]).prompts_per_step(45, 61) == 1
    for cfg, expected in zip(configs, whole):
        pieces = refine_one(SAMRefiner(BatchedPointPredictor(model), cfg), y0, s, (3, 8, 15), image=image)
        assert np.array_equal(pieces.labels, expected.labels)
        assert (pieces.prompts, pieces.masks_accepted) == (expected.prompts, expected.masks_accepted)
    assert len({w.labels.tobytes() for w in whole}) == 3   # the options matter, so each comparison tests something


def test_prompts_per_step_at_the_sizes_that_matter():
    step = SAMRefiner(None, SAMRefineConfig()).prompts_per_step
    assert step(500, 500) == 256 and step(640, 640) == 218  # a VOC batch's canvas: the configured step; COCO's: fewer
    assert step(4000, 6000) == 3                            # 6000x4000: 3 x 3 masks of 24 M pixels per step


def _scene(rng, classes):
    """A Y0 of random class blocks (64x64) and random scores."""
    y0 = np.zeros((H, W), np.uint8)
    for c in classes:
        y, x = rng.integers(0, 40, 2)
        y0[y: y + rng.integers(8, 30), x: x + rng.integers(8, 30)] = c
    return y0, rng.random((1 + len(classes), H, W)).astype(np.float32)


def _random_boxes(x, y):
    """Three boxes of random sizes around the point (x, y), the same for the same point."""
    half = np.random.default_rng(int(1000 * x + y)).integers(2, 20, (3, 2))
    return np.stack([box(int(y) - h, int(y) + h, int(x) - w, int(x) + w) for h, w in half])


def _random_ious(x, y):
    return np.random.default_rng(int(1000 * x + y) + 1).random(3)


def refine_both(refiner_of, scenes):
    """Each scene ``(y0, scores, classes)`` refined image by image (``refine_embedded``) and all together on their
    canvases (``refine_batch``), each with a fresh refiner from ``refiner_of()``."""
    one = refiner_of()
    alone = [refine_one(one, y0, s, c) for y0, s, c in scenes]
    return alone, refine_together(refiner_of(), [fake_embedding(y0) for y0, _, _ in scenes], scenes)


BATCH_CONFIGS = [{}, {"delta": 0.0}, {"filter_scope": "component", "delta": 0.3}, {"mask_select": "sam_score"},
                 {"mask_select": "largest", "filter_metric": "containment"}, {"merge": "overwrite", "delta": 0.2},
                 {"conflict_ignore": True, "delta": 0.1}, {"uncertain_ignore": True, "delta": 0.4},
                 {"ensure_point_per_class": True, "grid_size": 3}, {"enabled": False}]


@pytest.mark.parametrize("cfg", BATCH_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_batched_refinement_equals_image_by_image(cfg):
    """Several images refined together (prompt counts that differ, so decoding steps hold fewer images as they go
    on; classes padded to the image with the most) against each image alone, with known random masks."""
    rng = np.random.default_rng(7)
    scenes = [(*_scene(rng, c), c) for c in ((3,), (5, 9, 14), (2, 20), (11,))]
    alone, together = refine_both(lambda: SAMRefiner(FakePredictor(_random_boxes, _random_ious),
                                                     SAMRefineConfig(**cfg), points_per_batch=40), scenes)  # steps
    for a, b in zip(alone, together):
        assert np.array_equal(a.labels, b.labels)
        assert a.prompts == b.prompts and a.masks_accepted == b.masks_accepted
    if cfg.get("enabled", True):
        assert sum(sum(r.masks_accepted) for r in alone) > 0 and any((r.labels != s[0]).any()
                                                                     for r, s in zip(alone, scenes))


@pytest.mark.parametrize("cfg", [{"delta": 0.2}, {"filter_scope": "component", "delta": 0.3, "merge": "overwrite",
                                  "uncertain_ignore": True}], ids=("class", "component"))
def test_batched_refinement_keeps_the_memory_budget(cfg, monkeypatch):
    """The batched path within the budgets of large images: a decoding step holds no more prompts than their masks
    on the batch's canvas fit in PIECE_BYTES (here 5), the merge runs in bands of the rows whose scores fit in it
    (26 of 64), and the labels equal those of each image alone in one piece."""
    from pseudolabel.sam import refine as refine_module

    rng = np.random.default_rng(11)
    scenes = [(*_scene(rng, c), c) for c in ((3,), (5, 9, 14), (2, 20))]
    refiner_of = lambda: SAMRefiner(FakePredictor(_random_boxes, _random_ious), SAMRefineConfig(**cfg))  # noqa: E731
    whole, _ = refine_both(refiner_of, scenes)
    steps, bands = [], []
    monkeypatch.setattr(FakePredictor, "predict_points",
                        lambda self, xy, decode=FakePredictor.predict_points: steps.append(xy.shape[0] * xy.shape[1])
                        or decode(self, xy))
    monkeypatch.setattr(SAMRefiner, "_merge_band",
                        lambda self, y0, *rest, merge=SAMRefiner._merge_band: bands.append(y0.shape[-2])
                        or merge(self, y0, *rest))
    monkeypatch.setattr(refine_module, "PIECE_BYTES", 5 * 3 * H * W)
    _, pieces = refine_both(refiner_of, scenes)
    for a, b in zip(whole, pieces):
        assert np.array_equal(a.labels, b.labels)
        assert a.prompts == b.prompts and a.masks_accepted == b.masks_accepted
    prompts = sum(sum(r.prompts) for r in whole)
    assert max(steps) <= 5 and len(steps) >= prompts / 5 and sum(r.prompts != (0,) * len(r.prompts) for r in whole) > 1
    assert bands == [H] * 3 + [26, 26, H - 52]   # each image alone in one band, the batch's in bands of 26 rows
    assert sum(sum(r.masks_accepted) for r in whole) > 0


def test_batched_refinement_when_the_largest_image_has_no_prompt():
    """The masks' canvas is the whole batch's even when its largest image has no prompt (Y0 without its class)."""
    rng = np.random.default_rng(5)
    empty = np.zeros((80, 90), np.uint8)
    scenes = [(*_scene(rng, (3, 8)), (3, 8)), (empty, rng.random((2, 80, 90)).astype(np.float32), (4,))]
    alone, together = refine_both(lambda: SAMRefiner(FakePredictor(_random_boxes, _random_ious),
                                                     SAMRefineConfig(delta=0.2)), scenes)
    for a, b in zip(alone, together):
        assert np.array_equal(a.labels, b.labels) and a.prompts == b.prompts and a.masks_accepted == b.masks_accepted
    assert together[1].prompts == (0,) and sum(together[0].prompts) > 0


def test_decoding_steps_cover_every_prompt_once_chunk_by_chunk():
    """Every prompt in exactly one step, within its own chunk; at most ``limit`` prompts (or one per image) a step;
    a step's images are the first of those holding prompts in the chunk, most first."""
    from pseudolabel.sam.refine import _decoding_steps

    rng = np.random.default_rng(3)
    for sizes, limit in (([10, 7, 3], 8), ([256], 64), ([5, 5, 5, 5], 3), ([40, 1], 100), ([0, 6], 4), ([0], 4)):
        chunks = [np.sort(rng.integers(0, 5, n)) for n in sizes]
        covered = [np.zeros(n, int) for n in sizes]
        for step in _decoding_steps(chunks, limit):
            assert len(step.taken) * step.prompts <= max(limit, len(step.taken))
            chunk = chunks[step.held[0]][step.taken[0].start]
            counts = [int((chunks[i] == chunk).sum()) for i in step.held]
            assert counts == sorted(counts, reverse=True) and counts[-1] > 0
            for i, taken in zip(step.held, step.taken):
                assert 0 < taken.stop - taken.start <= step.prompts and (chunks[i][taken] == chunk).all()
                covered[i][taken] += 1
        assert all((c == 1).all() for c in covered)


def test_true_entries_are_counted_exactly_at_every_length():
    from pseudolabel.sam.refine import _count_true

    rng = np.random.default_rng(5)
    for length in (0, 1, 254, 255, 256, 510, 511, 2000):
        masks = torch.from_numpy(rng.random((4, 3, length)) < 0.7)
        masks[0, 0] = True  # every segment full: 255 per segment fits uint8
        assert torch.equal(_count_true(masks), masks.sum(dim=-1).double())
    assert torch.equal(_count_true(torch.ones(2, 600, 700, dtype=torch.bool)[:, 0]), torch.full((2,), 700.0,
                                                                                                dtype=torch.float64))


def test_batched_refinement_with_sam_equals_image_by_image():
    """A tiny real SAM: images of different sizes refined together (their masks on one canvas, each resized by its
    own map) against each alone."""
    from pseudolabel.sam.predictor import BatchedPointPredictor

    model, _ = load_sam("vit_tiny_test", "random", seed=3)
    rng = np.random.default_rng(2)
    scenes, images = [], []
    for (height, width), classes in (((50, 70), (3, 15)), ((70, 50), (7,)), ((33, 47), (1, 2, 4))):
        images.append(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        y0 = np.asarray((0, *classes), np.uint8)[rng.integers(0, 1 + len(classes), (height // 8 + 1, width // 8 + 1))]
        y0 = np.kron(y0, np.ones((8, 8), np.uint8))[:height, :width]  # blocks: regions the masks can match
        scenes.append((y0, rng.random((1 + len(classes), height, width)).astype(np.float32), classes))
    alone = assert_batched_equals_alone(SAMRefiner(BatchedPointPredictor(model), SAMRefineConfig(delta=0.0),
                                                   points_per_batch=48), images, scenes)
    assert any((r.labels != s[0]).any() for r, s in zip(alone, scenes))  # SAM's masks changed the labels
