"""Source detection and reading: PNG folders, dataset specs and shard directories (with small fakes of the
``pseudolabel.datasets`` / ``pseudolabel.storage.shards`` APIs from docs/design.md)."""
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pseudolabel.classes import get_class_set
from pseudolabel.evaluation import EvaluationConfig, evaluate
from pseudolabel.evaluation.sources import (
    DatasetSource,
    LabelSourceError,
    PngFolderSource,
    ShardSource,
    open_source,
)

GT = {"a": np.array([[0, 1], [1, 255]], np.uint8), "b": np.array([[2, 2], [0, 0]], np.uint8)}
REFINED = {"a": np.array([[0, 1], [1, 1]], np.uint8), "b": np.array([[2, 2], [0, 0]], np.uint8)}
INITIAL = {"a": np.zeros((2, 2), np.uint8), "b": np.zeros((2, 2), np.uint8)}


class FakeDataset:
    class_set = get_class_set("voc")

    def __init__(self, root, split):
        self.root, self.split = root, split

    def ids(self):
        return sorted(GT)

    def by_id(self, image_id):
        return SimpleNamespace(gt_path=Path(f"/data/{image_id}.png"))

    def read_gt(self, image_id):
        return GT[image_id]


@pytest.fixture
def fake_modules(monkeypatch):
    import pseudolabel.storage.export  # noqa: F401  (the PNG source reads export records: imported before the fakes)

    datasets = types.ModuleType("pseudolabel.datasets")
    datasets.build_dataset = lambda name, root, split: FakeDataset(root, split)
    shards = types.ModuleType("pseudolabel.storage.shards")

    class FakeShardSet(dict):
        attrs = {"dataset": "voc", "split": "train", "class_set": get_class_set("voc")}

    shards.open_shards = lambda directory: FakeShardSet(
        {i: SimpleNamespace(refined=REFINED[i], initial=INITIAL[i]) for i in REFINED})
    monkeypatch.setitem(sys.modules, "pseudolabel.datasets", datasets)
    monkeypatch.setitem(sys.modules, "pseudolabel.storage.shards", shards)


def test_detection(tmp_path, fake_modules):
    (tmp_path / "pngs").mkdir()
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "shard-r000-00000.h5").touch()
    assert isinstance(open_source(tmp_path / "pngs"), PngFolderSource)
    assert isinstance(open_source(str(tmp_path / "shards"), "initial"), ShardSource)
    dataset = open_source("voc:train", data_root="/data/voc")
    assert isinstance(dataset, DatasetSource) and dataset.dataset.root == "/data/voc" and dataset.num_classes == 21
    with pytest.raises(LabelSourceError, match="voc:val"):
        open_source(tmp_path / "does-not-exist")


def test_png_folder_ids_are_nested_paths_and_rgb_is_rejected(tmp_path):
    (tmp_path / "x" / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "x" / "sub" / "im1.png")
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "x" / "rgb.png")
    source = PngFolderSource(tmp_path / "x")
    assert source.ids() == ["rgb", "sub/im1"] and source.read("sub/im1").shape == (3, 3)
    with pytest.raises(LabelSourceError, match="rgb.png: .*got mode RGB"):
        source.read("rgb")


def test_dataset_gt_against_shards_refined_and_initial(tmp_path, fake_modules):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "shard-r000-00000.h5").touch()
    config = EvaluationConfig(workers=1, bootstrap=0, boundary_kernel=1)
    refined = evaluate("voc:train", tmp_path / "shards", config=config, progress=False)
    assert refined.split == "voc:train" and len(refined.class_names) == 21 and refined.num_images == 2
    assert refined.systems[0].miou == 100.0  # the only disagreement is on a GT-ignore pixel
    initial = evaluate("voc:train", tmp_path / "shards", config=config, pred_kind="initial", progress=False)
    assert initial.systems[0].miou < 100.0
