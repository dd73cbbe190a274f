"""RunStore recovery: whatever an interrupted run left (temp files, records staged by any number of ranks) is
cleaned or packed once, so a rerun with another number of ranks neither loses nor duplicates an image."""
from __future__ import annotations

from collections import Counter

from pseudolabel.classes import get_class_set
from pseudolabel.storage.run_store import RunStore
from pseudolabel.storage.shards import shard_image_ids
from tests.test_shards import make_record

VOC = get_class_set("voc")
ATTRS = {"dataset": "voc", "split": "train", "config": {}, "random_weights": True}


def store(out, rank: int, shard_size: int = 2) -> RunStore:
    return RunStore(out, rank, VOC, ATTRS, shard_size=shard_size)


def images_in_shards(out) -> Counter:
    return Counter(i for shard in out.glob("shard-*.h5") for i in shard_image_ids(shard))


def test_recover_packs_every_rank_s_staging_once_and_removes_temp_files(tmp_path):
    # An interrupted 4-rank run. Rank 0 packed a, b (shard_size 2), staged c, and still had b staged (it crashed
    # between writing the shard and removing the staged files). Rank 3 packed d, e and staged f. Ranks 1 and 2 were
    # writing temp files.
    for rank, packed, staged in ((0, "ab", "bc"), (3, "de", "f")):
        for image_id in packed:
            store(tmp_path, rank).stage(make_record(image_id))  # the second stage() packs a shard
        for image_id in staged:
            store(tmp_path, rank, shard_size=100).stage(make_record(image_id))
    (tmp_path / "shard-r001-00000.h5.tmp").write_bytes(b"half a shard")
    (tmp_path / ".staging" / "r002").mkdir()
    (tmp_path / ".staging" / "r002" / "x.npz.tmp").write_bytes(b"half a record")
    (tmp_path / "failures-r001.json.tmp").write_text("[")
    assert images_in_shards(tmp_path) == Counter("abde")

    # The rerun has a single rank.
    rerun = store(tmp_path, 0)
    assert rerun.recover() == 2  # c and f; b's staged copy was already in a shard
    assert images_in_shards(tmp_path) == Counter("abcdef")
    assert rerun.finished() == set("abcdef")
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.npz"))
    assert rerun.recover() == 0 and images_in_shards(tmp_path) == Counter("abcdef")


def test_packing_onto_a_full_disk_raises_the_one_line_error_and_keeps_the_staged_records(tmp_path):
    # In a subprocess: HDF5 writing straight to a full disk used to crash the process (segfault).
    import subprocess
    import sys

    from tests.fixtures.small_disk import small_disk

    script = """
import sys
from pathlib import Path
import numpy as np
from pseudolabel.classes import get_class_set
from pseudolabel.exits import OutputError
from pseudolabel.storage.run_store import RunStore
from pseudolabel.storage.shards import LabelRecord
from tests.fixtures.small_disk import fill
disk = Path(sys.argv[1])
store = RunStore(disk / "out", 0, get_class_set("voc"), {"dataset": "voc", "split": "t", "config": {},
                 "random_weights": True, "weights": {}, "versions": {}}, shard_size=100)
rng = np.random.default_rng(0)
for i in range(6):
    labels = rng.integers(0, 3, (100, 120)).astype(np.uint8)   # incompressible enough to need the space
    store.stage(LabelRecord(image_id=f"i{i}", refined=labels, initial=labels, size=(100, 120),
                            loc_maps_lowres=np.zeros((1, 7, 8), np.float32), loc_class_ids=(1,), class_ids=(1, 2)))
fill(disk, leave=8192)
try:
    store.pack()
except OutputError as error:
    print("OutputError:", error)
"""
    with small_disk(tmp_path / "disk", "256k") as disk:
        result = subprocess.run([sys.executable, "-c", script, str(disk)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "OutputError: cannot write to" in result.stdout and "the disk is full" in result.stdout
        assert len(list((disk / "out" / ".staging" / "r000").glob("*.npz"))) == 6   # nothing finished is lost
        assert not list((disk / "out").glob("shard-*"))                            # no partial shard, no temp file
