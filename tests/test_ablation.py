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

from pseudolabel import model_pool
from pseudolabel.ablation.cli import main, run
from pseudolabel.cam.skipcam import SkipCAM
from pseudolabel.evaluation.cli import main as evaluate_main
from pseudolabel.generate import run as gen_pseudo
from pseudolabel.sam.predictor import BatchedPointPredictor
from pseudolabel.sam.refine import SAMRefiner
from pseudolabel.storage.check import check_shards
from pseudolabel.storage.shards import open_shards
from tests.fixtures.outputs import assert_same_labels, one_error_line, stored_labels
from tests.fixtures.tiny_datasets import make_voc
from tests.fixtures.tiny_models import ENTRY_MODULE, REPO, module_command

TINY = ["--clip-model", "ViT-T-16-cep-test", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu"]
SWEEP = {"tables": [
    {"name": "skips", "title": "number of skips K", "baseline": "num_skips=3", "rows": ["num_skips=0", "num_skips=3"]},
    {"name": "tau", "title": "tau", "baseline": "tau=0.4",
     "rows": ["tau=0.4", {"label": "τ 0.6", "flags": "--tau 0.6"}]},
    {"name": "sam", "title": "SAM settings", "rows": ["", "grid_size=8", "delta=0.3", "refine=false"]},
]}
ROWS = ["defaults", "num-skips-0", "tau-0.6", "grid-size-8", "delta-0.3", "no-refine"]


def sweep_args(voc, sweep_file, out, *extra):
    return ["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--shard-size", "2", *TINY,
            "--sweep", str(sweep_file), "--row", "num_skips=0", "--eval-bootstrap", "200", "--eval-workers", "1",
            *extra]


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

    def predict_points(self, xy):
        points[(image["n"], xy.numpy().tobytes())] += 1   # one image at a time: a decoding step's points
        return original_predict(self, xy)

    original_embed, original_predict = SAMRefiner.embed, BatchedPointPredictor.predict_points
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SkipCAM, "frozen", counted("frozen", SkipCAM.frozen))
        patch.setattr(SkipCAM, "label_batch", counted("cams", SkipCAM.label_batch))
        patch.setattr(SAMRefiner, "embed", counted("embed", embed))
        patch.setattr(BatchedPointPredictor, "predict_points", predict_points)
        report = run(sweep_args(voc, sweep_file, out))
    return out, report, calls, points


def test_rows_are_ordinary_stage_one_outputs(swept):
    out, report, _, _ = swept
    assert sorted(p.name for p in (out / "rows").iterdir()) == sorted(ROWS)   # tables share rows; --row too
    for slug in ROWS:
        assert check_shards(out / "rows" / slug) == []
        assert len(open_shards(out / "rows" / slug)) == 3
        # each row was locked as gen_pseudo locks its --out, by the sweep's process
        for lock in (".lock", ".lock-r000"):
            assert json.loads((out / "rows" / slug / lock).read_text())["pid"] == os.getpid()
    assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
    assert [t["name"] for t in report["tables"]] == ["skips", "tau", "sam", "rows"]
    assert [r["row"] for r in report["tables"][2]["rows"]] == ["defaults", "grid-size-8", "delta-0.3", "no-refine"]
    log = (out / "run.log").read_text()    # the log says what each row computes and what it reuses
    assert "row 'num-skips-0': CLIP frozen blocks: computes; Skip-CAM output: computes; SAM vit_tiny_test image " \
           "embedding: computes" in log
    assert "row 'delta-0.3': CLIP frozen blocks: reuses 'num-skips-0'; Skip-CAM output: reuses 'defaults'" in log
    assert "row 'tau-0.6': CLIP frozen blocks: reuses 'num-skips-0'; Skip-CAM output: computes" in log


def test_each_shared_product_is_computed_once_per_image(swept):
    _, _, calls, points = swept
    assert calls["frozen"] == 3                    # one CLIP setting: once per image
    assert calls["cams"] == 3 * 3                  # Skip-CAM settings: defaults, K=0, τ=0.6
    assert calls["embed"] == 3                     # one SAM model
    assert points and max(points.values()) == 1    # every decoding step of an image (its points) decoded once


