"""``<out>/run.log``: every stage-one run appends a timestamped account of itself to its output directory.

What goes in: the command line, host and ranks; the configuration, the weights identity and the environment (as
JSON); the dataset summary; every failure; the per-stage times; how the run ended (finished, interrupted, stopped by
SIGTERM, or the error that stopped it). Records of the ``pseudolabel`` loggers reach both the console and the file;
:meth:`RunLog.detail` writes to the file only, so the console keeps its progress bar and short messages. Under
torchrun every rank appends to the same file, each line naming its rank.

The log never creates the output directory: records are held in memory until the run has made (and checked) the
directory, then written there and streamed from then on. A run that stops before that (a mistyped dataset path)
leaves no folder behind; one that stops in an existing folder (a refused rerun) still logs why.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
import sys
from pathlib import Path

from pseudolabel.exits import TERMINATED, Terminated

LOG_FILE = "run.log"
FORMAT = "%(asctime)s rank %(rank)s %(levelname)s %(name)s: %(message)s"
PACKAGE_LOGGER = "pseudolabel"
DETAIL_LOGGER = "pseudolabel.run_log"   # file-only records
HELD_RECORDS = 10_000                   # records kept before the directory exists (the set-up logs a few dozen)


class _RankFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


class RunLog:
    """Context manager: while open, the ``pseudolabel`` loggers also log to ``<out>/run.log`` (held in memory until
    :meth:`attach`)."""

    def __init__(self, out: str | Path, rank: int = 0, world: int = 1):
        self.path = Path(out) / LOG_FILE
        self.rank, self.world = rank, world
        self.loggers = (logging.getLogger(PACKAGE_LOGGER), logging.getLogger(DETAIL_LOGGER))
        self.handler: logging.Handler | None = None
        self.attached = False
        self._level = self.loggers[0].level

    def _use(self, handler: logging.Handler) -> None:
        """Route the loggers to ``handler`` instead of the current one."""
        handler.addFilter(_RankFilter(self.rank))
        for logger in self.loggers:
            if self.handler is not None:
                logger.removeHandler(self.handler)
            logger.addHandler(handler)
        self.handler = handler

    def __enter__(self) -> "RunLog":
        package, details = self.loggers
        if package.getEffectiveLevel() > logging.INFO:
            package.setLevel(logging.INFO)
        details.propagate = False                 # file only: not to the console handlers of the root logger
        self._use(logging.handlers.MemoryHandler(HELD_RECORDS, flushLevel=logging.CRITICAL + 1, flushOnClose=False))
        self.detail(f"run started: {' '.join(sys.argv)} (host {socket.gethostname()}, pid {os.getpid()}, "
                    f"rank {self.rank} of {self.world})")
        return self

    def attach(self) -> None:
        """The output directory exists: write what was held and stream from now on (no-op if unwritable)."""
        if self.attached:
            return
        try:
            file = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        except OSError:
            return
        file.setFormatter(logging.Formatter(FORMAT))
        held = self.handler
        held.setTarget(file)
        held.flush()
        self._use(file)
        held.close()
        self.attached = True

    def detail(self, title: str, value=None, level: int = logging.INFO) -> None:
        """A file-only record: ``title``, followed by ``value`` as indented JSON when given."""
        self.loggers[1].log(level, "%s%s", title, "" if value is None else "\n" + json.dumps(value, indent=1,
                                                                                               default=str))

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.detail("run finished")
        elif issubclass(kind, Terminated):
            self.detail(f"run {TERMINATED}", level=logging.WARNING)
        elif issubclass(kind, KeyboardInterrupt):
            self.detail("run interrupted (Ctrl-C); rerun the same command to resume", level=logging.WARNING)
        else:
            self.detail(f"run stopped by {kind.__name__}: {error}", level=logging.ERROR)
        if self.path.parent.is_dir():
            self.attach()
        for logger in self.loggers:
            logger.removeHandler(self.handler)
        self.handler.close()
        self.loggers[0].setLevel(self._level)
