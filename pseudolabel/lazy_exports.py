"""A subpackage's public names, imported from its modules on first use (PEP 562 module ``__getattr__``).

``from pseudolabel.storage import open_shards`` imports ``pseudolabel.storage.shards`` only then, so importing one
module of a subpackage never loads its siblings: ``pseudolabel.storage.format`` stays quick to import for a tool's
``--help``, and ``import pseudolabel.cam`` loads neither torch nor open_clip until a name is used. Written by hand
because it is a dozen lines; scientific-python's ``lazy_loader`` does the same but would be one more dependency.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, names_by_module: Mapping[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` of ``package``, whose public names live in its modules as
    ``{module: (name, ...)}``; a name is imported from its module at first access and kept in the package."""
    module_of = {name: module for module, names in names_by_module.items() for name in names}
    if len(module_of) < sum(len(names) for names in names_by_module.values()):
        raise ValueError(f"{package}: a public name is listed under two modules")

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        setattr(sys.modules[package], name, value)  # later accesses skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return __getattr__, __dir__, sorted(module_of)