def assert_row_equals_gen_pseudo(out, slug, tmp_path, *options):
    """Run the row's standalone gen_pseudo command (recorded in sweep.json, with ``options`` added) into ``tmp_path``
    and compare the shards byte for byte, config.json and the manifest."""
    command = json.loads((out / "sweep.json").read_text())["about"]["gen_pseudo"][slug]
    argv = shlex.split(command)[1:] + list(options)
    argv[argv.index("--out") + 1] = str(tmp_path)
    gen_pseudo(argv)
    row = out / "rows" / slug
    shards = sorted(p.name for p in tmp_path.glob("shard-*.h5"))
    assert shards and shards == sorted(p.name for p in row.glob("shard-*.h5"))
    for name in shards:
        assert filecmp.cmp(tmp_path / name, row / name, shallow=False), name
    assert (tmp_path / "config.json").read_bytes() == (row / "config.json").read_bytes()
    standalone, ours = (json.loads((d / "manifest.json").read_text()) for d in (tmp_path, row))
    assert {k: standalone[k] for k in ("config", "shards", "failures", "num_images", "damaged")} == \
        {k: ours[k] for k in ("config", "shards", "failures", "num_images", "damaged")}


@pytest.mark.parametrize("slug", ["num-skips-0", "tau-0.6", "delta-0.3", "grid-size-8"])
def test_row_is_byte_identical_to_a_standalone_gen_pseudo_run(swept, slug, tmp_path):
    assert_row_equals_gen_pseudo(swept[0], slug, tmp_path)


def test_rows_stay_byte_identical_with_masks_in_pieces_and_beyond_the_kept_budget(voc, tmp_path, monkeypatch):
    """SAM's prompts decoded in steps of 5 (as a large image's are) and room for only one step's masks between rows,
    so later rows decode most steps again: the labels are still gen_pseudo's."""
    from pseudolabel.sam import refine

    monkeypatch.setattr(refine, "PIECE_BYTES", 5 * 3 * 40 * 56)   # steps of 5 prompts on a 40x56 image
    monkeypatch.setattr(refine, "KEPT_MASK_BYTES", 5 * 3 * 40 * 56)
    steps = []
    predict = BatchedPointPredictor.predict_points
    monkeypatch.setattr(BatchedPointPredictor, "predict_points", lambda self, xy: (steps.append(xy[0].tolist()),
                                                                                    predict(self, xy))[1])
    out = tmp_path / "sweep"
    run(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--limit", "1", *TINY, "--gt", "none",
         "--grid-size", "8", "--row", "tau=0.4", "--row", "delta=0.3", "--row", "num_skips=0"])
    points = [tuple(p) for step in steps for p in step]
    assert max(map(len, steps)) == 5 and len(points) > len(set(points))   # in pieces, and some decoded again
    for slug in ("defaults", "delta-0.3", "num-skips-0"):
        assert_row_equals_gen_pseudo(out, slug, tmp_path / slug)


def test_a_row_at_batch_size_3_equals_gen_pseudo_at_batch_size_3(voc, tmp_path):
    """The sweep and gen_pseudo, both with --batch-size 3 (a run option: not in the rows' configurations): the same
    shards (a row's labelling steps are gen_pseudo's on every device; on a CPU every image goes through them
    alone)."""
    out = tmp_path / "sweep"
    run(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--limit", "3", *TINY, "--gt", "none",
         "--grid-size", "8", "--batch-size", "3", "--row", "delta=0.3"])
    assert_row_equals_gen_pseudo(out, "delta-0.3", tmp_path / "standalone", "--batch-size", "3")


def test_the_token_budget_applies_to_rows_as_in_gen_pseudo(voc, tmp_path):
    """--max-tokens of the sweep holds for every row, a row may change it, and rows with other budgets do not
    share the frozen blocks (their CAM inputs differ)."""
    out = tmp_path / "sweep"
    run(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--limit", "2", *TINY,
         "--no-refine", "--max-tokens", "6", "--gt", "none", "--row", "tau=0.4", "--row", "max_tokens=0"])
    for slug in ("defaults", "max-tokens-0"):
        assert_row_equals_gen_pseudo(out, slug, tmp_path / slug)
    budgeted, full = (stored_labels(out / "rows" / slug) for slug in ("defaults", "max-tokens-0"))
    image_id = sorted(full)[0]
    assert budgeted[image_id][2].shape[-2:] == (2, 3) and full[image_id][2].shape[-2:] == (3, 4)   # token grids
    assert "--max-tokens 6" in json.loads((out / "sweep.json").read_text())["about"]["gen_pseudo"]["defaults"]


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
    monkeypatch.setattr(model_pool, "load_clip", lambda *a, **k: pytest.fail("a finished sweep loaded a model"))
    assert main(sweep_args(voc, sweep_file, out)) == 0
    assert kept == {p: p.stat().st_mtime_ns for p in kept}
    assert (out / "report.json").stat().st_mtime_ns > report_time


