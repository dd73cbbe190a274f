"""End-to-end: tools/evaluate.py's main on tiny PNG folders (JSON, chart, errors, --allow-missing)."""
import json

import numpy as np
import pytest
from PIL import Image

from pseudolabel.classes import pascal_palette
from pseudolabel.evaluation import EvaluationConfig, evaluate
from pseudolabel.evaluation.cli import main
from tests.fixtures.outputs import one_error_line

C = 4


def write_png(path, labels):
    image = Image.fromarray(labels, mode="P")
    image.putpalette(pascal_palette().ravel().tolist())  # palette PNGs, as stage two writes them
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(6):
        gt = np.kron(rng.integers(0, C, (4, 5)), np.ones((6, 6), int)).astype(np.uint8)
        gt[0, :] = 255
        noisy = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, C, gt.shape), gt).astype(np.uint8)
        write_png(tmp_path / "gt" / f"img{index}.png", gt)
        write_png(tmp_path / "good" / f"img{index}.png", gt.copy())
        write_png(tmp_path / "noisy" / f"img{index}.png", noisy)
    return tmp_path


def run(folders, *extra):
    return main(["--gt", str(folders / "gt"), "--num-classes", str(C), "--bootstrap", "200", "--workers", "1",
                 "--boundary-kernel", "5", "--quiet", *extra])


def test_two_systems_json_and_chart(folders, capsys):
    out_json, chart = folders / "out" / "r.json", folders / "out" / "bars.png"
    assert run(folders, "--pred", str(folders / "good"), "--pred2", str(folders / "noisy"),
               "--json", str(out_json), "--plot", str(chart)) == 0
    data = json.loads(out_json.read_text())
    assert data["mIoU"] == 100.0 and data["mBIoU"] == 100.0 and data["num_images"] == 6
    assert set(data["per_class"]) == {"0", "1", "2", "3"} and len(data["ci"]["mIoU"]) == 2
    assert len(data["systems"]) == 2 and data["systems"][1]["mIoU"] < 100.0
    assert data["paired"]["diff"] > 0 and set(data["paired"]) >= {"diff", "ci", "p_value", "mBIoU"}
    assert data["paired"]["metric"] == "mIoU" and set(data["paired"]["mBIoU"]) >= {"diff", "ci", "p_value"}
    assert chart.stat().st_size > 1000 and chart.read_bytes()[:4] == b"\x89PNG"
    assert "mIoU (strict" in capsys.readouterr().out


def test_gt_present_mean_runs_with_bootstrap(folders, capsys):
    assert run(folders, "--pred", str(folders / "noisy"), "--mean-over", "gt-present") == 0
    assert "classes present in GT" in capsys.readouterr().out


def test_parallel_workers_give_the_same_counts(folders):
    serial = evaluate(folders / "gt", folders / "noisy", config=EvaluationConfig(num_classes=C, workers=1, bootstrap=0),
                      progress=False)
    parallel = evaluate(folders / "gt", folders / "noisy", config=EvaluationConfig(num_classes=C, workers=2,
                                                                                    bootstrap=0), progress=False)
    np.testing.assert_array_equal(serial.systems[0].counts.band_union, parallel.systems[0].counts.band_union)
    assert serial.systems[0].miou == parallel.systems[0].miou


def test_missing_prediction_is_an_error_naming_the_file(folders, capsys):
    (folders / "noisy" / "img3.png").unlink()
    assert run(folders, "--pred", str(folders / "noisy")) == 2
    message = capsys.readouterr().err
    assert "img3" in message and "img3.png" in message and "--allow-missing" in message


def test_allow_missing_reports_the_count(folders, capsys):
    (folders / "noisy" / "img3.png").unlink()
    out_json = folders / "r.json"
    assert run(folders, "--pred", str(folders / "noisy"), "--allow-missing", "--json", str(out_json)) == 0
    data = json.loads(out_json.read_text())
    assert data["num_images"] == 5 and data["missing"] == {"pred1": 1} and data["missing_ids"]["pred1"] == ["img3"]
    assert "1 GT images have no pred1 prediction" in capsys.readouterr().out


def test_out_of_range_value_is_an_error_or_counted(folders, capsys):
    labels = np.array(Image.open(folders / "noisy" / "img2.png"))
    labels[5, 5] = 9
    write_png(folders / "noisy" / "img2.png", labels)
    assert run(folders, "--pred", str(folders / "noisy")) == 2
    message = capsys.readouterr().err
    assert "img2" in message and "class value 9" in message
    out_json = folders / "r.json"
    assert run(folders, "--pred", str(folders / "noisy"), "--allow-out-of-range", "--json", str(out_json)) == 0
    assert json.loads(out_json.read_text())["out_of_range_pixels"]["pred1"] == 1


