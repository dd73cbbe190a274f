"""Every tool ends with one line and a documented exit status: Ctrl-C -> 'interrupted; rerun the same command to
resume' and 130, SIGTERM -> 'stopped by SIGTERM; rerun the same command to resume' and 143, a full disk -> one line
and 2, its expected errors -> 'error: ...' and 2, anything else -> raised."""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pseudolabel.exits import INTERRUPTED, TERMINATED, tool_main
from tests.fixtures.viewer_shards import REPO, load_tool

TOOLS = {
    "gen_pseudo": lambda: importlib.import_module("pseudolabel.generate").main,
    "evaluate": lambda: importlib.import_module("pseudolabel.evaluation.cli").main,
    "check_shards": lambda: importlib.import_module("pseudolabel.storage.check").main,
    "export_labels": lambda: importlib.import_module("pseudolabel.storage.export").main,
    "view_labels": lambda: importlib.import_module("pseudolabel.viewer.cli").main,
    "render_coco_gt": lambda: load_tool("render_coco_gt").main,
    "train_seg": lambda: importlib.import_module("segtrain.train").main,
    "test_seg": lambda: importlib.import_module("segtrain.test").main,
    "ablate": lambda: importlib.import_module("pseudolabel.ablation.cli").main,
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_ctrl_c_in_every_tool_is_one_line_and_130(tool, monkeypatch, capsys):
    main = TOOLS[tool]()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    assert main([]) == 130
    assert capsys.readouterr().err.split() == INTERRUPTED.split()


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_sigterm_in_every_tool_is_one_line_and_143(tool, monkeypatch, capsys):
    main = TOOLS[tool]()

    def not_the_tools(signum, frame):   # stands in for the default action, which would end pytest itself
        raise AssertionError("SIGTERM reached the handler in place before the tool started")

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)   # the handler raises here
        raise AssertionError("SIGTERM did not stop the tool")
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", terminated)
    before = signal.signal(signal.SIGTERM, not_the_tools)
    try:
        assert main([]) == 143
        assert signal.getsignal(signal.SIGTERM) is not_the_tools   # the tool's handler is gone once it returns
    finally:
        signal.signal(signal.SIGTERM, before)
    assert capsys.readouterr().err.strip() == TERMINATED


def test_tool_main_maps_write_errors_and_expected_errors_and_raises_the_rest(capsys):
    @tool_main(ValueError)
    def main(error):
        raise error

    assert main(OSError(errno.ENOSPC, "No space left on device", "/data/out/x.h5")) == 2
    assert capsys.readouterr().err == ("error: cannot write to '/data/out/x.h5': the disk is full. Everything finished "
                                       "so far is kept; free space or fix permissions, then rerun the same command to "
                                       "resume\n")
    assert main(ValueError("multi\nline")) == 2
    assert capsys.readouterr().err == "error: multi; line\n"
    for other in (OSError(errno.EIO, "I/O error"), ZeroDivisionError("a bug")):
        with pytest.raises(type(other)):
            main(other)


@pytest.mark.parametrize("stop, status, line", [(signal.SIGINT, 130, INTERRUPTED), (signal.SIGTERM, 143, TERMINATED)])
def test_ctrl_c_or_sigterm_while_worker_processes_score_is_one_line(stop, status, line, tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    for i in range(400):
        labels = rng.integers(0, 3, (24, 32)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        Image.fromarray(labels).save(tmp_path / "gt" / f"{i}.png")
        Image.fromarray(labels).save(tmp_path / "pred" / f"{i}.png")
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "evaluate.py"), "--gt", str(tmp_path / "gt"),
                             "--pred", str(tmp_path / "pred"), "--num-classes", "3", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "scoring" not in seen and proc.poll() is None:
        seen += proc.stderr.read(1)
    proc.send_signal(stop)
    err = seen + proc.communicate(timeout=120)[1]
    assert proc.returncode == status, err[-3000:]
    assert err.rstrip().splitlines()[-1] == line and "Traceback" not in err


@pytest.mark.parametrize("exitcode, line, status", [
    (-signal.SIGKILL, "rank 1 stopped by SIGKILL; rerun the same command to resume", 137),
    (143, f"rank 1 {TERMINATED}", 143), (-signal.SIGTERM, f"rank 1 {TERMINATED}", 143),
    (130, f"rank 1 {INTERRUPTED}", 130),
    (2, "error: rank 1 ended with exit status 2 (its message is above); everything finished so far is kept: fix it "
        "and rerun the same command to resume", 2)])
def test_the_launcher_names_the_rank_that_ended_and_how(exitcode, line, status):
    from pseudolabel.launcher import rank_end

    assert rank_end(1, exitcode) == (line, status)