def test_a_changed_sweep_is_refused_unless_overwrite(voc, tmp_path, capsys):
    base = ["voc", "--data-root", str(voc), "--split", "train", "--out", str(tmp_path), "--limit", "1", *TINY,
            "--gt", "none"]
    assert main([*base, "--row", "refine=false"]) == 0
    with pytest.MonkeyPatch.context() as patch:   # refused before any model loads
        patch.setattr(model_pool, "load_clip", lambda *a, **k: pytest.fail("a model loaded for a refused sweep"))
        assert main([*base, "--row", "refine=false tau=0.6"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: '{tmp_path}' holds another sweep (rows no longer in the sweep: no-refine; new rows: tau-0.6_no-refine; table "
        "rows: other baseline and rows). Use another --out, or --overwrite to delete its rows and report and start again")
    assert main([*base, "--row", "refine=false tau=0.6", "--overwrite"]) == 0
    assert [p.name for p in (tmp_path / "rows").iterdir()] == ["tau-0.6_no-refine"]


@pytest.mark.parametrize("row, message", [
    ("nonsense=1", "not field=value with a known field"),
    ("num_skips=abc", "invalid int value: 'abc'"),
    ("skip_entry=sideways", "invalid choice: 'sideways'"),
    ("refine=maybe", "is a switch, give true or false"),
    ("grid_size=0", "--grid-size 0: must be >= 1"),
    ("tau=1.5", "--tau 1.5: must be in [0.0, 1.0]"),
    ("delta=1.5", "--delta 1.5: must be in [0.0, 1.0]"),
    ("max_tokens=-5", "--max-tokens -5: must be >= 0"),
    ("--out elsewhere", "unrecognized arguments: --out elsewhere"),
    ("num_skips=8", "num_skips must be in 0..7"),
])
def test_a_bad_row_fails_before_any_work(voc, tmp_path, capsys, row, message):
    out = tmp_path / "out"
    assert main(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), *TINY, "--row", "tau=0.4",
                 "--row", row]) == 2
    error = capsys.readouterr().err
    assert message in error and (row in error or "num_skips" in message)
    # nothing written: at most the folder's lock, taken before any model loads, and the log saying why
    assert not out.exists() or {p.name for p in out.iterdir()} <= {".lock", ".lock-r000", "run.log"}


