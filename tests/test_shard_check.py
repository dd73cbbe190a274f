"""pseudolabel.storage.check and tools/check_shards.py: a good stage-one output passes; each kind of damage is caught
(as exactly the problem it is, where that can be pinned down) and gives exit status 1."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pseudolabel.storage.check import check_shards, run_check
from pseudolabel.storage.format import CLASS_STATS_DTYPE
from tests.fixtures.viewer_shards import REPO, load_tool, make_voc_run

FIRST, SECOND = "shard-r000-00000.h5", "shard-r000-00001.h5"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_voc_run(tmp_path_factory.mktemp("check"))[1]


@pytest.fixture()
def shards(pristine, tmp_path):
    """A fresh copy of the good output, free to damage."""
    return shutil.copytree(pristine, tmp_path / "shards")


def first_group(handle: h5py.File) -> h5py.Group:
    return next(iter(handle["images"].values()))


def set_label(group: h5py.Group, kind: str, labels: np.ndarray) -> None:
    """Overwrite a label map together with what the writer derives from it (its colour rendering and value range),
    so that only the edit under test is inconsistent."""
    group[kind][()] = labels
    group[f"{kind}_rgb"][()] = group.file["palette"][()][labels]
    group[kind].attrs["IMAGE_MINMAXRANGE"] = np.array([labels.min(), labels.max()], np.uint8)


def beyond_checksums(problems: list[str], *edited: str) -> list[str]:
    """The problems other than the checksum failure that each edited shard must report (a file edited after it was
    written no longer matches its digest)."""
    damaged = [p for p in problems if "damaged: its SHA-256 does not match" in p]
    assert sorted(p.split(":")[0] for p in damaged) == sorted(edited), problems
    return [p for p in problems if p not in damaged]


def test_a_good_output_passes(shards):
    result = run_check(shards)
    assert result.problems == [] and result.ok
    assert (result.shards, result.images, result.failures, result.random_weights) == (2, 4, 1, True)


def test_a_deleted_image_group(shards):
    with h5py.File(shards / SECOND, "a") as f:
        victim = list(f["images"])[-1]   # not the one /images@default names (its loss is reported apart)
        del f["images"][victim]
    problems = beyond_checksums(check_shards(shards), SECOND)
    assert len(problems) == 1 and "missing from the shards" in problems[0] and victim in problems[0]


def test_a_label_outside_the_image_classes(shards):
    with h5py.File(shards / FIRST, "a") as f:
        group = first_group(f)
        absent = next(c for c in range(1, 21) if c not in group.attrs["class_ids"])
        data = group["refined"][()]
        data[0, 0] = absent
        set_label(group, "refined", data)
    problems = beyond_checksums(check_shards(shards), FIRST)
    assert len(problems) == 1 and "refined" in problems[0] and f"[{absent}]" in problems[0]


def test_ignore_label_is_allowed(shards):
    with h5py.File(shards / FIRST, "a") as f:
        data = first_group(f)["initial"][()]
        data[:2] = 255
        set_label(first_group(f), "initial", data)
    assert beyond_checksums(check_shards(shards), FIRST) == []


def test_duplicates_differing_config_and_missing_palette_reference(shards):
    with h5py.File(shards / FIRST, "r") as a, h5py.File(shards / SECOND, "a") as b:
        key = next(iter(a["images"]))
        a.copy(a["images"][key], b["images"], name=key)
        b.attrs["config"] = json.dumps({"seed": 1})
        del b["images"][key]["initial"].attrs["PALETTE"]
    text = "\n".join(beyond_checksums(check_shards(shards), SECOND))
    assert "stored 2 times" in text and "no PALETTE" in text
    assert "made with other settings than shard-r000-00000.h5 (config.seed: 0 -> 1" in text


def test_shape_and_attribute_inconsistencies(shards):
    with h5py.File(shards / FIRST, "a") as f:
        group = first_group(f)
        group.attrs["width"] = int(group.attrs["width"]) + 1          # refined/initial no longer (height, width)
        loc = group["loc_maps"]
        loc.attrs["class_ids"] = np.array([*loc.attrs["class_ids"], 20])  # K != number of loc class ids
        group.attrs["class_names"] = json.dumps(["nothing"])
        del f.attrs["class_set"]
    text = "\n".join(beyond_checksums(check_shards(shards), FIRST))
    assert "refined: shape" in text and "initial: shape" in text
    assert "loc_maps: class ids" in text and "loc_maps: shape" in text
    assert "class_names attribute does not name" in text and "'class_set' missing" in text


def test_a_truncated_file_and_cli_exit_codes(shards, capsys):
    tool = load_tool("check_shards")
    assert tool.main([str(shards)]) == 0
    out = capsys.readouterr().out
    assert "2 shard(s), 4 image(s), 1 failure(s)" in out and out.rstrip().endswith("OK")

    data = (shards / SECOND).read_bytes()
    (shards / SECOND).write_bytes(data[: len(data) // 2])
    problems = check_shards(shards)
    assert any(SECOND in p and ("cannot be opened" in p or "unreadable" in p) for p in problems)
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "check_shards.py"), str(shards)],
                         capture_output=True, text=True, timeout=60)   # the real script, as a user runs it
    assert bad.returncode == 1 and bad.stdout.rstrip().endswith("FAILED"), bad.stdout + bad.stderr
    assert tool.main([str(shards), "--no-manifest"]) == 1              # still truncated


def test_manifest_missing_malformed_or_disagreeing(shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    (shards / "manifest.json").unlink()
    assert any("manifest.json missing" in p for p in check_shards(shards))
    assert check_shards(shards, require_manifest=False) == []

    (shards / "manifest.json").write_text(json.dumps({**manifest, "shards": ["x"]}))
    assert any("no 'shards' mapping" in p for p in check_shards(shards))

    listing = {**manifest["shards"], "shard-r000-00009.h5": ["ghost"]}
    (shards / "manifest.json").write_text(json.dumps({**manifest, "shards": listing}))
    text = "\n".join(check_shards(shards))
    assert "'shard-r000-00009.h5' which does not exist" in text and "1 manifest image(s) missing" in text
    assert "num_images 4 but its shards list 5" in text


def test_not_a_directory(tmp_path):
    assert "is not a directory" in check_shards(tmp_path / "nope")[0]
    assert load_tool("check_shards").main([str(tmp_path / "nope")]) == 1


def test_per_class_records_are_checked_against_the_label_maps(shards):
    with h5py.File(shards / FIRST, "r+") as handle:
        group = first_group(handle)
        class_ids = [int(c) for c in group.attrs["class_ids"]]
        initial, refined = group["initial"][()], group["refined"][()]
        rows = np.array([(c, 4, 2, (initial == c).sum(), (refined == c).sum()) for c in class_ids], CLASS_STATS_DTYPE)
        table = group.create_dataset("class_stats", data=rows)
        table.attrs["changed_pixels"] = int((initial != refined).sum())
    assert beyond_checksums(check_shards(shards), FIRST) == []
    with h5py.File(shards / FIRST, "r+") as handle:
        table = first_group(handle)["class_stats"]
        rows = table[()]
        rows["refined_pixels"][0] += 1
        rows["masks_accepted"][0] = 5
        table[...] = rows
        table.attrs["changed_pixels"] = -1
    problems = beyond_checksums(check_shards(shards), FIRST)
    assert len(problems) == 3
    assert "masks_accepted not within 0..prompts" in problems[0]
    assert "refined_pixels" in problems[1] and "but the label map has" in problems[1]
    assert "changed_pixels -1" in problems[2]


def test_format_3_viewer_attributes_and_renderings_are_checked(shards):
    with h5py.File(shards / FIRST, "r+") as handle:
        group = first_group(handle)
        height = group["refined"].shape[0]
        group["refined_rgb"][0, 0] = [1, 2, 3]                        # a pixel not in its class colour
        group["initial"].attrs["IMAGE_MINMAXRANGE"] = np.array([0, 20], np.uint8)   # the class range, not the data's
        group["refined"].attrs["CLASS"] = np.bytes_("IMAGE")            # NULL-padded, as format 2 wrote it
        group["initial"].attrs.create("PALETTE", handle["palette"].ref, dtype=h5py.ref_dtype)   # a scalar
        del group["row"]
        group["row"] = np.arange(height, dtype=np.int32)              # rising: silx would draw row 0 at the bottom
        group.attrs["signal"] = "refined"                              # not the rendering
        del group["initial_rgb"]
        handle["images"].attrs["default"] = "nowhere"
    problems = beyond_checksums(check_shards(shards), FIRST)
    text = "\n".join(problems)
    assert len(problems) == 8, text
    assert "refined_rgb: does not show 'refined' in the colours of /palette" in text
    assert "initial: IMAGE_MINMAXRANGE is not the map's [minimum, maximum]" in text
    assert "refined: CLASS is not a NULL-terminated ASCII string of 6 bytes" in text
    assert "initial: PALETTE attribute does not reference /palette as a one-dimensional array" in text
    assert "'row' is not the row axis" in text and "NXdata attribute signal is 'refined'" in text
    assert "dataset 'initial_rgb' missing" in text and "/images: attribute default does not name" in text


def test_format_2_shards_pass_and_read_as_they_were_written(tmp_path):
    from pseudolabel.storage.shards import open_shards

    folder = REPO / "tests" / "fixtures" / "shards_v2"    # written by the format-2 writer: no renderings or NXdata
    assert check_shards(folder, require_manifest=False) == []
    shards = open_shards(folder)
    assert sorted(shards) == ["a", "sub/x"] and shards.attrs["class_set"].name == "voc"
    record = shards["a"]
    assert record.size == (37, 53) and record.class_ids == (3, 15) and record.class_stats.prompts == (7, 3)
    assert np.array_equal(shards.read_label("a"), record.refined) and record.refined[0, :5].tolist() == [255] * 5
    assert np.array_equal(shards.read_label("sub/x", "initial"), shards["sub/x"].initial)
