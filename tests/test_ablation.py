"""tools/ablate.sh end to end on a tiny VOC layout with the tiny random-weight models: every row equals a standalone
gen_pseudo run byte for byte, shared work is done once per image, the report's numbers are tools/evaluate.py's (and
an independent count's), resume after kill -9, refusals before any work, torchrun, the offline demo."""
import collections
import filecmp
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from pseudolabel.ablation import shared
from pseudolabel.ablation.cli import main, run
from pseudolabel.cam.skipcam import SkipCAM
from pseudolabel.evaluation.cli import main as evaluate_main
from pseudolabel.generate import run as gen_pseudo
from pseudolabel.sam.refine import SAMRefiner
from pseudolabel.storage.check import check_shards
from pseudolabel.storage.shards import open_shards
from tests.fixtures.tiny_datasets import make_voc

TINY = ["--clip-model", "ViT-T-16-cep-test", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu"]
SWEEP = {"tables": [
    {"name": "skips", "title": "number of skips K", "baseline": "num_skips=3", "rows": ["num_skips=0", "num_skips=3"]},
    {"name": "tau", "title": "tau", "baseline": "tau=0.4", "rows": ["tau=0.4", {"label": "τ 0.6", "flags": "--tau 0.6"}]},
    {"name": "sam", "title": "SAM settings", "rows": ["", "grid_size=8", "delta=0.3", "refine=false"]},
]}
ROWS = ["defaults", "num-skips-0", "tau-0.6", "grid-size-8", "delta-0.3", "no-refine"]


def sweep_args(voc, sweep_file, out, *extra):
    return ["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--shard-size", "2", *TINY,
            "--sweep", str(sweep_file), "--row", "num_skips=0", "--eval-bootstrap", "200", "--eval-workers", "1",
            *extra]


def labels_of(folder):
    shards = open_shards(folder)
    return {i: (shards[i].refined, shards[i].initial, shards[i].loc_maps_lowres) for i in shards}


def same_labels(a, b) -> bool:
    return a.keys() == b.keys() and all(all(np.array_equal(x, y) for x, y in zip(a[i], b[i])) for i in a)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_voc(tmp_path_factory.mktemp("data"), n_train=3, n_val=1, size=(40, 56))


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "sweep.json"
    path.write_text(json.dumps(SWEEP))
    return path


@pytest.fixture(scope="module")
def swept(voc, sweep_file, tmp_path_factory):
    """One sweep, with every call of the shared stages counted."""
    out = tmp_path_factory.mktemp("swept")
    calls = collections.Counter()
    points = collections.Counter()
    image = {"n": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    def embed(self, *args, **kwargs):
        image["n"] += 1             # one image per batch on a CPU
        return original_embed(self, *args, **kwargs)

    def point_masks(self, xy, size):
        points.update((image["n"], float(x), float(y)) for x, y in xy)
        return original_point_masks(self, xy, size)

    original_embed, original_point_masks = SAMRefiner.embed, SAMRefiner.point_masks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SkipCAM, "frozen", counted("frozen", SkipCAM.frozen))
        patch.setattr(SkipCAM, "cams_from_frozen", counted("cams", SkipCAM.cams_from_frozen))
        patch.setattr(SAMRefiner, "embed", counted("embed", embed))
        patch.setattr(SAMRefiner, "point_masks", point_masks)
        report = run(sweep_args(voc, sweep_file, out))
    return out, report, calls, points


def test_rows_are_ordinary_stage_one_outputs(swept):
    out, report, _, _ = swept
    assert sorted(p.name for p in (out / "rows").iterdir()) == sorted(ROWS)   # tables share rows; --row too
    for slug in ROWS:
        assert check_shards(out / "rows" / slug) == []
        assert len(open_shards(out / "rows" / slug)) == 3
    assert [t["name"] for t in report["tables"]] == ["skips", "tau", "sam", "rows"]
    assert [r["row"] for r in report["tables"][2]["rows"]] == ["defaults", "grid-size-8", "delta-0.3", "no-refine"]
    log = (out / "run.log").read_text()    # the log says what each row computes and what it reuses
    assert "row 'num-skips-0': CLIP frozen blocks: computes; Skip-CAM output: computes; SAM vit_tiny_test image " \
           "embedding and point masks: computes" in log
    assert "row 'delta-0.3': CLIP frozen blocks: reuses 'num-skips-0'; Skip-CAM output: reuses 'defaults'" in log
    assert "row 'tau-0.6': CLIP frozen blocks: reuses 'num-skips-0'; Skip-CAM output: computes" in log


def test_each_shared_product_is_computed_once_per_image(swept):
    _, _, calls, points = swept
    assert calls["frozen"] == 3                    # one CLIP setting: once per image
    assert calls["cams"] == 3 * 3                  # Skip-CAM settings: defaults, K=0, τ=0.6
    assert calls["embed"] == 3                     # one SAM model
    assert points and max(points.values()) == 1    # every prompt point of an image decoded once


@pytest.mark.parametrize("slug", ["num-skips-0", "tau-0.6", "delta-0.3", "grid-size-8"])
def test_row_is_byte_identical_to_a_standalone_gen_pseudo_run(swept, slug, tmp_path):
    out, report, _, _ = swept
    command = json.loads((out / "sweep.json").read_text())["about"]["gen_pseudo"][slug]
    argv = shlex.split(command)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path)
    gen_pseudo(argv)
    row = out / "rows" / slug
    shards = sorted(p.name for p in tmp_path.glob("shard-*.h5"))
    assert shards and shards == sorted(p.name for p in row.glob("shard-*.h5"))
    for name in shards:
        assert filecmp.cmp(tmp_path / name, row / name, shallow=False), name
    assert (tmp_path / "config.json").read_bytes() == (row / "config.json").read_bytes()
    standalone, ours = (json.loads((d / "manifest.json").read_text()) for d in (tmp_path, row))
    assert {k: standalone[k] for k in ("config", "shards", "failures", "num_images")} == \
        {k: ours[k] for k in ("config", "shards", "failures", "num_images")}


