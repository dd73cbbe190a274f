"""One writer per output folder: an exclusive lock on a file in the folder, taken before a tool loads anything.

The lock is ``fcntl.flock`` on ``<folder>/.lock`` (or ``.lock-<part>``), so the operating system releases it when the
holding process ends, however it ends: a crash or ``kill -9`` never leaves a stale lock, and no lock file ever needs
deleting by hand. The holder writes its host, PID, start time and command line into the file; a second run finds the
lock taken and fails at once, naming that holder. Standard library only.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from pseudolabel.exits import OutputError, guard_write, prepare_output_dir


class OutputLockedError(OutputError):
    """Another process holds the lock of an output folder."""


class OutputLock:
    """``with OutputLock(folder):`` holds ``<folder>/.lock`` (``part``: ``.lock-<part>``) exclusively.

    ``what`` names the folder in the error (e.g. ``--out``, ``the work dir``). The folder is created if needed.
    """

    def __init__(self, folder: str | Path, part: str | None = None, what: str = "--out"):
        self.folder = Path(folder)
        self.path = self.folder / (f".lock-{part}" if part else ".lock")
        self.what = what
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds the lock, as its file records it."""
        try:
            info = json.loads(self.path.read_text())
            return (f"PID {info['pid']} on {info['host']}, started {info['started']}: {info['command']}")
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that has not recorded itself yet"

    def acquire(self) -> "OutputLock":
        """Take the lock, or raise :class:`OutputLockedError` naming its holder."""
        prepare_output_dir(self.folder, self.what)

        def open_file() -> int:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fd = guard_write(open_file, self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(f"'{self.folder}' is in use by another run ({self.holder()}); wait for it to "
                                    f"finish or use another {self.what}") from None
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)}

        def write() -> None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            guard_write(write, self.path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (closing the file releases it; the file itself stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
