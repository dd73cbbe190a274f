"""What reaches the tools' console: the toolkit's own messages, not the dependencies' notes to their developers.

The pinned stack (``requirements.txt``) warns about its own internals: setuptools that mmengine still imports
``pkg_resources``, torch that TorchScript is deprecated, mmseg and mmengine that they call their own deprecated
functions, and open_clip logs each step of building a model on the root logger. None of it is something a user of
the tools can act on, so :func:`hide_foreign_warnings` filters exactly those messages (by text, so a new warning still
shows), :func:`hide_foreign_log_lines` does the same for a logger (mmengine's, the root logger), and
:func:`console_logging` keeps other libraries' INFO records off the console while the toolkit's own still show.
"""
from __future__ import annotations

import logging
import re
import warnings

# (category, the start of the message, who emits it and why it does not concern a user)
FOREIGN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (UserWarning, r"pkg_resources is deprecated as an API",
     "setuptools, when mmengine imports pkg_resources (to resolve mmseg:: configs)"),
    (DeprecationWarning, r"`torch\.jit\.\w+` is (deprecated|not supported)",
     "torch, when TorchScript archives are read (OpenAI's CLIP checkpoints)"),
    (UserWarning, r"``build_loss`` would be deprecated soon", "mmseg, building its own decode heads' losses"),
    (UserWarning, r"Default ``avg_non_ignore`` is False",
     "mmseg's CrossEntropyLoss; the stage-two configs keep mmseg's recipe, which averages over all pixels"),
    (UserWarning, r"The draw is False, it means that the hook for visualization",
     "mmseg's SegVisualizationHook of its default runtime, off unless asked for"),
)
FOREIGN_LOG_LINES: tuple[str, ...] = (
    r'"FileClient" will be deprecated', r'"HardDiskBackend" is the alias of',   # mmengine's CheckpointHook, on itself
    r"The prefix is not set in metric class",   # mmengine, on mmseg's IoUMetric (mmseg's own configs leave it unset)
    r"No pretrained weights loaded for model",   # open_clip; the toolkit's own line says so, loudly, right after
)
TOOLKIT_LOGGER = "pseudolabel"


def hide_foreign_warnings() -> None:
    """Ignore the :data:`FOREIGN_WARNINGS` (in this process and the processes it forks); safe to call repeatedly."""
    for category, message, _ in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


class ForeignLogFilter(logging.Filter):
    """Drops the log records of :data:`FOREIGN_LOG_LINES`."""

    pattern = re.compile("|".join(FOREIGN_LOG_LINES))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def hide_foreign_log_lines(logger: logging.Logger) -> None:
    """Keep :data:`FOREIGN_LOG_LINES` out of ``logger`` (e.g. an mmengine Runner's); safe to call repeatedly."""
    if not any(isinstance(f, ForeignLogFilter) for f in logger.filters):
        logger.addFilter(ForeignLogFilter())


def console_logging(fmt: str = "[%(name)s] %(message)s") -> None:
    """Log to the console: the toolkit's INFO records and the libraries' warnings, not their INFO records nor the
    :data:`FOREIGN_LOG_LINES` (open_clip logs on the root logger)."""
    logging.basicConfig(level=logging.WARNING, format=fmt)
    logging.getLogger(TOOLKIT_LOGGER).setLevel(logging.INFO)
    hide_foreign_log_lines(logging.getLogger())