def test_report_numbers_are_tools_evaluates(swept, tmp_path):
    _, report, _, _ = swept
    for table in report["tables"]:
        for row in table["rows"]:
            result = tmp_path / f"{table['name']}-{row['row']}.json"
            assert evaluate_main(shlex.split(row["evaluate"])[1:] + ["--json", str(result), "--quiet"]) == 0
            data = json.loads(result.read_text())
            assert row["mIoU"] == round(data["mIoU"], 2) and row["mBIoU"] == round(data["mBIoU"], 2)
            assert row["mIoU_ci"] == [round(v, 2) for v in data["ci"]["mIoU"]]
            assert row["mBIoU_ci"] == [round(v, 2) for v in data["ci"]["mBIoU"]]
            assert row["baseline"] == (data["paired"] is None)
            if data["paired"]:
                assert row["diff_mIoU"] == round(data["paired"]["diff"], 2)
                assert row["p_mIoU"] == data["paired"]["p_value"]
                assert row["p_mBIoU"] == data["paired"]["mBIoU"]["p_value"]


def test_report_miou_against_an_independent_count(swept, voc):
    """mIoU by hand: GT PNGs read with PIL, labels straight from the HDF5 files, one confusion matrix."""
    out, report, _, _ = swept
    row = next(r for r in report["tables"][0]["rows"] if r["row"] == "num-skips-0")
    confusion = np.zeros((21, 21), np.int64)
    for shard in (out / "rows" / "num-skips-0").glob("shard-*.h5"):
        with h5py.File(shard, "r") as handle:
            for group in handle["images"].values():
                gt = np.array(Image.open(voc / "SegmentationClass" / f"{group.attrs['image_id']}.png"))
                pred = group["refined"][()]
                keep = gt < 21
                confusion += np.bincount(21 * gt[keep].astype(int) + pred[keep], minlength=441).reshape(21, 21)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    assert abs(row["mIoU"] - 100 * (inter[union > 0] / union[union > 0]).mean()) < 0.006


def test_report_files_and_plots(swept):
    out, report, _, _ = swept
    text = (out / "report.md").read_text()
    assert "RANDOM WEIGHTS" in text and "## number of skips K" in text and "| τ 0.6 | `--tau 0.6` |" in text
    assert "**num_skips=3** (baseline)" in text and "Sweep wall time" in text
    lines = (out / "report.csv").read_text().splitlines()
    assert len(lines) == 1 + sum(len(t["rows"]) for t in report["tables"])
    assert {t["name"]: t["plot"] for t in report["tables"]} == {"skips": "plots/skips.png", "tau": "plots/tau.png",
                                                                 "sam": None, "rows": None}
    assert (out / "plots" / "skips.png").read_bytes()[:4] == b"\x89PNG"
    for table in report["tables"]:
        for row in table["rows"]:
            assert row["ms_per_image"] > 0 and row["images"] == 3
    by_row = {r["row"]: r for t in report["tables"] for r in t["rows"]}
    assert "sam" not in by_row["no-refine"]["ms_by_stage"] and by_row["grid-size-8"]["ms_by_stage"]["sam"] > 0


