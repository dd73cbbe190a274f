"""Shard layout (HDF5 Image/Palette spec), record roundtrip, lazy per-process reading and size per image."""
import json
import time

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pseudolabel.classes import get_class_set, pascal_palette
from pseudolabel.loc_maps import resize_maps
from pseudolabel.storage.check import check_shards
from pseudolabel.storage.format import image_id_from_key, image_key
from pseudolabel.storage.class_stats import ClassStats
from pseudolabel.storage.shards import LabelRecord, ShardWriter, open_shards

VOC = get_class_set("voc")


def make_record(image_id: str, size=(37, 53), classes=(3, 15), seed=0) -> LabelRecord:
    rng = np.random.default_rng(seed)
    h, w = size
    refined = np.zeros(size, np.uint8)
    refined[h // 4: h // 2, w // 4: w // 2] = classes[0]
    refined[h // 2:, w // 2:] = classes[-1]
    initial = np.roll(refined, 2, axis=1)
    lowres = rng.random((len(classes), -(-h // 16), -(-w // 16))).astype(np.float32)
    return LabelRecord(image_id=image_id, refined=refined, initial=initial, loc_maps_lowres=lowres,
                       loc_class_ids=tuple(classes), class_ids=tuple(classes), size=size)


def write_shards(directory, records, per_shard=2, attrs=None):
    directory.mkdir(parents=True, exist_ok=True)
    attrs = {"dataset": "voc", "split": "train", "config": {"a": 1}, "random_weights": True, **(attrs or {})}
    for i in range(0, len(records), per_shard):
        with ShardWriter(directory / f"shard-r000-{i // per_shard:05d}.h5", VOC, attrs) as writer:
            for record in records[i: i + per_shard]:
                writer.write(record)
    return directory


def test_layout_follows_the_hdf5_image_and_palette_spec(tmp_path):
    write_shards(tmp_path, [make_record("2007_000001")])
    with h5py.File(tmp_path / "shard-r000-00000.h5", "r") as f:
        refined = f["images/2007_000001/refined"]
        for key, value in {"CLASS": b"IMAGE", "IMAGE_SUBCLASS": b"IMAGE_INDEXED", "IMAGE_VERSION": b"1.2"}.items():
            assert refined.attrs[key] == value
            string_type = refined.attrs.get_id(key).get_type()   # as H5LTset_attribute_string writes it
            assert string_type.get_size() == len(value) + 1 and string_type.get_strpad() == h5py.h5t.STR_NULLTERM
            assert string_type.get_cset() == h5py.h5t.CSET_ASCII and refined.attrs.get_id(key).shape == ()
        assert refined.attrs["PALETTE"].shape == (1,)   # the spec's one-dimensional array of references
        palette = f[refined.attrs["PALETTE"][0]]
        assert palette.name == "/palette" and palette.attrs["CLASS"] == b"PALETTE"
        assert np.array_equal(palette[()], pascal_palette())
        assert refined.compression == "gzip" and refined.chunks == refined.shape
        assert list(refined.attrs["valid_range"]) == [0, 20]
        assert list(refined.attrs["IMAGE_MINMAXRANGE"]) == [0, 15]   # the data's minimum and maximum
        assert refined.attrs["IMAGE_MINMAXRANGE"].dtype == np.uint8
        assert json.loads(f.attrs["class_names"])[15] == "person"
        assert json.loads(f["images/2007_000001/loc_maps"].attrs["class_names"]) == ["bird", "person"]


def test_roundtrip_and_full_resolution_maps(tmp_path):
    records = [make_record(f"id/{i}", seed=i) for i in range(5)]  # '/' in ids is escaped
    shards = open_shards(write_shards(tmp_path, records))
    assert len(shards) == 5 and len(shards.shard_paths) == 3 and sorted(shards) == sorted(r.image_id for r in records)
    assert shards.attrs["dataset"] == "voc" and shards.attrs["config"] == {"a": 1} and shards.attrs["random_weights"]
    assert shards.class_set.num_classes == 21
    for record in records:
        got = shards[record.image_id]
        assert np.array_equal(got.refined, record.refined) and np.array_equal(got.initial, record.initial)
        assert got.class_ids == record.class_ids and got.size == record.size
        np.testing.assert_allclose(got.loc_maps_lowres, record.loc_maps_lowres, atol=1e-3)  # stored as float16
        full = got.loc_maps
        assert full.shape == (2, *record.size)
        np.testing.assert_allclose(full, resize_maps(record.loc_maps_lowres, record.size), atol=1e-3)


def test_per_class_records_round_trip_through_staging_and_shards(tmp_path):
    record = make_record("a")
    record.class_stats = ClassStats.measure(record.class_ids, record.initial, record.refined, (7, 3), (5, 0))
    np.savez(tmp_path / "staged.npz", **record.to_arrays())
    with np.load(tmp_path / "staged.npz", allow_pickle=False) as arrays:
        staged = LabelRecord.from_arrays(arrays)
    assert staged.class_stats == record.class_stats
    shards = open_shards(write_shards(tmp_path / "shards", [staged, make_record("old")]))
    stats = shards["a"].class_stats
    assert stats == record.class_stats and stats.prompts == (7, 3) and stats.masks_accepted == (5, 0)
    assert stats.y0_pixels == tuple(int((record.initial == c).sum()) for c in record.class_ids)
    assert shards["old"].class_stats is None and shards.read_class_stats("old") is None   # a record without them
    with h5py.File(shards.shard_paths[0], "r") as handle:   # a table HDF5 viewers show with named columns
        assert handle["images/a/class_stats"].dtype.names == ("class_id", "prompts", "masks_accepted", "y0_pixels",
                                                               "refined_pixels")


def test_duplicate_ids_and_missing_directory_are_clear_errors(tmp_path):
    write_shards(tmp_path / "a", [make_record("x"), make_record("y"), make_record("x")])
    with pytest.raises(ValueError, match="'x' appears in two shards"):
        open_shards(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="gen_pseudo"):
        open_shards(tmp_path / "nothing")


class _Labels(Dataset):
    def __init__(self, shards):
        self.shards, self.ids = shards, sorted(shards)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return torch.from_numpy(self.shards[self.ids[i]].refined.astype(np.int64)).sum()


def test_reader_in_dataloader_workers(tmp_path):
    records = [make_record(f"im{i}", seed=i, classes=(i + 1, 20)) for i in range(6)]
    shards = open_shards(write_shards(tmp_path, records))
    shards["im0"]  # open handles in the parent before forking
    expected = [int(r.refined.astype(np.int64).sum()) for r in sorted(records, key=lambda r: r.image_id)]
    got = [int(x) for x in DataLoader(_Labels(shards), batch_size=None, num_workers=2)]
    assert got == expected


def test_bytes_per_voc_sized_image_under_300kb(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 375, 500
    yy, xx = np.mgrid[:h, :w]
    refined = np.zeros((h, w), np.uint8)
    refined[(yy - 180) ** 2 + (xx - 240) ** 2 < 120 ** 2] = 15
    refined[(yy - 90) ** 2 / 2 + (xx - 400) ** 2 < 60 ** 2] = 8
    lowres = np.stack([np.exp(-((yy[::16, ::16] - c) ** 2 + (xx[::16, ::16] - c) ** 2) / 8000.0) for c in (180, 300)])
    lowres = lowres + rng.random(lowres.shape) * 0.05
    records = [LabelRecord(image_id=f"i{k}", refined=refined, initial=np.roll(refined, 7, 1),
                           loc_maps_lowres=lowres.astype(np.float32), loc_class_ids=(8, 15), class_ids=(8, 15),
                           size=(h, w)) for k in range(10)]
    write_shards(tmp_path, records, per_shard=10)
    per_image = (tmp_path / "shard-r000-00000.h5").stat().st_size / 10
    print(f"bytes per VOC-sized image: {per_image:.0f}")
    assert per_image < 300_000


@pytest.mark.parametrize("inflater", ["zlib_ng", "zlib"])
def test_read_label_reads_one_map(tmp_path, monkeypatch, inflater):
    import zlib

    from zlib_ng import zlib_ng

    monkeypatch.setattr("pseudolabel.storage.shards.deflate", {"zlib_ng": zlib_ng, "zlib": zlib}[inflater])
    records = [make_record(f"id/{i}", size=(30 + i, 41), seed=i) for i in range(5)]
    shards = open_shards(write_shards(tmp_path, records))
    for record in records:  # the raw-chunk fast path gives exactly what HDF5 decodes
        assert np.array_equal(shards.read_label(record.image_id), record.refined)
        assert np.array_equal(shards.read_label(record.image_id, "initial"), record.initial)
        assert np.array_equal(shards.read_label(record.image_id), shards[record.image_id].refined)
    assert all(len(chunks) == 2 * n for (_, chunks), n in zip(shards._raw.values(), (2, 2, 1)))
    with pytest.raises(ValueError, match="refined"):
        shards.read_label("a", "loc_maps")


def test_image_keys_are_injective_and_keep_plain_ids():
    ids = ["sub/x", "sub|x", "sub%2Fx", "sub%x", "%", "/", "%25", "a b/é", "2007_000032"]
    keys = [image_key(i) for i in ids]
    assert len(set(keys)) == len(ids) and all("/" not in k for k in keys)
    assert [image_id_from_key(k) for k in keys] == ids
    assert image_key("2007_000032") == "2007_000032" and image_key("a b|é") == "a b|é"  # unchanged groups


def test_ids_that_differ_only_in_a_slash_are_two_images(tmp_path):
    records = [make_record("sub/x", seed=1), make_record("sub|x", seed=2), make_record("sub%2Fx", seed=3)]
    complete = {"versions": {}, "weights": {}, "rank": 0}  # every required root attribute, for the checker
    shards = open_shards(write_shards(tmp_path, records, per_shard=3, attrs=complete))
    assert sorted(shards) == sorted(r.image_id for r in records)
    for record in records:
        assert np.array_equal(shards.read_label(record.image_id, "initial"), record.initial)
        assert shards[record.image_id].loc_maps_lowres.shape == record.loc_maps_lowres.shape
    assert check_shards(tmp_path, require_manifest=False) == []


def test_attributes_decode_by_their_declared_type(tmp_path):
    # text that looks like JSON stays text; JSON attributes come back as data
    attrs = {"split": "[1, 2]", "dataset": "{voc}", "image_dir": "[photos]", "weights": ["a", {"b": 1}]}
    shards = open_shards(write_shards(tmp_path, [make_record("x")], attrs=attrs))
    assert shards.attrs["split"] == "[1, 2]" and shards.attrs["dataset"] == "{voc}"
    assert shards.attrs["image_dir"] == "[photos]" and shards.attrs["weights"] == ["a", {"b": 1}]
    assert shards.attrs["random_weights"] is True and shards.attrs["config"] == {"a": 1}
    with pytest.raises(ValueError, match="not part of the shard format"):
        write_shards(tmp_path / "bad", [make_record("x")], attrs={"colour": "red"})


def test_every_dataset_carries_fletcher32_and_the_file_its_digest(tmp_path):
    from pseudolabel.storage.checksum import DIGEST_TAG, verify_file

    path = write_shards(tmp_path, [make_record("a")]) / "shard-r000-00000.h5"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        group = f["images/a"]
        assert all(group[name].fletcher32 for name in ("refined", "initial", "loc_maps", "refined_rgb", "initial_rgb"))
        # the chunks written directly (zlib-ng, our Fletcher-32) pass HDF5's own filters on reading
        assert np.array_equal(group["refined_rgb"][()], pascal_palette()[group["refined"][()]])
        assert group["refined_rgb"].compression == "gzip" and group["refined_rgb"].chunks == group["refined_rgb"].shape
    assert path.read_bytes().startswith(DIGEST_TAG) and verify_file(path) is None


def test_fletcher32_of_a_raw_chunk_equals_hdf5s(tmp_path):
    # oracle: the checksum HDF5's own filter stored; payloads of odd and even lengths around the 360-word folds
    from pseudolabel.storage.checksum import fletcher32

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 719, 720, 721, 1441, 20001):
        for data in (rng.integers(0, 256, n), np.full(n, 255)):
            with h5py.File(tmp_path / "f.h5", "w") as f:
                f.create_dataset("x", data=data.astype(np.uint8), chunks=(n,), fletcher32=True)
            with h5py.File(tmp_path / "f.h5", "r") as f:
                info = f["x"].id.get_chunk_info(0)
            raw = (tmp_path / "f.h5").read_bytes()[info.byte_offset: info.byte_offset + info.size]
            assert raw[:-4] == data.astype(np.uint8).tobytes()
            assert fletcher32(raw[:-4]) == int.from_bytes(raw[-4:], "little")


def flip(path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def test_flipped_bytes_are_found_when_opening_and_when_reading(tmp_path):
    from pseudolabel.storage.shards import ShardDamagedError

    records = [make_record(f"im{i}", seed=i) for i in range(2)]
    shard = write_shards(tmp_path, records) / "shard-r000-00000.h5"
    with h5py.File(shard, "r") as f:
        info = f["images/im1/refined"].id.get_chunk_info(0)
    flip(shard, info.byte_offset + info.size // 2)          # one bit inside im1's refined label chunk
    with pytest.raises(ShardDamagedError, match=r"shard-r000-00000\.h5' is damaged.*SHA-256.*check_shards\.py"):
        open_shards(tmp_path)
    shards = open_shards(tmp_path, verify=False)             # as data-loader workers open it
    assert np.array_equal(shards.read_label("im0"), records[0].refined)   # the other image is intact
    with pytest.raises(ShardDamagedError, match="im1.*Fletcher-32"):
        shards.read_label("im1")                             # the raw reader checks the chunk
    with pytest.raises(ShardDamagedError, match="im1"):
        shards["im1"]                                        # HDF5's reader too


def test_a_truncated_shard_is_named(tmp_path):
    from pseudolabel.storage.shards import ShardDamagedError

    shard = write_shards(tmp_path, [make_record("a"), make_record("b")]) / "shard-r000-00000.h5"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ShardDamagedError, match=str(shard)):
        open_shards(tmp_path)


def test_ids_hdf5_cannot_name_as_they_are_get_their_own_group(tmp_path):
    ids = [".", "..", "%2E", ".a", "a", " a"]
    keys = [image_key(i) for i in ids]
    assert len(set(keys)) == len(ids) and [image_id_from_key(k) for k in keys] == ids
    records = [make_record(i, seed=k) for k, i in enumerate(ids)]
    shards = open_shards(write_shards(tmp_path, records, per_shard=len(ids)))
    assert sorted(shards) == sorted(ids)
    for record in records:
        assert np.array_equal(shards[record.image_id].refined, record.refined)
    for impossible in ("", "a\0b"):
        with pytest.raises(ValueError, match="non-empty and hold no NUL"):
            image_key(impossible)


def test_a_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "shard-r000-00000.h5", VOC, {"dataset": "voc"}) as writer:
            writer.write(make_record("a"))
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_the_same_records_give_the_same_bytes_whenever_written(tmp_path):
    """No creation times in any object header: a rerun's shard equals the first run's byte for byte (resume and the
    sweep's byte-identity with gen_pseudo rest on it)."""
    records = [make_record("2007_000001"), make_record("2007_000002", seed=1)]
    first = write_shards(tmp_path / "first", records)
    time.sleep(1.1)   # HDF5's object times have one-second resolution
    second = write_shards(tmp_path / "second", records)
    assert (first / "shard-r000-00000.h5").read_bytes() == (second / "shard-r000-00000.h5").read_bytes()
