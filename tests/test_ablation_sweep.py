"""Sweep files and rows (pseudolabel/ablation/sweep.py), the decoded-mask sharing between settings and the sweep's
model pool."""
import json

import numpy as np
import pytest
import torch

from pseudolabel.ablation.cli import build_parser
from pseudolabel.ablation.sweep import SweepBuilder, SweepError, shipped_sweeps, sweep_file
from pseudolabel.config import MethodOptions


def builder(dataset="voc", *options) -> SweepBuilder:
    args = build_parser().parse_args([dataset, *options])
    return SweepBuilder(MethodOptions.from_args(args), dataset, "train")


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_every_shipped_sweep_is_valid(dataset):
    assert {"paper", "components", "sam_size", "skips", "grid", "prompts", "tau", "delta", "demo"} <= \
        set(shipped_sweeps())
    for name in shipped_sweeps():
        b = builder(dataset)
        b.add_file(sweep_file(name))
        assert b.build(name).rows


def test_the_paper_sweep_tables_baselines_and_shared_rows():
    b = builder()
    b.add_file(sweep_file("paper"))
    sweep = b.build("paper")
    assert [t.name for t in sweep.tables] == ["components", "sam_size", "skips", "grid", "prompts", "tau", "delta"]
    assert [t.baseline.slug for t in sweep.tables] == ["num-skips-0_no-refine"] + ["defaults"] * 6
    assert len(sweep.rows) == 32                    # the defaults (CEP) appear in every table but run once
    by_slug = {r.slug: r for r in sweep.rows}
    assert by_slug["num-skips-0"].config.cam.num_skips == 0 and by_slug["delta-0.9"].config.refine.delta == 0.9
    assert by_slug["defaults"].config.cam.tau == 0.4


def test_coco_rows_start_from_coco_defaults():
    b = builder("coco")
    b.add_file(sweep_file("tau"))
    rows = {r.slug: r.config.cam.tau for r in b.build("tau").rows}
    assert rows["defaults"] == 0.7 and rows["tau-0.4"] == 0.4


def test_both_spellings_and_sweep_options_make_the_same_row():
    b = builder("voc", "--grid-size", "8")
    one = b.row("num_skips=0 refine=false", "test")
    other = b.row("--num-skips 0 --no-refine", "test")
    assert one is other and one.slug == "num-skips-0_no-refine"
    assert one.config.refine.grid_size == 8 and one.flags == ["--num-skips", "0", "--no-refine"]
    assert b.row("use_par=false grid_size=8", "test").slug == "no-par"      # field names work as flag names do


@pytest.mark.parametrize("spec, message", [
    ({"rows": ["num_skips=0", "--num-skips 0"]}, "are the same configuration"),
    ({"rows": ["num_skips=0"], "baseline": "num_skips=1"}, "is not one of the table's rows"),
    ({"rows": []}, "non-empty 'rows' list"),
    ({"rows": ["tau=2"]}, "--tau 2.0: must be in [0.0, 1.0]"),
    ({"rows": ["num_skips=0"], "colour": "red"}, "unknown keys ['colour']"),
])
def test_bad_tables_are_refused_naming_the_table(spec, message):
    with pytest.raises(SweepError, match="table 'k'") as error:
        builder().add_table({"name": "k", **spec}, "sweep.json")
    assert message in str(error.value)


def test_a_sweep_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text("{tables: [")
    with pytest.raises(SweepError, match="mine.json"):
        builder().add_file(path)
    with pytest.raises(SweepError, match="shipped sweeps"):
        sweep_file("no-such-sweep")


def test_long_row_names_stay_short_and_distinct():
    b = builder()
    one = b.row("sam_checkpoint=/very/long/path/" + "a" * 90 + "/sam_vit_b.pth", "test")
    two = b.row("sam_checkpoint=/very/long/path/" + "a" * 90 + "/sam_vit_l.pth", "test")
    assert len(one.slug) <= 80 and one.slug != two.slug


def test_changed_tables_are_differences_of_the_identity():
    b = builder()
    b.add_table({"name": "k", "rows": ["num_skips=0", "num_skips=3"], "baseline": "num_skips=3"}, "x")
    stored = json.loads(json.dumps(b.build("x").identity()))
    other = builder()
    other.add_table({"name": "k", "rows": ["num_skips=1", "num_skips=3"], "baseline": "num_skips=3"}, "x")
    assert b.build("x").differences(stored) == []
    changes = other.build("x").differences({**stored, "about": {"anything": 1}})
    assert changes == ["rows no longer in the sweep: num-skips-0", "new rows: num-skips-1", "table k: other rows"]
    stored["rows"]["defaults"]["cam"]["tau"] = 0.6   # the same row name, another configuration
    assert b.build("x").differences(stored) == ["row defaults: cam.tau: 0.6 -> 0.4"]


def tiny_refiner(**options):
    from pseudolabel.sam.models import load_sam
    from pseudolabel.sam.predictor import BatchedPointPredictor
    from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner
    from tests.fixtures.tiny_models import register_tiny_models

    register_tiny_models()
    predictor = BatchedPointPredictor(load_sam("vit_tiny_test", "random", seed=2)[0])
    return lambda **cfg: SAMRefiner(predictor, SAMRefineConfig(**{"grid_size": 8, **options, **cfg}))


