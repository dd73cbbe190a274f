"""Kill-and-resume soak of stage one (run it through ``bench/soak_resume.sh N``).

A small run (8 images of 48x64 in a VOC layout, the tests' tiny CLIP and SAM of the real classes with random weights,
``--shard-size 2``, CPU) is labelled once uninterrupted per mode (``--no-refine``, and with SAM). Then, N times per
mode, a fresh run is killed with SIGKILL at a random moment, and the same command is rerun to the end. The moments
spread over the whole run: a random number k of finished images (0 .. all) is drawn, the run is killed a random
0-0.3 s after its k-th image is finished (staged or packed), or, for k = 0, at a random time before its first one.
Every image's refined label, Y0 and localization maps are then compared byte for byte with the uninterrupted run,
the shard directory is checked (``tools/check_shards.py``), and a table is printed: one row per kill, then the totals.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import tools._venv  # noqa: E402,F401  (re-runs inside the project venv with tools/_env.sh settings)
import numpy as np  # noqa: E402

from pseudolabel.storage.check import check_shards  # noqa: E402
from pseudolabel.storage.shards import open_shards  # noqa: E402
from tests.fixtures.tiny_datasets import make_voc  # noqa: E402
from tests.fixtures.tiny_models import module_command  # noqa: E402

TINY = ["--clip-model", "ViT-T-16-cep-test-quickgelu", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu", "--shard-size", "2"]
MODES = {"no-refine": ["--no-refine"], "sam": []}


def command(voc: Path, out: Path, mode: str) -> list[str]:
    return module_command("pseudolabel.generate", "voc", "--data-root", str(voc), "--split", "train", "--out",
                          str(out), *TINY, *MODES[mode])


def contents(out: Path) -> dict[str, tuple[bytes, bytes, bytes]]:
    """Per image: the bytes of its refined label, Y0 and localization maps (as stored)."""
    shards = open_shards(out)
    return {i: (r.refined.tobytes(), r.initial.tobytes(), r.loc_maps_lowres.astype(np.float16).tobytes())
            for i, r in ((i, shards[i]) for i in shards)}


def reference(voc: Path, out: Path, mode: str) -> tuple[dict, float, float]:
    """An uninterrupted run: its contents, when its first image was staged and when it ended (seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command(voc, out, mode), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while proc.poll() is None:
        if first is None and any(out.glob(".staging/r000/*.npz")):
            first = time.perf_counter() - start
        time.sleep(0.01)
    if proc.returncode != 0:
        raise SystemExit(f"the uninterrupted {mode} run failed (exit status {proc.returncode})")
    return contents(out), first or 0.0, time.perf_counter() - start


def finished_images(out: Path) -> int:
    """Images finished so far: staged, or packed (2 per shard)."""
    return 2 * len(list(out.glob("shard-*.h5"))) + len(list(out.glob(".staging/r*/*.npz")))


def trial(voc: Path, out: Path, mode: str, after_images: int, delay: float) -> dict:
    """Kill a fresh run ``delay`` seconds after its ``after_images``-th finished image (0: ``delay`` seconds after its
    start), resume it to the end; what was on disk at the kill, and the resume's summary line."""
    start = time.perf_counter()
    proc = subprocess.Popen(command(voc, out, mode), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while after_images and proc.poll() is None and finished_images(out) < after_images:
        time.sleep(0.005)
    time.sleep(delay)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = {"at": time.perf_counter() - start, "shards": len(list(out.glob("shard-*.h5"))),
             "staged": len(list(out.glob(".staging/r*/*.npz"))), "finished": finished}
    resumed = subprocess.run(command(voc, out, mode), cwd=REPO, capture_output=True, text=True)
    state["resume_status"] = resumed.returncode
    state["resume_line"] = next((line for line in resumed.stdout.splitlines() if line.startswith("rank 0:")), "")
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kills", type=int, help="kills per mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="cep-soak-"))
    voc = make_voc(work / "data", n_train=8, n_val=1, size=(48, 64))
    os.environ["HF_HUB_OFFLINE"] = "1"
    rows, totals = [], {}
    for mode in MODES:
        expected, first, end = reference(voc, work / f"reference-{mode}", mode)
        print(f"{mode}: uninterrupted run {end:.1f} s, first image staged at {first:.1f} s", flush=True)
        identical = 0
        for number in range(1, args.kills + 1):
            out = work / f"{mode}-{number:02d}"
            after = rng.randint(0, len(expected))
            state = trial(voc, out, mode, after, rng.uniform(0, 0.3) if after else rng.uniform(0, first))
            got = contents(out) if state["resume_status"] == 0 else {}
            same = (got.keys() == expected.keys()) and all(got[i] == expected[i] for i in expected)
            problems = check_shards(out) if state["resume_status"] == 0 else ["resume failed"]
            same_parts = [all(got.get(i, (None,) * 3)[k] == expected[i][k] for i in expected) for k in range(3)]
            identical += same and not problems
            rows.append((mode, number, f"{state['at']:.1f}", "run had ended" if state["finished"] else
                         f"{state['shards']} shards, {state['staged']} staged",
                         state["resume_line"].split(",")[0].removeprefix("rank 0: "),
                         *("yes" if ok else "NO" for ok in same_parts), "ok" if not problems else problems[0][:40]))
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
            shutil.rmtree(out)
        totals[mode] = identical
    header = ("mode", "kill", "at (s)", "on disk at the kill", "resume", "labels", "Y0", "maps", "check_shards")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("\n" + " | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    print("\n" + "; ".join(f"{mode}: {n} of {args.kills} resumed runs identical to the uninterrupted one"
                           for mode, n in totals.items()))
    if args.keep:
        print(f"work folder: {work}")
    else:
        shutil.rmtree(work)
    sys.exit(0 if all(n == args.kills for n in totals.values()) else 1)


if __name__ == "__main__":
    main()
