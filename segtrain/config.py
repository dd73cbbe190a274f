"""Reading a stage-two config: mmengine's ``Config.fromfile`` plus a warning for a config used under its old name.

Configs follow mmsegmentation's naming scheme, ``{algorithm}_{backbone}_{gpus}xb{batch}-{schedule}_{dataset}-{crop}``
(docs/stage_two.md). A renamed config keeps its old file for one release, a ``_base_`` alias that sets
``renamed_to``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from mmengine.config import Config

RENAMED_KEY = "renamed_to"


def read_config(path: str | Path) -> Config:
    """The config at ``path``; warns (``FutureWarning``) when it is, or inherits from, an alias kept for a rename."""
    cfg = Config.fromfile(str(path))
    new_name = cfg.get(RENAMED_KEY)
    if new_name:
        warnings.warn(f"{path}: the config behind this name was renamed to segtrain/configs/{new_name} "
                      "(mmsegmentation's naming scheme); the old name still works in this release and will be "
                      "removed in the next one", FutureWarning, stacklevel=2)
    return cfg