def scene(seed: int):
    """An image, its Y0 ``(1, H, W)`` (class 3 in a box) and scores ``(1, 2, H, W)``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    y0 = np.zeros((40, 56), np.uint8)
    y0[8:30, 10:40] = 3
    scores = rng.random((2, 40, 56)).astype(np.float32)
    return image, torch.from_numpy(y0)[None], torch.from_numpy(scores)[None]


def counted_decoding(monkeypatch) -> list:
    """The shapes of the decoding calls (``predict_points``) made from now on, in order."""
    from pseudolabel.sam.predictor import BatchedPointPredictor

    calls = []
    predict = BatchedPointPredictor.predict_points
    monkeypatch.setattr(BatchedPointPredictor, "predict_points", lambda self, xy: (calls.append(xy.shape),
                                                                                    predict(self, xy))[1])
    return calls


def test_a_mask_cache_gives_a_later_setting_the_same_masks_without_decoding(monkeypatch):
    """Settings whose prompts are equal (δ 0 and 0.7) share the decoding steps through a MaskCache: the second
    decodes nothing and gets the labels it gets alone; other prompts (grid 4), or no room in the budget, decode
    again."""
    from pseudolabel.sam import refine

    make = tiny_refiner()
    image, y0, scores = scene(0)
    embedding = make().embed([image])[0]
    calls = counted_decoding(monkeypatch)

    def refined(refiner, cache=None):
        return refiner.refine_batch([embedding], y0, scores, [(40, 56)], [(3,)], cache)

    alone = {delta: refined(make(delta=delta)) for delta in (0.0, 0.7)}
    steps = len(calls) // 2                                         # a setting's decoding steps
    assert steps > 1 and len(calls) == 2 * steps
    cache = refine.MaskCache()
    first, second = refined(make(delta=0.0), cache), refined(make(delta=0.7), cache)
    assert len(calls) == 3 * steps                                  # the second setting decoded nothing
    for delta, shared in ((0.0, first), (0.7, second)):
        assert torch.equal(shared.labels, alone[delta].labels)
        assert torch.equal(shared.masks_accepted, alone[delta].masks_accepted)
    assert not torch.equal(first.masks_accepted, second.masks_accepted)   # δ matters: the settings differ
    assert second.reused_seconds > 0 and first.reused_seconds == 0
    assert second.timings["sam_decoder"] == pytest.approx(first.timings["sam_decoder"])
    refined(make(grid_size=4), cache)
    assert len(calls) > 3 * steps                                   # other points: decoded
    decoded = len(calls)
    monkeypatch.setattr(refine, "KEPT_MASK_BYTES", 10)
    small = refine.MaskCache()
    refined(make(delta=0.3), small), refined(make(delta=0.7), small)
    assert len(calls) == decoded + 2 * steps and small.steps == {}  # beyond the budget: decoded again


def test_settings_share_the_decoding_steps_of_the_grid_rows_they_prompt_alike(monkeypatch):
    """Y0s of three Skip-CAM settings on one image: the same grid points on the image's classes, but each point on
    the other class (prompts come in grid order, so nothing is decoded again), and the same points but one more grid
    row (only that row is decoded: prompts are decoded a grid row at a time). Each gets the labels it gets alone."""
    from pseudolabel.sam import refine

    make = tiny_refiner()
    image, _, _ = scene(1)
    scores = torch.from_numpy(np.random.default_rng(1).random((1, 3, 40, 56)).astype(np.float32))
    left, right, grown = (np.zeros((40, 56), bool) for _ in range(3))
    left[6:34, 4:26], right[6:34, 30:52], grown[2:34, 4:26] = True, True, True   # grid rows at y = 2.5 + 5 i
    y0s = [torch.from_numpy(np.where(a, p, np.where(right, q, 0)).astype(np.uint8))[None]
           for a, p, q in ((left, 3, 8), (left, 8, 3), (grown, 3, 8))]
    embedding = make().embed([image])[0]
    calls = counted_decoding(monkeypatch)

    def refined(y0, cache=None):
        return make().refine_batch([embedding], y0, scores, [(40, 56)], [(3, 8)], cache)

    alone = [refined(y0) for y0 in y0s]
    cache, decoded = refine.MaskCache(), []
    shared = []
    for y0 in y0s:
        before = len(calls)
        shared.append(refined(y0, cache))
        decoded.append(len(calls) - before)
    assert decoded[0] > 1 and decoded[1:] == [0, 1]
    for a, b in zip(alone, shared):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.masks_accepted, b.masks_accepted)
    assert not torch.equal(shared[0].labels, shared[1].labels)      # the settings' labels differ


def test_a_sweep_row_on_sam_2_1_gets_sam_2_1s_predictor():
    """The sweep's models load as gen_pseudo's do (``load_predictor``): a SAM 2.1 row gets SAM 2.1's own predictor."""
    from pseudolabel.model_pool import ModelPool
    from pseudolabel.classes import get_class_set
    from pseudolabel.config import PseudoLabelConfig
    from pseudolabel.sam.models import SAM_VARIANTS
    from pseudolabel.sam.refine import SAMRefineConfig
    from pseudolabel.sam.sam2_predictor import SAM2PointPredictor
    from tests.fixtures.tiny_models import TINY_SAM2, register_tiny_models

    register_tiny_models()
    config = PseudoLabelConfig("voc", "train", refine=SAMRefineConfig(sam_model=TINY_SAM2, sam_checkpoint="random"))
    refiner = ModelPool(get_class_set("voc"), "cpu", points_per_batch=9).refiner(config)
    assert SAM_VARIANTS[TINY_SAM2].predictor is not None   # SAM 2.1 registers a predictor of its own
    assert isinstance(refiner.predictor, SAM2PointPredictor) and refiner.points_per_batch == 9
