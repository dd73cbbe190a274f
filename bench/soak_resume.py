"""Stop-and-resume soak of stage one (run it through ``bench/soak_resume.sh N``).

A small run (8 images of 48x64 in a VOC layout, the tests' tiny CLIP and SAM of the real classes with random weights,
``--shard-size 2``, CPU) is labelled once uninterrupted per label mode (``--no-refine``, and with SAM). Then, N times
per mode, a fresh run is stopped at a random moment and the same command is rerun to the end. The stop modes:

- ``SIGKILL``: one process, ``kill -9``;
- ``SIGTERM``: one process, ``kill``; the run must end with exit status 143, the line ``stopped by SIGTERM; rerun the
  same command to resume`` and run.log's closing line (signalled while Python still imports its libraries, before
  anything is written, or while it exits after the run finished, the process ends by the signal's default action);
- ``rank-kill``: two ranks under ``torchrun`` (``NPROC=2``); one rank, drawn at random, is killed with SIGKILL (torchrun
  then stops the other), and the resume runs two ranks again.

The moments spread over the whole run: a random number k of finished images (0 .. all) is drawn, the run is stopped a
random 0-0.3 s after its k-th image is finished (staged or packed), or, for k = 0, at a random time before its first
one. Every image's refined label, Y0 and localization maps are then compared byte for byte with the uninterrupted
one-process run, the shard directory is checked (``tools/check_shards.py``), and a table is printed: one row per stop,
then N/N identical per mode.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402

from pseudolabel.exits import EXIT_TERMINATED, TERMINATED  # noqa: E402
from pseudolabel.storage.check import check_shards  # noqa: E402
from pseudolabel.storage.run_log import LOG_FILE  # noqa: E402
from pseudolabel.storage.shards import open_shards, shard_image_ids  # noqa: E402
from tests.fixtures.tiny_datasets import make_voc  # noqa: E402
from tests.fixtures.tiny_models import ENTRY_MODULE, module_command  # noqa: E402

TINY = ["--clip-model", "ViT-T-16-cep-test-quickgelu", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu", "--shard-size", "2"]
LABELS = {"no-refine": ["--no-refine"], "sam": []}


@dataclass(frozen=True)
class Stop:
    """How a run is stopped: the signal, sent to the whole run (one process) or to one of ``ranks`` ranks."""
    signal: signal.Signals
    ranks: int = 1


STOPS = {"SIGKILL": Stop(signal.SIGKILL), "SIGTERM": Stop(signal.SIGTERM), "rank-kill": Stop(signal.SIGKILL, ranks=2)}


def command(voc: Path, out: Path, labels: str, ranks: int = 1) -> list[str]:
    """The stage-one command line: one process, or ``ranks`` ranks through torchrun."""
    args = ["pseudolabel.generate", "voc", "--data-root", str(voc), "--split", "train", "--out", str(out), *TINY,
            *LABELS[labels]]
    if ranks == 1:
        return module_command(*args)
    return [sys.executable, "-m", "pseudolabel.launcher", "--standalone", "--nproc_per_node", str(ranks), "-m",
            ENTRY_MODULE, *args]


def contents(out: Path) -> dict[str, tuple[bytes, bytes, bytes]]:
    """Per image: the bytes of its refined label, Y0 and localization maps (as stored)."""
    shards = open_shards(out)
    return {i: (r.refined.tobytes(), r.initial.tobytes(), r.loc_maps_lowres.astype(np.float16).tobytes())
            for i, r in ((i, shards[i]) for i in shards)}


def reference(voc: Path, out: Path, labels: str) -> tuple[dict, float, float]:
    """An uninterrupted one-process run: its contents, when its first image was staged and when it ended (seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command(voc, out, labels), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while proc.poll() is None:
        if first is None and any(out.glob(".staging/r000/*.npz")):
            first = time.perf_counter() - start
        time.sleep(0.01)
    if proc.returncode != 0:
        raise SystemExit(f"the uninterrupted {labels} run failed (exit status {proc.returncode})")
    return contents(out), first or 0.0, time.perf_counter() - start


def finished_images(out: Path) -> int:
    """Images finished so far: staged, or packed."""
    packed = 0
    for shard in out.glob("shard-*.h5"):
        try:
            packed += len(shard_image_ids(shard))
        except OSError:
            continue   # renamed into place while being read: counted on the next look
    return packed + len(list(out.glob(".staging/r*/*.npz")))


def rank_pid(out: Path, rank: int, proc: subprocess.Popen) -> int | None:
    """The PID of ``rank``, from its output lock (written once the rank has started); None if the run ended first."""
    lock = out / f".lock-r{rank:03d}"
    while proc.poll() is None:
        try:
            return int(json.loads(lock.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.005)
    return None


def closing_lines(out: Path) -> dict[str, str]:
    """Each rank's last ``run ...`` line of the last run in run.log (finished, interrupted, stopped)."""
    path = out / LOG_FILE
    text = path.read_text() if path.is_file() else ""
    return dict(re.findall(r"^\S+ \S+ rank (\d+) \w+ pseudolabel\.run_log: (run (?:finished|interrupted|stopped).*)$",
                           text, re.MULTILINE))


def trial(voc: Path, out: Path, labels: str, stop: Stop, after_images: int, delay: float, rank: int) -> dict:
    """Stop a fresh run ``delay`` seconds after its ``after_images``-th finished image (0: ``delay`` seconds after
    its start; ranks: once the chosen ``rank`` has started), resume it to the end; what was on disk at the stop, the
    exit status, how a SIGTERM ended the run, and what the resume labelled (all ranks)."""
    start = time.perf_counter()
    stderr = out.with_name(out.name + ".stderr")
    with open(stderr, "w") as err:
        proc = subprocess.Popen(command(voc, out, labels, stop.ranks), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        target = proc.pid if stop.ranks == 1 else rank_pid(out, rank, proc)
        while after_images and proc.poll() is None and finished_images(out) < after_images:
            time.sleep(0.005)
        time.sleep(max(0.0, delay if after_images else start + delay - time.perf_counter()))
        finished = proc.poll() is not None
        if target is not None and not finished:
            try:
                os.kill(target, stop.signal)
            except ProcessLookupError:  # the rank ended between the poll and the kill: the run was not stopped
                finished = True
        proc.wait()
    state = {"at": time.perf_counter() - start, "finished": finished, "status": proc.returncode,
             "target": "run" if stop.ranks == 1 else f"rank {rank}",
             "shards": len(list(out.glob("shard-*.h5"))), "staged": len(list(out.glob(".staging/r*/*.npz")))}
    state["promise"] = "-"
    if stop.signal == signal.SIGTERM and not finished:
        last = (stderr.read_text().rstrip().splitlines() or [""])[-1]
        closing = closing_lines(out).get("0")
        # outside the tool's handler, SIGTERM's default action: while importing (nothing written yet) or while
        # exiting after the run finished
        if proc.returncode == -signal.SIGTERM and closing in (None, "run finished"):
            state["promise"] = "while importing" if closing is None else "finished; while exiting"
        elif proc.returncode == EXIT_TERMINATED and last == TERMINATED and (
                closing == f"run {TERMINATED}" or closing is None and not out.exists()):   # the log never makes --out
            state["promise"] = "143, line, log"
        else:
            state["promise"] = f"NO ({proc.returncode}: {last[:40]})"
    stderr.unlink()
    resumed = subprocess.run(command(voc, out, labels, stop.ranks), cwd=REPO, capture_output=True, text=True)
    state["resume_status"] = resumed.returncode
    ranks = [tuple(map(int, found)) for found in re.findall(r"^rank \d+: (\d+) labelled this run \((\d+) already done",
                                                              resumed.stdout, re.MULTILINE)]
    state["resume"] = f"{sum(r[0] for r in ranks)} labelled, {sum(r[1] for r in ranks)} already done"
    return state


def print_table(rows: list[tuple], totals: dict[str, int], kills: int) -> None:
    header = ("labels", "stop", "#", "target", "at (s)", "on disk at the stop", "exit", "SIGTERM ending", "resume",
              "labels", "Y0", "maps", "check_shards")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("\n" + " | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    print("\nresumed runs identical to the uninterrupted one (labels, Y0, maps; check_shards passed):")
    for mode, identical in totals.items():
        print(f"  {mode}: {identical}/{kills}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kills", type=int, help="stops per mode (label mode x stop mode)")
    parser.add_argument("--stops", nargs="+", choices=STOPS, default=list(STOPS), help="stop modes (default: all)")
    parser.add_argument("--labels", nargs="+", choices=LABELS, default=list(LABELS),
                        help="label modes (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="cep-soak-"))
    voc = make_voc(work / "data", n_train=8, n_val=1, size=(48, 64))
    os.environ["HF_HUB_OFFLINE"] = "1"
    rows, totals = [], {}
    for labels in args.labels:
        expected, first, end = reference(voc, work / f"reference-{labels}", labels)
        print(f"{labels}: uninterrupted run {end:.1f} s, first image staged at {first:.1f} s", flush=True)
        for stop_name in args.stops:
            stop, identical = STOPS[stop_name], 0
            for number in range(1, args.kills + 1):
                out = work / f"{labels}-{stop_name}-{number:02d}"
                after = rng.randint(0, len(expected))
                delay = rng.uniform(0, 0.3) if after else rng.uniform(0, first)
                state = trial(voc, out, labels, stop, after, delay, rng.randrange(stop.ranks))
                got = contents(out) if state["resume_status"] == 0 else {}
                same = (got.keys() == expected.keys()) and all(got[i] == expected[i] for i in expected)
                problems = check_shards(out) if state["resume_status"] == 0 else ["resume failed"]
                same_parts = [all(got.get(i, (None,) * 3)[k] == expected[i][k] for i in expected) for k in range(3)]
                identical += same and not problems and not state["promise"].startswith("NO")
                rows.append((labels, stop_name, number, state["target"], f"{state['at']:.1f}",
                             "run had ended" if state["finished"] else
                             f"{state['shards']} shards, {state['staged']} staged", state["status"], state["promise"],
                             state["resume"],
                             *("yes" if ok else "NO" for ok in same_parts),
                             "ok" if not problems else problems[0][:40]))
                print(" | ".join(str(v) for v in rows[-1]), flush=True)
                shutil.rmtree(out)
            totals[f"{labels}, {stop_name}"] = identical
    print_table(rows, totals, args.kills)
    if args.keep:
        print(f"work folder: {work}")
    else:
        shutil.rmtree(work)
    sys.exit(0 if all(n == args.kills for n in totals.values()) else 1)


if __name__ == "__main__":
    main()