def test_size_mismatch_is_an_error(folders, capsys):
    write_png(folders / "noisy" / "img1.png", np.zeros((10, 10), np.uint8))
    assert run(folders, "--pred", str(folders / "noisy")) == 2
    assert "img1" in capsys.readouterr().err


def test_plain_folders_need_num_classes(folders, capsys):
    assert main(["--gt", str(folders / "gt"), "--pred", str(folders / "good"), "--quiet", "--workers", "1"]) == 2
    assert "--num-classes" in capsys.readouterr().err


def shard_dir(path, classes, labels):
    """A shard directory of a class set named ``classes`` (background first) holding ``labels`` by image id."""
    from pseudolabel.classes import ClassSet
    from pseudolabel.storage.shards import LabelRecord, ShardWriter

    class_set = ClassSet("mine", tuple(classes), tuple(classes[1:]), ())
    path.mkdir(parents=True)
    attrs = {"dataset": "custom", "split": "all", "config": {}, "weights": {}, "versions": {}, "random_weights": False,
             "rank": 0}
    with ShardWriter(path / "shard-r000-00000.h5", class_set, attrs) as writer:
        for image_id, label in labels.items():
            present = tuple(int(c) for c in np.unique(label) if 0 < c < 255)
            writer.write(LabelRecord(image_id=image_id, refined=label, initial=label, size=label.shape,
                                     loc_maps_lowres=np.zeros((0, 1, 1), np.float32), loc_class_ids=(),
                                     class_ids=present))
    return path


@pytest.fixture
def labels():
    rng = np.random.default_rng(1)
    return {f"im{i}": np.kron(rng.integers(0, 3, (3, 4)), np.ones((5, 5), int)).astype(np.uint8) for i in range(3)}


def test_sources_with_classes_in_another_order_are_refused_naming_both_lists(tmp_path, labels, capsys):
    gt = shard_dir(tmp_path / "a", ["background", "cat", "dog"], labels)
    pred = shard_dir(tmp_path / "b", ["background", "dog", "cat"], labels)   # same count, other order
    assert main(["--gt", str(gt), "--pred", str(pred), "--quiet", "--workers", "1", "--bootstrap", "0"]) == 2
    line = one_error_line(capsys.readouterr().err, alone=True)
    assert "['background', 'cat', 'dog']" in line and "['background', 'dog', 'cat']" in line
    assert main(["--gt", str(gt), "--pred", str(gt), "--quiet", "--workers", "1", "--bootstrap", "0"]) == 0


def test_png_folders_take_their_class_names_from_classes(tmp_path, labels, capsys):
    gt = shard_dir(tmp_path / "gt", ["background", "cat", "dog"], labels)
    for image_id, label in labels.items():
        write_png(tmp_path / "pred" / f"{image_id}.png", label)
    (tmp_path / "same.txt").write_text("cat\ndog\n")
    (tmp_path / "swapped.txt").write_text("Dog\nCat\n")
    common = ["--gt", str(gt), "--pred", str(tmp_path / "pred"), "--quiet", "--workers", "1", "--bootstrap", "0"]
    assert main([*common, "--classes", str(tmp_path / "swapped.txt")]) == 2
    assert "['background', 'Dog', 'Cat']" in one_error_line(capsys.readouterr().err, alone=True)
    assert main([*common, "--classes", str(tmp_path / "same.txt")]) == 0
    assert "100.0" in capsys.readouterr().out



