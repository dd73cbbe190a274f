"""Stage-one storage: the HDF5 shard format (``shards``), the crash-safe resumable run directory (``run_store``) and
integrity checks of a shard directory (``check``)."""
