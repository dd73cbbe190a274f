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
