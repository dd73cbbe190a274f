"""``torchrun`` for the tools (``NPROC=N tools/gen_pseudo.sh``, ``tools/ablate.sh``, ``tools/train_seg.sh``): torch's
own launcher, whose stops end like every tool's (:mod:`pseudolabel.exits`) instead of in its tracebacks.

- Ctrl-C or SIGTERM to the launcher: torchrun stops the ranks (each writes its closing line in run.log); the launcher
  prints the tool's line and exits 130 or 143.
- A rank that ends with an error (its own one-line message is above) or is stopped: one line naming the rank and its
  exit status, and the launcher exits with that status (130/143 for a rank stopped by Ctrl-C or SIGTERM).
"""
from __future__ import annotations

import signal
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun

from pseudolabel.exits import INTERRUPTED, TERMINATED


def stop_line(signum: int) -> str:
    """The tool's line for a stop by signal ``signum`` (:data:`~pseudolabel.exits.TERMINATED` for SIGTERM)."""
    if signum == signal.SIGINT:
        return INTERRUPTED
    return TERMINATED.replace("SIGTERM", signal.Signals(signum).name)


def rank_end(rank: int, exitcode: int) -> tuple[str, int]:
    """The line and exit status for a rank that ended with ``exitcode`` (negative: killed by that signal)."""
    signum = -exitcode if exitcode < 0 else exitcode - 128 if exitcode > 128 else 0
    if signum in signal.valid_signals():
        return f"rank {rank} {stop_line(signum)}", 128 + signum
    return (f"error: rank {rank} ended with exit status {exitcode} (its message is above); everything finished so far "
            "is kept: fix it and rerun the same command to resume", exitcode)


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with ``argv``; the exit status of the module's docstring."""
    try:
        torchrun(argv)
    except SignalException as stop:
        line, status = stop_line(stop.sigval), 128 + stop.sigval
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        line, status = rank_end(rank, failure.exitcode)
    else:
        return 0
    print(f"\n{line}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