def test_a_png_folder_without_classes_is_scored_with_a_note_naming_the_classes_assumed(tmp_path, labels, capsys):
    gt = shard_dir(tmp_path / "gt", ["background", "dog", "cat"], labels)
    for image_id, label in labels.items():
        write_png(tmp_path / "pred" / f"{image_id}.png", label)
    assert main(["--gt", str(gt), "--pred", str(tmp_path / "pred"), "--quiet", "--workers", "1",
                 "--bootstrap", "0"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and str(tmp_path / "pred") in notes[0] and "--classes" in notes[0]
    assert "['background', 'dog', 'cat']" in notes[0]


def test_an_empty_gt_folder_is_one_line_naming_it(folders, capsys):
    (folders / "empty").mkdir()
    assert main(["--gt", str(folders / "empty"), "--pred", str(folders / "good"), "--num-classes", str(C),
                 "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"the GT {folders / 'empty'} has no label images" in line and "--gt" in line


def test_a_class_listed_twice_in_classes_is_one_line_naming_the_file_and_the_class(tmp_path, labels, capsys):
    gt = shard_dir(tmp_path / "gt", ["background", "cat", "dog"], labels)
    (tmp_path / "twice.txt").write_text("cat\ndog\nCat\n")
    assert main(["--gt", str(gt), "--pred", str(gt), "--classes", str(tmp_path / "twice.txt"), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err, alone=True)
    assert str(tmp_path / "twice.txt") in line and "class 'Cat' is listed twice" in line


def test_png_file_names_match_ids_in_either_unicode_normal_form(tmp_path, capsys):
    import unicodedata

    label = np.kron(np.array([[0, 1], [2, 1]]), np.ones((4, 4), int)).astype(np.uint8)
    nfc = unicodedata.normalize("NFC", "café")
    gt = shard_dir(tmp_path / "gt", ["background", "cat", "dog"], {nfc: label})
    write_png(tmp_path / "pred" / f"{unicodedata.normalize('NFD', nfc)}.png", label)   # as macOS names files
    assert main(["--gt", str(gt), "--pred", str(tmp_path / "pred"), "--classes", str(write_classes(tmp_path)),
                 "--quiet", "--workers", "1", "--bootstrap", "0"]) == 0
    assert "100.0" in capsys.readouterr().out


def write_classes(folder):
    (folder / "classes.txt").write_text("cat\ndog\n")
    return folder / "classes.txt"

def test_a_corrupt_prediction_png_is_one_line_naming_it(folders, capsys):
    (folders / "noisy" / "img3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    assert run(folders, "--pred", str(folders / "noisy")) == 2
    err = "\n".join(l for l in capsys.readouterr().err.splitlines() if not l.startswith("note: "))  # the class note
    line = one_error_line(err, alone=True)
    assert str(folders / "noisy" / "img3.png") in line and "cannot decode" in line


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_shard_is_one_line_naming_it_and_the_checker(tmp_path, labels, capsys, damage):
    pred = shard_dir(tmp_path / "pred", ["background", "cat", "dog"], labels)
    shard = pred / "shard-r000-00000.h5"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x20
    else:
        del data[len(data) // 2:]
    shard.write_bytes(bytes(data))
    gt = shard_dir(tmp_path / "gt", ["background", "cat", "dog"], labels)
    assert main(["--gt", str(gt), "--pred", str(pred), "--quiet", "--workers", "1", "--bootstrap", "0"]) == 2
    line = one_error_line(capsys.readouterr().err, alone=True)
    assert f"shard '{shard}' is damaged" in line and f"tools/check_shards.py {pred}" in line


def test_sources_made_with_random_weights_are_named_on_the_console_and_in_the_json(tmp_path, capsys):
    from pseudolabel.storage.export import export_labels
    from pseudolabel.storage.shards import ShardWriter, open_shards
    from tests.fixtures.viewer_shards import ATTRS, VOC, make_voc_run

    root, random_shards, _ = make_voc_run(tmp_path)        # written with random_weights=True
    real_shards = tmp_path / "real"
    real_shards.mkdir()
    with ShardWriter(real_shards / "shard-r000-00000.h5", VOC, dict(ATTRS, random_weights=False)) as writer:
        for record in open_shards(random_shards).values():
            writer.write(record)
    exported = export_labels(random_shards, tmp_path / "exported", progress=False).label_dir

    def scores(*sources):
        out = tmp_path / "r.json"
        args = ["--gt", "voc:train", "--data-root", str(root), "--bootstrap", "0", "--workers", "1", "--quiet",
                "--json", str(out)]
        for flag, source in zip(("--pred", "--pred2"), sources):
            args += [flag, str(source)]
        assert main(args) == 0
        console = capsys.readouterr()
        return json.loads(out.read_text()), console.out + console.err

    data, console = scores(real_shards)
    assert data["random_weights"] is False and "RANDOM" not in console
    for random_source in (random_shards, exported):         # the shards, and the PNGs exported from them
        data, console = scores(random_source)
        assert data["random_weights"] is True and data["random_weights_sources"] == ["pred1"]
        assert data["systems"][0]["random_weights"] is True
        assert "RANDOM WEIGHTS: system 1 was made with random model weights" in console
        assert data["mIoU"] < 100
    data, console = scores(real_shards, random_shards)
    assert data["random_weights_sources"] == ["pred2"] and [s["random_weights"] for s in data["systems"]] == [
        False, True]
    assert "RANDOM WEIGHTS: system 2 was made" in console
    result = evaluate(random_shards, real_shards, config=EvaluationConfig(bootstrap=0, workers=1), progress=False)
    assert result.random_weights_sources == ["gt"]      # random-weight labels as the GT are named too
