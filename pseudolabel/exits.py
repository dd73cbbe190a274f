"""How every command-line tool ends: one line on stderr and a documented exit status, never a traceback for a problem
the user can act on (docs/stage_one.md#exit-status-and-messages). Standard library only.

- Ctrl-C: ``interrupted; rerun the same command to resume``, exit status 130 (128 + SIGINT, as shells report it).
- SIGTERM (``kill``, a batch scheduler, torchrun stopping its workers): ``stopped by SIGTERM; rerun the same command to
  resume``, exit status 143 (128 + SIGTERM); it is raised as :class:`Terminated`, a ``KeyboardInterrupt``, so
  everything done for Ctrl-C (finished images written, worker pools cancelled, run.log's closing line) is done for it.
- An output that cannot be written (disk full, quota, read-only, permissions): one line naming the path and the fix,
  exit status 2; everything finished before is kept. An output folder is set up by :func:`prepare_output_dir`: a path
  that is a file (or under one) or a folder that refuses new files is the same kind of line.
- An error the tool expects (bad input, a refused checkpoint, a damaged shard): ``error: <message>``, exit status 2.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

INTERRUPTED = "interrupted; rerun the same command to resume"
TERMINATED = "stopped by SIGTERM; rerun the same command to resume"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM
WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
                errno.EPERM: "operation not permitted (an immutable or append-only folder? see lsattr)",
                errno.EFBIG: "file too large for this file system"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises ``KeyboardInterrupt``; a subclass of it, so every
    clean-up written for Ctrl-C runs for SIGTERM too."""


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated


class OutputError(RuntimeError):
    """An output cannot be written; everything finished so far is kept."""


def output_error(error: OSError, where: str | Path | None = None) -> OutputError | None:
    """The :class:`OutputError` for a write that failed with one of :data:`WRITE_ERRNOS` (None for other errors)."""
    if error.errno not in WRITE_ERRNOS:
        return None
    where = where or error.filename or "the output"
    return OutputError(f"cannot write to '{where}': {WRITE_ERRNOS[error.errno]}. Everything finished so far is kept; "
                       "free space or fix permissions, then rerun the same command to resume")


def guard_write(action: Callable, where: str | Path):
    """Run ``action()``; a disk-full, quota or permission error becomes an :class:`OutputError` naming ``where``."""
    try:
        return action()
    except OSError as error:
        raised = output_error(error, where)
        if raised is None:
            raise
        raise raised from None


def prepare_output_dir(folder: str | Path, what: str = "--out") -> Path:
    """Create the output folder ``folder`` (``what``: the option naming it) with its parents and check that it takes
    new files. A path that is a file or lies under one, or a folder that refuses writing, raises an
    :class:`OutputError` naming the path and the fix."""
    folder = Path(folder)
    if (blocking := _file_in(folder)) is not None:
        where = "is" if blocking == folder else f"lies under '{blocking}', which is"
        raise OutputError(f"{what} '{folder}' {where} a file, not a folder; name another {what} or move the file away")
    probe = folder / f".write-test-{os.getpid()}"

    def create() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    guard_write(create, folder)
    return folder


def prepare_output_file(path: str | Path, what: str) -> Path:
    """Check, before the work that ends in writing it, that the file ``path`` (``what``: the option naming it) can be
    written: its folder is created; a path that is a folder, lies under a file or cannot be written raises an
    :class:`OutputError` naming the path and the fix."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} '{path}' is a folder, not a file; name a file (in it or elsewhere)")
    if (blocking := _file_in(path.parent)) is not None:
        raise OutputError(f"{what} '{path}' lies under '{blocking}', which is a file, not a folder; name another "
                          f"{what} or move the file away")
    try:
        prepare_output_dir(path.parent, what)
    except OutputError as error:
        raise OutputError(f"{what} '{path}': {error}") from None
    return path


def _file_in(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents that exists and is not a folder (None if there is none)."""
    return next((p for p in (folder, *folder.parents) if (p.exists() or p.is_symlink()) and not p.is_dir()), None)


def one_line(message: object) -> str:
    """A message on one line (the lines of a multi-line one joined with '; ')."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _ignore_ctrl_c(initializer: Callable | None, *initargs) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """A ``ProcessPoolExecutor`` for a tool: its workers ignore Ctrl-C and SIGTERM, so the main process alone reports
    them (once, no traceback per worker), and either cancels the work still queued."""
    with ProcessPoolExecutor(max_workers=workers, initializer=_ignore_ctrl_c,
                             initargs=(initializer, *initargs)) as pool:
        try:
            yield pool
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _close_progress_bars() -> None:
    """Close the tqdm bars still open, so none redraws itself after the tool's last line (tqdm's own registry)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere: nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tool_main(*expected: type[BaseException]) -> Callable:
    """Decorate a tool's ``main(argv) -> int``: Ctrl-C, SIGTERM, unwritable outputs and the ``expected`` exception
    types end the tool with one line on stderr and the exit statuses of this module's docstring."""
    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                with sigterm_raises():
                    return main(*args, **kwargs)
            except KeyboardInterrupt as stop:   # Ctrl-C, or SIGTERM (Terminated)
                _close_progress_bars()
                terminated = isinstance(stop, Terminated)
                # a new line: the current one may hold the terminal's ^C or a progress line without its end
                print(f"\n{TERMINATED if terminated else INTERRUPTED}", file=sys.stderr)
                return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
            except OSError as error:
                unwritable = output_error(error)
                if unwritable is None and not isinstance(error, expected):
                    raise
                _close_progress_bars()
                print(f"error: {one_line(unwritable or error)}", file=sys.stderr)
                return EXIT_ERROR
            except expected as error:
                _close_progress_bars()
                print(f"error: {one_line(error)}", file=sys.stderr)
                return EXIT_ERROR
        return run
    return decorate