def test_rerun_of_a_finished_sweep_only_rebuilds_the_report(swept, voc, sweep_file, monkeypatch):
    out, _, _, _ = swept
    kept = {p: p.stat().st_mtime_ns for p in [*(out / "rows").rglob("*"), out / "timing-r000.json"] if p.is_file()}
    report_time = (out / "report.json").stat().st_mtime_ns
    monkeypatch.setattr(shared, "load_clip", lambda *a, **k: pytest.fail("a finished sweep loaded a model"))
    assert main(sweep_args(voc, sweep_file, out)) == 0
    assert kept == {p: p.stat().st_mtime_ns for p in kept}
    assert (out / "report.json").stat().st_mtime_ns > report_time


def test_a_changed_sweep_is_refused_unless_overwrite(voc, tmp_path, capsys):
    base = ["voc", "--data-root", str(voc), "--split", "train", "--out", str(tmp_path), "--limit", "1", *TINY,
            "--gt", "none"]
    assert main([*base, "--row", "refine=false"]) == 0
    assert main([*base, "--row", "refine=false tau=0.6"]) == 2
    assert "holds another sweep" in capsys.readouterr().err
    assert main([*base, "--row", "refine=false tau=0.6", "--overwrite"]) == 0
    assert [p.name for p in (tmp_path / "rows").iterdir()] == ["tau-0.6_no-refine"]


@pytest.mark.parametrize("row, message", [
    ("nonsense=1", "not field=value with a known field"),
    ("num_skips=abc", "invalid int value: 'abc'"),
    ("skip_entry=sideways", "invalid choice: 'sideways'"),
    ("refine=maybe", "is a switch, give true or false"),
    ("grid_size=0", "--grid-size 0: must be >= 1"),
    ("tau=1.5", "--tau 1.5: must be in [0.0, 1.0]"),
    ("--out elsewhere", "unrecognized arguments: --out elsewhere"),
    ("num_skips=8", "num_skips must be in 0..7"),
])
def test_a_bad_row_fails_before_any_work(voc, tmp_path, capsys, row, message):
    out = tmp_path / "out"
    assert main(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), *TINY, "--row", "tau=0.4",
                 "--row", row]) == 2
    error = capsys.readouterr().err
    assert message in error and (row in error or "num_skips" in message)
    assert not out.exists()


def test_resume_after_kill_9_equals_an_uninterrupted_sweep(swept, voc, sweep_file, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pseudolabel.ablation.cli", *sweep_args(voc, sweep_file, out)]
    proc = subprocess.Popen(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("rows/*/.staging/r*/*.npz"))) < 4:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staged = collections.Counter(p.parts[-4] for p in out.glob("rows/*/.staging/r*/*.npz"))
    packed = collections.Counter(p.parent.name for p in out.glob("rows/*/shard-*.h5"))
    assert sum(staged.values()) >= 4 and not (out / "report.json").exists()
    run(sweep_args(voc, sweep_file, out))
    for slug in ROWS:
        summary = json.loads((out / "rows" / slug / "summary-r000.json").read_text())
        assert summary["already_done"] >= staged[slug] + 2 * packed[slug]   # what was finished was kept
        assert same_labels(labels_of(out / "rows" / slug), labels_of(swept[0] / "rows" / slug)), slug
    assert json.loads((out / "report.json").read_text())["tables"][0]["rows"][0]["mIoU"] == \
        swept[1]["tables"][0]["rows"][0]["mIoU"]


def test_two_ranks_under_torchrun_split_the_images_as_gen_pseudo(swept, voc, tmp_path):
    out = tmp_path / "ddp"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29548", "-m", "pseudolabel.ablation.cli", "voc",
           "--data-root", str(voc), "--split", "train", "--out", str(out), *TINY, "--row", "tau=0.6",
           "--row", "delta=0.3", "--gt", "none"]
    result = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for slug in ("tau-0.6", "delta-0.3"):
        manifest = json.loads((out / "rows" / slug / "manifest.json").read_text())
        assert {name.split("-")[1] for name in manifest["shards"]} == {"r000", "r001"}
        assert len(manifest["summaries"]) == 2 and manifest["num_images"] == 3
        assert same_labels(labels_of(out / "rows" / slug), labels_of(swept[0] / "rows" / slug))
    assert (out / "report.md").is_file()


def test_demo_sweep_on_the_bundled_photos(tmp_path):
    report = run(["demo", "--out", str(tmp_path), "--limit", "2", "--image-size", "128", *TINY])
    assert [t["name"] for t in report["tables"]] == ["components", "delta", "grid"]
    assert report["ground_truth"].startswith("no ground truth") and report["random_weights"]
    for table in report["tables"]:
        for row in table["rows"]:
            assert row["baseline"] or 0 <= row["agreement"] <= 100
            assert len(open_shards(tmp_path / "rows" / row["row"])) == 2
    assert (tmp_path / "plots" / "delta.png").is_file() and (tmp_path / "plots" / "grid.png").is_file()
    assert "agreement with baseline" in (tmp_path / "report.md").read_text()
