"""Atomic file writes: a file appears under its final name only once it is complete."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], durable: bool = True) -> None:
    """Write through ``write(handle)`` to ``<path>.tmp``, then rename it to ``path``.

    A crash (even ``kill -9``) leaves either the old file, or the new one, or a ``.tmp`` file; never a half-written
    file under the final name. When ``write`` raises, the ``.tmp`` file is removed and the error propagates.
    ``durable`` also fsyncs before the rename, so the content survives a power loss; it costs a few milliseconds per
    file, too much for thousands of small exported files.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
