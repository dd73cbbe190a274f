"""Stage one's output on disk and everything that reads it back: the shard format, its single owner (``format``:
names, label kinds, ignore value, image keys, attribute encodings), the HDF5 writer and reader (``shards``:
``ShardWriter``, ``open_shards``, ``LabelRecord``) with its checksums (``checksum``), per-class records
(``class_stats``), the crash-safe resumable run directory (``run_store``, ``atomic``) with its lock (``lock``) and log
(``run_log``), integrity checks (``check``) and the export to PNG and ``.npy`` files (``export``). Nothing here
imports torch; the public names below import their module on first use, so ``import pseudolabel.storage.format``
stays quick (``pseudolabel/lazy_exports.py``)."""
from pseudolabel.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "format": ("IGNORE_INDEX", "INITIAL", "LABEL_KINDS", "REFINED", "image_id_from_key", "image_key"),
    "shards": ("LabelRecord", "ShardSet", "ShardWriter", "open_shards", "shard_image_ids", "ShardError",
               "ShardDamagedError"),
    "class_stats": ("ClassStats",),
    "run_store": ("RunStore",),
    "lock": ("OutputLock", "OutputLockedError"),
    "run_log": ("RunLog",),
    "atomic": ("atomic_write",),
    "check": ("CheckResult", "check_shards", "run_check"),
    "export": ("ExportConfig", "ExportError", "export_labels"),
})
