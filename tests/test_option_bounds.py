"""Every numeric option of the tools is checked when the options are parsed: a value outside its range ends the tool
with one line naming the option and the range (argparse's error, exit status 2) before anything is written."""
from __future__ import annotations

from pathlib import Path

import pytest

from pseudolabel.ablation import cli as ablate
from pseudolabel.evaluation import cli as evaluate
from pseudolabel.storage import export
from pseudolabel.viewer import cli as view
from segtrain import test as seg_test
from segtrain import train as seg_train

DEMO_CONFIG = str(Path(__file__).parents[1] / "segtrain/configs/deeplabv3plus_r18-d8_1xb2-20iter_demo-pseudo-64x64.py")
EVALUATE = ("--gt", "gt", "--pred", "pred")

CASES = [
    (evaluate.main, [*EVALUATE, "--bootstrap", "-1"], "--bootstrap -1: must be >= 0"),
    (evaluate.main, [*EVALUATE, "--seed", "-3"], "--seed -3: must be >= 0"),
    (evaluate.main, [*EVALUATE, "--workers", "0"], "--workers 0: must be >= 1"),
    (evaluate.main, [*EVALUATE, "--boundary-kernel", "0"], "--boundary-kernel 0: must be >= 1"),
    (evaluate.main, [*EVALUATE, "--boundary-kernel", "4"], "--boundary-kernel 4: must be odd"),
    (evaluate.main, [*EVALUATE, "--confidence", "1.5"], "--confidence 1.5: must be in [0.0, 1.0]"),
    (evaluate.main, [*EVALUATE, "--num-classes", "0"], "--num-classes 0: must be >= 1"),
    (evaluate.main, [*EVALUATE, "--ignore-index", "-1"], "--ignore-index -1: must be in [0, 255]"),
    (export.main, ["shards", "--out", "OUT", "--workers", "0"], "--workers 0: must be >= 1"),
    (view.main, ["shards", "--out", "OUT", "--limit", "0"], "--limit: must be an integer >= 1, got 0"),
    (view.main, ["shards", "--out", "OUT", "--worst", "-2", "--gt", "voc:train"], "--worst: must be an integer >= 1"),
    (view.main, ["shards", "--out", "OUT", "--tile-height", "0"], "--tile-height: must be an integer >= 1"),
    (seg_test.main, ["ckpt.pth", "--bootstrap", "-5"], "--bootstrap: must be an integer >= 0, got -5"),
    (seg_train.main, [DEMO_CONFIG, "--work-dir", "OUT", "--cfg-options", "train_cfg.max_iters=-5"],
     "--cfg-options train_cfg.max_iters=-5: must be an integer >= 1"),
    (seg_train.main, [DEMO_CONFIG, "--work-dir", "OUT", "--cfg-options", "train_dataloader.batch_size=0"],
     "--cfg-options train_dataloader.batch_size=0: must be an integer >= 1"),
    (seg_train.main, [DEMO_CONFIG, "--work-dir", "OUT", "--cfg-options", "train_dataloader.num_workers=-1"],
     "--cfg-options train_dataloader.num_workers=-1: must be an integer >= 0"),
    (ablate.main, ["demo", "--out", "OUT", "--eval-bootstrap", "-2"], "--eval-bootstrap -2: must be >= 0"),
    (ablate.main, ["demo", "--out", "OUT", "--eval-confidence", "2"], "--eval-confidence 2.0: must be in [0.0, 1.0]"),
    (ablate.main, ["demo", "--out", "OUT", "--delta", "1.5"], "--delta 1.5: must be in [0.0, 1.0]"),
]


@pytest.mark.parametrize("main, argv, message", CASES, ids=[f"{m.__module__}:{' '.join(a[-2:])}" for m, a, _ in CASES])
def test_a_value_out_of_range_is_refused_at_parse_time(main, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main([a.replace("OUT", str(tmp_path / "out")) for a in argv])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert message in lines[-1], lines
    assert not (tmp_path / "out").exists()        # refused before anything was written