def test_a_second_sweep_on_the_same_out_fails_at_once_naming_the_holder(voc, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--limit", "1", *TINY,
            "--no-refine", "--gt", "none", "--row", "tau=0.4"]
    code = (f"import time; from pseudolabel.storage.lock import OutputLock; OutputLock({str(out)!r}).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(model_pool, "load_clip", lambda *a, **k: pytest.fail("a model loaded, --out being locked"))
        assert main(args) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"'{out}' is in use by another run (PID {holder.pid} on " in line and "another --out" in line
        assert not (out / "sweep.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a holder that dies leaves no stale lock
        holder.wait()
    monkeypatch.undo()
    assert main(args) == 0 and len(open_shards(out / "rows" / "defaults")) == 1


def test_a_damaged_row_shard_is_set_aside_and_its_images_labelled_again(swept, voc, sweep_file, tmp_path):
    import shutil

    out = shutil.copytree(swept[0], tmp_path / "out")
    row = out / "rows" / "tau-0.6"
    shard = sorted(row.glob("shard-*.h5"))[-1]
    data = bytearray(shard.read_bytes())
    data[len(data) * 2 // 3] ^= 0x04
    shard.write_bytes(bytes(data))
    assert main(sweep_args(voc, sweep_file, out)) == 0
    assert (row / "damaged" / shard.name).read_bytes() == bytes(data)
    assert [d["shard"] for d in json.loads((row / "manifest.json").read_text())["damaged"]] == [shard.name]
    assert check_shards(row) == []
    for slug in ROWS:   # healed: every row as in the undamaged sweep
        assert_same_labels(stored_labels(swept[0] / "rows" / slug), stored_labels(out / "rows" / slug))
    scores = ("row", "images", "mIoU", "mIoU_ci", "mBIoU", "mBIoU_ci", "diff_mIoU", "p_mIoU", "p_mBIoU")
    assert [{k: r.get(k) for k in scores} for r in json.loads((out / "report.json").read_text())["tables"][1]["rows"]] \
        == [{k: r.get(k) for k in scores} for r in swept[1]["tables"][1]["rows"]]


def test_an_unreadable_image_is_each_rows_failure_as_in_gen_pseudo(tmp_path):
    voc = make_voc(tmp_path / "data", n_train=3, n_val=1, size=(40, 56))
    (voc / "JPEGImages" / "2007_000001.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "sweep"
    run(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), *TINY, "--no-refine", "--gt", "none",
         "--row", "tau=0.4", "--row", "tau=0.6"])
    for slug in ("defaults", "tau-0.6"):
        assert sorted(open_shards(out / "rows" / slug)) == ["2007_000000", "2007_000002"]
        assert_row_equals_gen_pseudo(out, slug, tmp_path / slug)   # the same failures in the manifest too
        failures = json.loads((out / "rows" / slug / "manifest.json").read_text())["failures"]
        assert [(f["image_id"], f["stage"]) for f in failures] == [("2007_000001", "read")]


def test_resume_after_kill_9_equals_an_uninterrupted_sweep(swept, voc, sweep_file, tmp_path):
    out = tmp_path / "killed"
    cmd = module_command("pseudolabel.ablation.cli", *sweep_args(voc, sweep_file, out))
    proc = subprocess.Popen(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=REPO, stdout=subprocess.DEVNULL,
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
        assert_same_labels(stored_labels(swept[0] / "rows" / slug), stored_labels(out / "rows" / slug))
    assert json.loads((out / "report.json").read_text())["tables"][0]["rows"][0]["mIoU"] == \
        swept[1]["tables"][0]["rows"][0]["mIoU"]


def test_two_ranks_under_torchrun_split_the_images_as_gen_pseudo(swept, voc, tmp_path):
    out = tmp_path / "ddp"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    # --standalone: torchrun picks a free port itself, so test runs sharing a machine never collide
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", ENTRY_MODULE, "pseudolabel.ablation.cli", "voc",
           "--data-root", str(voc), "--split", "train", "--out", str(out), *TINY, "--row", "tau=0.6",
           "--row", "delta=0.3", "--gt", "none"]
    result = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for slug in ("tau-0.6", "delta-0.3"):
        manifest = json.loads((out / "rows" / slug / "manifest.json").read_text())
        assert {name.split("-")[1] for name in manifest["shards"]} == {"r000", "r001"}
        assert len(manifest["summaries"]) == 2 and manifest["num_images"] == 3
        assert_same_labels(stored_labels(swept[0] / "rows" / slug), stored_labels(out / "rows" / slug))
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


def test_report_headers_name_the_evaluations_confidence():
    """The markdown columns say the interval the evaluation computed (--eval-confidence), not a fixed 95%."""
    from pseudolabel.ablation.report import report_markdown

    row = {"label": "defaults", "row": "defaults", "baseline": True, "options": "", "mIoU": 50.0,
           "mIoU_ci": [48.0, 52.0], "mBIoU": 30.0, "mBIoU_ci": [29.0, 31.0], "ms_per_image": 10.0}
    report = {"sweep": "s", "description": "", "random_weights": False, "dataset": "voc", "split": "train",
              "ground_truth": "voc:train", "wall": {"images": 0}, "evaluation": {"confidence": 0.9, "bootstrap": 100},
              "tables": [{"title": "t", "rows": [row]}]}
    header = next(line for line in report_markdown(report).splitlines() if line.startswith("| row |"))
    assert "mIoU [90% CI]" in header and "Δ mBIoU [90% CI]" in header and "95%" not in header


def test_a_sam3_row_is_labelled_by_sam3_as_gen_pseudo_labels_it(voc, tmp_path, monkeypatch):
    """A sweep with a CEP row and a ``labeller=sam3-text`` row (SAM 3's processor faked): the SAM 3 row's shards are
    gen_pseudo's with --labeller sam3-text, and the CEP row's are gen_pseudo's."""
    from pseudolabel.labellers import sam3_text
    from tests.test_sam3_text import FakeProcessor

    monkeypatch.setattr(sam3_text, "load_sam3", lambda checkpoint, device: (FakeProcessor(), {"model": "sam3"}))
    out = tmp_path / "sweep"
    run(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--limit", "2", *TINY, "--gt", "none",
         "--grid-size", "8", "--row", "delta=0.3", "--row", "labeller=sam3-text"])
    slugs = sorted(p.name for p in (out / "rows").iterdir())
    sam3 = next(s for s in slugs if "sam3" in s)
    assert open_shards(out / "rows" / sam3).attrs["weights"]["sam3"]["model"] == "sam3"
    for slug in ("delta-0.3", sam3):
        assert_row_equals_gen_pseudo(out, slug, tmp_path / slug)
