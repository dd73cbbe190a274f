"""Sweep files and rows (pseudolabel/ablation/sweep.py) and the per-point mask sharing, without models."""
import collections
import json

import numpy as np
import pytest
import torch

from pseudolabel.ablation.cli import build_parser
from pseudolabel.ablation.shared import PointMasks, RowTime
from pseudolabel.ablation.sweep import SweepBuilder, SweepError, shipped_sweeps, sweep_file


def builder(dataset="voc", *options) -> SweepBuilder:
    args = build_parser().parse_args([dataset, *options])
    return SweepBuilder(args, dataset, "train")


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


def test_point_masks_decode_each_point_once_keep_it_while_expected_and_charge_every_user():
    decoded = []

    def decode(xy):
        decoded.extend(map(tuple, xy.tolist()))
        masks = torch.stack([torch.full((3, 2, 3), int(x) % 2 == 0) for x, _ in xy])
        return masks, torch.tensor(xy[:, :1]).repeat(1, 3).float()

    first_row, second_row = np.array([[0.5, 0.5], [1.5, 0.5]]), np.array([[1.5, 0.5], [2.5, 0.5], [0.5, 0.5]])
    masks = PointMasks(decode)
    masks.expect(first_row)
    masks.expect(second_row)
    first = masks(first_row)
    assert set(masks.points) == {(0.5, 0.5), (1.5, 0.5)}                    # the second row will ask for both
    masks.asked = 0
    second, iou = masks(second_row)
    assert decoded == [(0.5, 0.5), (1.5, 0.5), (2.5, 0.5)]                 # each point decoded once
    assert torch.equal(second[0], first[0][1]) and torch.equal(second[2], first[0][0])
    assert iou[:, 0].tolist() == [1.5, 2.5, 0.5] and masks.points == {}    # nothing asked for any more: dropped
    assert masks.asked == 3 and masks.seconds_per_point == masks.seconds / 3 > 0
    stages = RowTime(collections.Counter(skipcam=1.0, sam=2.0), masks, 3).by_stage()
    assert stages["skipcam"] == 1.0 and stages["sam"] == pytest.approx(2.0 + masks.seconds)
    assert stages["sam_decoder"] == pytest.approx(masks.seconds)


def test_point_masks_are_kept_for_later_rows_within_the_budget():
    decoded = []

    def decode(xy):   # masks that mark their point on an 8x8 image, IoUs that name its x
        decoded.extend(tuple(p) for p in xy.tolist())
        masks = torch.zeros(len(xy), 3, 8, 8, dtype=torch.bool)
        for i, (x, y) in enumerate(xy):
            masks[i, :, int(y), int(x)] = True
        return masks, torch.tensor(xy[:, :1], dtype=torch.float32).repeat(1, 3)

    points = PointMasks(decode, budget=2 * 3 * 8 * 8)   # two points' masks of an 8x8 image
    xy = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    points.expect(xy)
    points.expect(xy[::-1])                                    # two rows ask for the same points
    for asked in (xy, xy[::-1]):
        masks, iou = points(asked)
        for i, (x, y) in enumerate(asked):
            assert masks[i, :, int(y), int(x)].all() and int(masks[i].sum()) == 3 and iou[i, 0] == x
        assert points.kept_bytes <= points.budget
    assert decoded == [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (3.0, 3.0)]   # the third is beyond the budget: again
    assert points.points == {} and points.kept_bytes == 0 and not points.uses   # dropped after the last ask


def test_a_sweep_row_on_sam_2_1_gets_sam_2_1s_predictor():
    """The sweep's models load as gen_pseudo's do (``load_predictor``): a SAM 2.1 row gets SAM 2.1's own predictor."""
    from pseudolabel.ablation.shared import ModelPool
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
