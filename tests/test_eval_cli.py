"""End-to-end: tools/evaluate.py's main on tiny PNG folders (JSON, chart, errors, --allow-missing)."""
import json

import numpy as np
import pytest
from PIL import Image

from pseudolabel.classes import pascal_palette
from pseudolabel.evaluation import EvaluationConfig, evaluate
from pseudolabel.evaluation.cli import main

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
