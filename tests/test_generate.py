"""End-to-end stage one through the CLI on a tiny VOC layout with tiny random-weight models."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from pseudolabel.cam.skipcam import SkipCAMConfig
from pseudolabel.exits import INTERRUPTED, TERMINATED
from pseudolabel.generate import main, run
from pseudolabel.storage.checksum import seal
from pseudolabel.storage.check import check_shards
from pseudolabel.storage.shards import open_shards, shard_image_ids
from tests.fixtures.outputs import assert_same_labels, one_error_line, stored_labels
from tests.fixtures.tiny_datasets import make_voc
from tests.fixtures.tiny_models import ENTRY_MODULE, REPO, module_command

TINY = ["--clip-model", "ViT-T-16-cep-test-quickgelu", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu"]


def args_for(voc, out, *extra):
    return ["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--shard-size", "2", *TINY, *extra]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_voc(tmp_path_factory.mktemp("data"), n_train=5, n_val=1, size=(40, 56))


@pytest.fixture(scope="module")
def full_run(voc, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    summary = run(args_for(voc, out))
    return out, summary


def test_shards_layout_attributes_and_values(full_run, voc):
    out, summary = full_run
    assert summary["images"] == 5 and summary["failures"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_images"] == 5 and len(manifest["shards"]) == 3  # shard size 2
    shards = open_shards(out)
    assert shards.attrs["random_weights"] is True and shards.attrs["dataset"] == "voc"
    assert shards.attrs["config"]["cam"]["tau"] == 0.4 and shards.attrs["config"]["cam"]["num_skips"] == 3
    assert shards.attrs["weights"]["clip"]["kind"] == "random"
    from pseudolabel.datasets import build_dataset

    data = build_dataset("voc", voc, "train")
    for sample in data:
        record = shards[sample.image_id]
        assert record.size == (40, 56) and record.class_ids == sample.class_ids
        assert set(np.unique(record.refined)) <= {0, *sample.class_ids}
        assert set(np.unique(record.initial)) <= {0, *sample.class_ids}
        assert record.loc_maps.shape == (len(sample.class_ids), 40, 56)
    assert not list(out.glob("*.tmp")) and not list((out / ".staging").rglob("*.npz"))


def grid_prompt_counts(y0, class_ids, n=16):
    """Prompt points per class, counted by hand: the n x n cell centres ((j + 0.5) W / n, (i + 0.5) H / n) whose
    pixel in Y0 holds the class."""
    height, width = y0.shape
    counts = dict.fromkeys(class_ids, 0)
    for i in range(n):
        for j in range(n):
            value = int(y0[int((i + 0.5) * height / n), int((j + 0.5) * width / n)])
            if value in counts:
                counts[value] += 1
    return tuple(counts[c] for c in class_ids)


def test_per_class_records_match_the_labels(full_run):
    out, _ = full_run
    shards = open_shards(out)
    assert check_shards(out) == []        # the checker's class_stats checks pass too
    for image_id in shards:
        record = shards[image_id]
        stats = record.class_stats
        assert stats is not None and stats == shards.read_class_stats(image_id)
        assert stats.class_ids == record.class_ids
        assert stats.y0_pixels == tuple(int((record.initial == c).sum()) for c in record.class_ids)
        assert stats.refined_pixels == tuple(int((record.refined == c).sum()) for c in record.class_ids)
        assert stats.changed_pixels == int((record.refined != record.initial).sum())
        assert stats.prompts == grid_prompt_counts(record.initial, record.class_ids)
        assert all(0 <= a <= p for a, p in zip(stats.masks_accepted, stats.prompts))
        assert stats.lost == tuple(int((record.refined == c).sum()) == 0 for c in record.class_ids)


TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} rank 0 (INFO|WARNING|ERROR) ([\w.]+): (.*)$")


def log_headers(path) -> list[tuple[str, str, str]]:
    """(level, logger, message) of every timestamped line of a run.log (JSON blocks follow some of them)."""
    return [match.groups() for line in path.read_text().splitlines() if (match := TIMESTAMPED.match(line))]


def test_run_log_records_each_run_and_the_console_keeps_the_progress_bar(voc, tmp_path, capsys):
    run(args_for(voc, tmp_path, "--limit", "2"))
    console = capsys.readouterr()
    first = (tmp_path / "run.log").read_text()
    messages = [message for _, _, message in log_headers(tmp_path / "run.log")]
    assert messages[0].startswith("run started:") and "rank 0 of 1" in messages[0]
    for title in ("configuration", "dataset", "weights", "environment", "0 failure(s)",
                  "summary (ms per image by stage, throughput)"):
        assert title in messages, title
    assert any("2 images to label (0 already done)" in m for m in messages)
    assert messages[-1] == "run finished"
    assert '"tau": 0.4' in first and '"kind": "random"' in first and '"ms_per_image"' in first
    assert "RANDOM WEIGHTS" in first
    assert "rank 0: 100%" in console.err and '"tau"' not in console.err + console.out   # details: file only
    run(args_for(voc, tmp_path, "--limit", "2"))                 # a resumed run appends
    text = (tmp_path / "run.log").read_text()
    assert text.startswith(first)
    messages = [message for _, _, message in log_headers(tmp_path / "run.log")]
    assert sum(m.startswith("run started:") for m in messages) == 2 and messages[-1] == "run finished"
    assert any("0 images to label (2 already done)" in m for m in messages)


def test_a_run_that_stops_before_its_folder_exists_leaves_no_folder(tmp_path, capsys):
    assert main(args_for(tmp_path / "no-such-root", tmp_path / "out")) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, allowed", [
    ("--delta", "1.5", r"in \[0.0, 1.0\]"), ("--delta", "-0.1", r"in \[0.0, 1.0\]"), ("--max-tokens", "-5", ">= 0"),
    ("--batch-size", "-3", ">= 1"), ("--batch-size", "0", ">= 1"), ("--workers", "-1", ">= 1"),
    ("--workers", "0", ">= 1"), ("--shard-size", "0", ">= 1"), ("--shard-size", "-1", ">= 1")])
def test_out_of_range_options_are_refused_before_anything_is_written(voc, tmp_path, capsys, option, value, allowed):
    try:
        status = main(args_for(voc, tmp_path / "out", option, value))
    except SystemExit as stop:  # argparse's own refusal
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2 and option in err and re.search(allowed, err) and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_ablation_flags_reach_the_labels(voc, tmp_path, full_run):
    run(args_for(voc, tmp_path, "--num-skips", "0", "--no-refine", "--limit", "2"))
    shards = open_shards(tmp_path)
    assert shards.attrs["config"]["cam"]["num_skips"] == 0 and shards.attrs["config"]["refine"]["enabled"] is False
    for image_id in shards:
        assert np.array_equal(shards[image_id].refined, shards[image_id].initial)  # no refinement
        stats = shards[image_id].class_stats
        assert stats.prompts == stats.masks_accepted == (0,) * len(stats.class_ids) and stats.changed_pixels == 0


def test_config_change_is_refused_unless_overwrite(voc, tmp_path, capsys):
    run(args_for(voc, tmp_path, "--limit", "1"))
    assert main(args_for(voc, tmp_path, "--limit", "1", "--tau", "0.6")) == 2
    assert "cam.tau: 0.4 -> 0.6" in capsys.readouterr().err
    assert "ERROR pseudolabel.run_log: run stopped by ValueError:" in (tmp_path / "run.log").read_text()
    run(args_for(voc, tmp_path, "--limit", "1", "--tau", "0.6", "--overwrite"))
    assert open_shards(tmp_path).attrs["config"]["cam"]["tau"] == 0.6


def folder_state(out) -> dict:
    """Every file of an output folder but its run log and locks, with its bytes."""
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.log" and not p.name.startswith(".lock")}


def test_a_resume_compares_every_shard_not_only_config_json(voc, tmp_path, capsys):
    out = tmp_path / "out"
    fast = ("--no-refine", "--shard-size", "1", "--limit", "4")
    run(args_for(voc, out, *fast))                              # tau 0.4, the VOC default: 4 shards
    config = json.loads((out / "config.json").read_text())
    config["cam"]["tau"] = 0.6                                  # config.json edited by hand
    (out / "config.json").write_text(json.dumps(config))
    for shard in sorted(out.glob("shard-*.h5"))[2:]:            # and some shards removed
        shard.unlink()
    before = folder_state(out)
    assert main(args_for(voc, out, *fast, "--tau", "0.6")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "cam.tau: 0.4 -> 0.6" in line and "shard-r000-00000.h5" in line and "--overwrite" in line and "--out" in line
    assert folder_state(out) == before                          # nothing written
    problems = check_shards(out)
    assert any("config.json contradicts" in p and "cam.tau: 0.4 -> 0.6" in p and "shard-r000-00001.h5" in p
               for p in problems), problems


def test_a_resume_compares_the_records_an_interrupted_run_staged(voc, tmp_path, capsys, monkeypatch):
    """Records staged but not yet packed when a run stopped carry the identity they were made under: after a hand
    edit of config.json a rerun with the edited setting is refused instead of packing them under it."""
    out = tmp_path / "out"
    fast = ("--no-refine", "--shard-size", "50", "--limit", "3")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("pseudolabel.storage.run_store.RunStore.pack", stop)
    assert main(args_for(voc, out, *fast)) == 130               # stopped before the first shard: 3 records staged
    monkeypatch.undo()
    assert len(list(out.glob(".staging/r000/*.npz"))) == 3 and not list(out.glob("shard-*.h5"))
    config = json.loads((out / "config.json").read_text())
    config["cam"]["tau"] = 0.6
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    before = folder_state(out)
    assert main(args_for(voc, out, *fast, "--tau", "0.6")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "cam.tau: 0.4 -> 0.6" in line and ".staging/r000" in line and "--overwrite" in line, line
    assert folder_state(out) == before
    config["cam"]["tau"] = 0.4                                  # the edit undone, the run's own settings resume them
    (out / "config.json").write_text(json.dumps(config))
    summary = run(args_for(voc, out, *fast))
    assert summary["already_done"] == 3 and summary["images"] == 0


def test_runtime_settings_are_not_compared_on_resume(voc, tmp_path, full_run):
    """Batch size, workers, shard size and prompts per step change no label: a resume with other values goes on, and
    so does a folder whose configuration (config.json, every shard) still holds ``refine.points_per_batch``, as
    earlier versions stored it."""
    out = tmp_path / "out"
    run(args_for(voc, out, "--limit", "2", "--shard-size", "1", "--points-per-batch", "64"))
    config = json.loads((out / "config.json").read_text())
    assert "points_per_batch" not in config["refine"]
    config["refine"]["points_per_batch"] = 64                     # as an earlier version wrote it
    (out / "config.json").write_text(json.dumps(config))
    for shard in out.glob("shard-*.h5"):
        with h5py.File(shard, "r+") as handle:
            stored = json.loads(handle.attrs["config"])
            stored["refine"]["points_per_batch"] = 64
            handle.attrs["config"] = json.dumps(stored)
        shard.write_bytes(seal(shard.read_bytes()))               # its digest again, as the writer seals it
    summary = run(args_for(voc, out, "--points-per-batch", "5", "--batch-size", "2", "--workers", "1"))
    assert summary["already_done"] == 2 and summary["images"] == 3
    assert_same_labels(stored_labels(full_run[0]), stored_labels(out))
    assert check_shards(out) == []


def test_outputs_of_the_gelu_architecture_are_not_resumed(voc, tmp_path, capsys):
    gelu = args_for(voc, tmp_path, "--limit", "1", "--clip-model", "ViT-T-16-cep-test")
    run(gelu)
    assert main(args_for(voc, tmp_path, "--limit", "1")) == 2
    assert "weights.clip.activation: 'GELU' -> 'QuickGELU'" in capsys.readouterr().err
    # outputs written before the activation was recorded (its identity had no 'activation') are refused too
    config = json.loads((tmp_path / "config.json").read_text())
    config["weights"]["clip"].pop("activation")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(gelu) == 2
    assert "weights.clip.activation: None -> 'GELU'" in capsys.readouterr().err


def test_corrupt_image_is_recorded_and_skipped(tmp_path):
    voc = make_voc(tmp_path / "data", n_train=3, n_val=1, size=(40, 56))
    (voc / "JPEGImages" / "2007_000001.jpg").write_bytes(b"\xff\xd8\xff garbage")
    summary = run(args_for(voc, tmp_path / "out"))
    assert summary["images"] == 2 and summary["failures"] == 1
    failures = open_shards(tmp_path / "out").failures
    assert failures[0]["image_id"] == "2007_000001" and "cannot decode" in failures[0]["reason"]
    assert "2007_000001" not in open_shards(tmp_path / "out")
    log = (tmp_path / "out" / "run.log").read_text()
    assert "WARNING pseudolabel.generate: skipped 2007_000001: cannot decode" in log
    assert "WARNING pseudolabel.run_log: 1 failure(s)" in log and '"image_id": "2007_000001"' in log


def test_unwritable_output_is_a_clear_error(voc, tmp_path, capsys):
    if os.geteuid() == 0:
        target = "/proc/cep-cannot-write-here"  # root ignores permissions; /proc refuses new files
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = str(tmp_path / "ro" / "out")
    assert main(args_for(voc, target)) == 2
    assert "error:" in capsys.readouterr().err


def test_resume_after_kill_9_gives_the_same_labels(voc, tmp_path, full_run):
    out = tmp_path / "killed"
    cmd = module_command("pseudolabel.generate", *args_for(voc, out, "--shard-size", "2"))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("shard-*.h5")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = len(list(out.glob("shard-*.h5")))
    summary = run(args_for(voc, out))
    assert summary["already_done"] >= 2 * min(finished_before, 1)
    assert summary["images"] + summary["already_done"] == 5
    expected, got = stored_labels(full_run[0]), stored_labels(out)
    assert_same_labels(expected, got)
    assert not list(out.glob("*.tmp"))
    for shard in out.glob("shard-*.h5"):
        with h5py.File(shard, "r") as handle:  # every shard is complete and readable
            assert len(handle["images"]) >= 1


def test_two_ranks_under_torchrun_share_the_work(voc, tmp_path, full_run):
    out = tmp_path / "ddp"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    # --standalone: torchrun picks a free port itself, so test runs sharing a machine never collide
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", ENTRY_MODULE, "pseudolabel.generate",
           *args_for(voc, out)]
    result = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=REPO, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    by_rank = {name.split("-")[1] for name in manifest["shards"]}
    assert by_rank == {"r000", "r001"} and manifest["num_images"] == 5 and len(manifest["summaries"]) == 2
    assert_same_labels(stored_labels(full_run[0]), stored_labels(out))  # the same labels as one process
    holders = {name: json.loads((out / name).read_text()) for name in (".lock", ".lock-r000", ".lock-r001")}
    assert holders[".lock"]["pid"] == holders[".lock-r000"]["pid"] != holders[".lock-r001"]["pid"]  # rank 0: both


def test_config_round_trips_through_the_shard_attributes(full_run):
    from pseudolabel.config import PseudoLabelConfig

    stored = open_shards(full_run[0]).attrs["config"]
    config = PseudoLabelConfig.from_dict(stored)
    assert config.to_dict() == stored
    assert config.cam.num_skips == 3 and config.refine.delta == 0.5 and config.refine.grid_size == 16


def test_demo_keeps_openai_clip_weights_found_in_the_cache_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from pseudolabel.config import PseudoLabelConfig
    from pseudolabel.generate import demo_weights

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # HF_HUB_OFFLINE=1 (conftest): nothing is reached
    cfg = PseudoLabelConfig("voc", "all")
    assert "CLIP weights could not be downloaded" in demo_weights(cfg)[0] and cfg.cam.clip_weights == "random"
    snapshot = tmp_path / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"")  # where open_clip's download of the openai tag goes
    cfg = PseudoLabelConfig("voc", "all", SkipCAMConfig(clip_model="ViT-B/16"))
    demo_weights(cfg)
    assert (cfg.cam.clip_weights, cfg.cam.clip_model) == ("openai", "ViT-B-16-quickgelu")


def test_a_second_run_on_the_same_out_fails_at_once_naming_the_holder(voc, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    code = (f"import time; from pseudolabel.storage.lock import OutputLock; OutputLock({str(out)!r}).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"

        def no_models(*args):
            raise AssertionError("models loaded although the output is locked")
        monkeypatch.setattr("pseudolabel.generate.load_models", no_models)
        assert main(args_for(voc, out)) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"'{out}' is in use by another run (PID {holder.pid} on " in line and "another --out" in line
    finally:
        holder.send_signal(signal.SIGKILL)  # a holder that dies leaves no stale lock
        holder.wait()
    monkeypatch.undo()
    assert run(args_for(voc, out, "--limit", "1"))["images"] == 1


def test_a_reordered_class_list_is_refused_on_resume(tmp_path, capsys):
    from tests.fixtures.tiny_datasets import make_custom

    images, labels, classes = make_custom(tmp_path, {"a": ["cat"], "b": ["dog"]})
    args = ["custom", "--images", str(images), "--labels", str(labels), "--classes", str(classes),
            "--out", str(tmp_path / "out"), *TINY, "--no-refine"]
    run(args)
    classes.write_text("dog\ncat\n")  # same names, other order: label values would change meaning
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "class_set.classes: ['background', 'cat', 'dog'] -> ['background', 'dog', 'cat']" in line


def test_a_damaged_shard_is_set_aside_and_its_images_labelled_again(voc, tmp_path, full_run):
    import shutil

    out = shutil.copytree(full_run[0], tmp_path / "out")
    shard = sorted(out.glob("shard-*.h5"))[1]
    victims = sorted(shard_image_ids(shard))
    data = bytearray(shard.read_bytes())
    data[len(data) * 2 // 3] ^= 0x04
    shard.write_bytes(bytes(data))
    summary = run(args_for(voc, out))
    assert summary["images"] == len(victims) and summary["already_done"] == 5 - len(victims)
    assert (out / "damaged" / shard.name).read_bytes() == bytes(data)  # kept for inspection
    manifest = json.loads((out / "manifest.json").read_text())
    assert [d["shard"] for d in manifest["damaged"]] == [shard.name] and "SHA-256" in manifest["damaged"][0]["reason"]
    expected, got = stored_labels(full_run[0]), stored_labels(out)   # healed: the same labels as the undamaged run
    assert_same_labels(expected, got)
    assert check_shards(out) == []


def finished_on_disk(out) -> int:
    """Images finished in ``out``: in shards or staged."""
    return sum(len(shard_image_ids(p)) for p in out.glob("shard-*.h5")) + len(list(out.glob(".staging/r*/*.npz")))


@pytest.mark.parametrize("stop, status, line, closing", [
    (signal.SIGINT, 130, INTERRUPTED, "run interrupted (Ctrl-C); rerun the same command to resume"),
    (signal.SIGTERM, 143, TERMINATED, f"run {TERMINATED}")])
def test_ctrl_c_and_sigterm_are_one_line_and_the_log_closing_line_and_keep_every_finished_image(
        stop, status, line, closing, voc, tmp_path, full_run):
    out = tmp_path / "stopped"
    proc = subprocess.Popen(module_command("pseudolabel.generate", *args_for(voc, out)), cwd=REPO,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".staging/r000/*.npz")) and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-3000:]
    assert err.rstrip().splitlines()[-1] == line and "Traceback" not in err
    assert log_headers(out / "run.log")[-1] == ("WARNING", "pseudolabel.run_log", closing)
    kept = finished_on_disk(out)
    assert 1 <= kept < 5
    summary = run(args_for(voc, out))
    assert summary["already_done"] == kept and summary["images"] == 5 - kept   # nothing finished is labelled again
    assert_same_labels(stored_labels(full_run[0]), stored_labels(out))
    assert check_shards(out) == []


RANK_0_ERROR = ("error: rank 0 ended with exit status 2 (its message is above); everything finished so far is kept: "
                "fix it and rerun the same command to resume")


@pytest.mark.parametrize("target", ["launcher", "rank 1"])
def test_sigterm_under_torchrun_leaves_a_folder_that_resumes_to_the_same_labels(target, voc, tmp_path, full_run):
    out = tmp_path / "ddp"
    # the tools' launcher (tools/gen_pseudo.sh with NPROC=2): torchrun with the tools' exit lines
    cmd = [sys.executable, "-m", "pseudolabel.launcher", "--standalone", "--nproc_per_node", "2", "-m", ENTRY_MODULE,
           "pseudolabel.generate", *args_for(voc, out)]
    proc = subprocess.Popen(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    rank_1 = out / ".lock-r001"   # holds rank 1's PID once it has its lock
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not (
            list(out.glob(".staging/r*/*.npz")) and rank_1.is_file() and rank_1.stat().st_size):
        time.sleep(0.02)
    os.kill(proc.pid if target == "launcher" else json.loads(rank_1.read_text())["pid"], signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert TERMINATED in err and "Traceback" not in err, err[-3000:]
    last = err.rstrip().splitlines()[-1]
    if target == "launcher":
        assert proc.returncode == 143 and last == TERMINATED, err[-3000:]
    else:   # the first rank to end: rank 1 (stopped) or rank 0 (its wait for rank 1 ended)
        assert (proc.returncode, last) in ((143, f"rank 1 {TERMINATED}"), (2, RANK_0_ERROR)), err[-3000:]
    closing = dict(re.findall(r"^\S+ \S+ rank (\d) \w+ pseudolabel.run_log: (run (?:stopped|finished|interrupted).*)$",
                              (out / "run.log").read_text(), re.MULTILINE))
    assert closing["1"] == f"run {TERMINATED}"   # a rank waiting for the others stops at once too
    # rank 0, when rank 1 alone was stopped: by torchrun's SIGTERM, or by the end of its wait for rank 1
    assert closing["0"] == f"run {TERMINATED}" or target == "rank 1" and re.fullmatch(
        r"run stopped by RuntimeError: another rank stopped \(Connection closed by peer.*\); everything finished so "
        r"far is kept: rerun the same command to resume", closing["0"]), closing["0"]
    kept = finished_on_disk(out)
    summary = run(args_for(voc, out))          # resumed by one process: any number of ranks may resume
    assert summary["already_done"] == kept and summary["images"] == 5 - kept
    assert_same_labels(stored_labels(full_run[0]), stored_labels(out))
    assert check_shards(out) == []


def test_a_full_disk_while_a_shard_is_written_is_one_line_and_loses_nothing(voc, tmp_path, capsys, monkeypatch,
                                                                          full_run):
    import errno

    def disk_full(path, write, durable=True):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr("pseudolabel.storage.shards.atomic_write", disk_full)
    out = tmp_path / "out"
    assert main(args_for(voc, out)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "the disk is full" in line and "rerun the same command" in line
    assert len(list(out.glob(".staging/r000/*.npz"))) == 2 and not list(out.glob("shard-*"))  # the first pack failed
    monkeypatch.undo()
    summary = run(args_for(voc, out))
    assert summary["images"] + summary["already_done"] == 5 and summary["already_done"] == 2
    expected, got = stored_labels(full_run[0]), stored_labels(out)
    assert expected.keys() == got.keys()


def test_a_really_full_disk_gives_the_message_not_a_crash(voc, tmp_path, full_run):
    # HDF5 writing to a full disk crashed (a segfault) before shards were built in memory; now every write is plain
    # Python I/O. The run stops with one line; after freeing space the rerun completes with the same labels.
    from tests.fixtures.small_disk import fill, small_disk

    with small_disk(tmp_path / "disk", "160k") as disk:
        out = disk / "out"
        filler = fill(disk, leave=64 * 1024)   # enough to start and stage, not to finish
        command = module_command("pseudolabel.generate", *args_for(voc, out, "--shard-size", "5"))
        result = subprocess.run(command, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "the disk is full" in one_error_line(result.stderr)
        filler.unlink()
        run(args_for(voc, out, "--shard-size", "5"))
        expected, got = stored_labels(full_run[0]), stored_labels(out)
        assert_same_labels(expected, got)


def test_ids_hdf5_would_confuse_are_separate_images(tmp_path):
    from tests.fixtures.tiny_datasets import make_custom

    ids = ["sub|x", "x", ".", "%2Fx"]
    images, labels, classes = make_custom(tmp_path, {"x": ["cat"]}, fmt="json", seed=3)
    (images / "sub").mkdir()
    for name in ("sub|x", ".", "%2Fx", "sub/x"):
        (images / f"{name}.jpg").write_bytes((images / "x.jpg").read_bytes())
    labels.write_text(json.dumps({**{i: ["cat"] for i in ids}, "sub/x": ["dog"]}))
    out = tmp_path / "out"
    run(["custom", "--images", str(images), "--labels", str(labels), "--classes", str(classes), "--out", str(out),
         *TINY, "--no-refine"])
    shards = open_shards(out)
    assert sorted(shards) == sorted([*ids, "sub/x"])
    dog = shards.class_set.index("dog")
    assert shards["sub/x"].class_ids == (dog,) and shards["sub|x"].class_ids != (dog,)


def test_a_large_image_is_labelled_at_full_size_with_a_capped_cam_input(tmp_path, caplog):
    from PIL import Image

    from tests.fixtures.tiny_datasets import make_custom

    images, labels, classes = make_custom(tmp_path, {"big": ["cat", "dog"]})
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(images / "big.jpg")
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        run(["custom", "--images", str(images), "--labels", str(labels), "--classes", str(classes), "--out", str(out),
             *TINY, "--max-tokens", "24"])   # 13 x 19 = 247 tokens without the budget
    assert "CAM input of a 300x200 image scaled to 96x64 by the token budget" in caplog.text
    record = open_shards(out)["big"]
    assert record.refined.shape == record.initial.shape == (200, 300) and record.loc_maps_lowres.shape[1:] == (4, 6)
