"""A shard folder whose shards were made with different settings: every reader refuses it, naming the setting and
the files, and the checker reports it and a config.json that contradicts the shards."""
import json

import pytest

from pseudolabel.storage.check import run_check
from pseudolabel.storage.shards import ShardError, ShardWriter, open_shards, shard_image_ids
from tests.fixtures.outputs import one_error_line
from tests.fixtures.viewer_shards import ATTRS, VOC, load_tool, make_voc_run

OTHER_SEED = dict(ATTRS, config=dict(ATTRS["config"], seed=1))
DIFFERENCE = "config.seed: 0 -> 1"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """(VOC root, shard folder): shard-r000-00000.h5 made with seed 0, shard-r000-00001.h5 with seed 1."""
    root, shard_dir, _ = make_voc_run(tmp_path_factory.mktemp("mixed"))
    second = shard_dir / "shard-r000-00001.h5"
    shards = open_shards(shard_dir)
    records = [shards[image_id] for image_id in shard_image_ids(second)]
    shards.close()
    with ShardWriter(second, VOC, OTHER_SEED) as writer:
        for record in records:
            writer.write(record)
    return root, shard_dir


def assert_names_the_mix(line: str) -> None:
    assert "seed: 0 -> 1" in line and "shard-r000-00000.h5" in line and "shard-r000-00001.h5" in line, line
    assert "--overwrite" in line, line


def test_opening_a_mixed_folder_names_the_setting_and_the_files(mixed):
    with pytest.raises(ShardError) as refused:
        open_shards(mixed[1], verify=False)
    assert_names_the_mix(str(refused.value))


@pytest.mark.parametrize("tool, argv", [
    ("evaluate", ["--gt", "voc:train", "--pred", "{shards}", "--data-root", "{root}", "--num-classes", "21",
                  "--bootstrap", "0", "--workers", "1", "--quiet"]),
    ("export_labels", ["{shards}", "--out", "{out}", "--quiet"]),
    ("view_labels", ["{shards}", "--out", "{out}", "--data-root", "{root}"]),
])
def test_every_reader_refuses_a_mixed_folder(mixed, tmp_path, capsys, tool, argv):
    root, shard_dir = mixed
    argv = [a.format(shards=shard_dir, root=root, out=tmp_path / "out") for a in argv]
    assert load_tool(tool).main(argv) == 2
    assert_names_the_mix(one_error_line(capsys.readouterr().err))
    assert not (tmp_path / "out").exists()


def test_check_shards_names_the_setting_the_shards_disagree_on(mixed):
    problems = run_check(mixed[1]).problems
    assert any("shard-r000-00001.h5" in p and "shard-r000-00000.h5" in p and DIFFERENCE in p for p in problems), \
        problems


def recorded_config(attrs: dict) -> dict:
    """config.json as stage one writes it for shards of ``attrs``: the configuration, the weights and the classes."""
    return {**attrs["config"], "weights": attrs["weights"], "class_set": VOC.to_json()}


def test_check_shards_fails_a_config_json_that_contradicts_its_shards(tmp_path):
    _, shard_dir, _ = make_voc_run(tmp_path)
    (shard_dir / "config.json").write_text(json.dumps(recorded_config(ATTRS)))
    assert run_check(shard_dir).ok
    (shard_dir / "config.json").write_text(json.dumps(recorded_config(OTHER_SEED)))
    result = run_check(shard_dir)
    assert not result.ok and result.summary().endswith("FAILED")
    assert any(p.startswith("config.json contradicts") and "2 shard(s)" in p and "seed: 0 -> 1" in p
               and "shard-r000-00000.h5, shard-r000-00001.h5" in p for p in result.problems), result.problems
    check = load_tool("check_shards")
    assert check.main([str(shard_dir)]) == 1
