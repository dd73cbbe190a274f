"""Stage two: the shard-backed mmseg dataset, config checks, CRF, and train -> resume -> TTA/CRF test end to end."""
from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmseg.utils import register_all_modules
from PIL import Image

import segtrain
from pseudolabel.classes import ClassSet, get_class_set
from pseudolabel.image_io import read_label_png
from pseudolabel.storage.shards import LabelRecord, ShardWriter, open_shards
from segtrain import pretrained
from segtrain.config import RENAMED_KEY, read_config
from segtrain.crf import dense_crf
from segtrain.datasets import ShardMismatchError, ShardPseudoLabelDataset
from tests.fixtures.file_server import serving
from tests.fixtures.outputs import one_error_line
from tests.fixtures.tiny_datasets import make_coco, make_voc

REPO = Path(__file__).resolve().parents[1]
VOC = get_class_set("voc")


def write_shards(out: Path, voc_root: Path, ids: list[str], random_weights=False, failures=(), dataset="voc",
                 class_set=VOC, config=None, name="shard-r000-00000.h5") -> Path:
    """Shards whose refined labels are the images' GT masks (so a test can tell which image a label belongs to)."""
    out.mkdir(parents=True, exist_ok=True)
    attrs = {"dataset": dataset, "split": "train", "config": config or {}, "versions": {}, "weights": {},
             "random_weights": random_weights, "rank": 0}
    with ShardWriter(out / name, class_set, attrs) as writer:
        for image_id in ids:
            labels = read_label_png(voc_root / "SegmentationClass" / f"{image_id}.png")
            classes = tuple(int(c) for c in np.unique(labels) if 0 < c < 255)
            writer.write(LabelRecord(image_id=image_id, refined=labels, initial=np.zeros_like(labels),
                                     loc_maps_lowres=np.zeros((0, 2, 2), np.float32), loc_class_ids=(),
                                     class_ids=classes, size=labels.shape))
    (out / "manifest.json").write_text(json.dumps({"failures": list(failures)}))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    register_all_modules(init_default_scope=True)   # outside a Runner, build transforms from mmseg's registries
    root = tmp_path_factory.mktemp("segtrain")
    voc = make_voc(root, n_train=4, n_val=2, size=(48, 64))
    ids = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    return {"root": root, "voc": voc, "ids": ids, "shards": write_shards(root / "shards", voc, ids)}


def shard_dataset(tiny, shards=None, **kwargs):
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadShardLabel"), dict(type="PackSegInputs")]
    return ShardPseudoLabelDataset(shards_dir=str(shards or tiny["shards"]), data_root=str(tiny["voc"]),
                                   data_prefix=dict(img_path="JPEGImages"), pipeline=pipeline, **kwargs)


@pytest.mark.parametrize("workers", [0, 2])
def test_dataset_returns_the_shard_label_of_each_image(tiny, workers):
    dataset = shard_dataset(tiny, num_classes=21, expected_dataset="voc")
    assert dataset.metainfo["classes"] == VOC.classes and len(dataset) == len(tiny["ids"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=pseudo_collate)
    shards = open_shards(tiny["shards"])
    seen = []
    for batch in loader:
        for sample in batch["data_samples"]:
            image_id = Path(sample.img_path).stem
            np.testing.assert_array_equal(sample.gt_sem_seg.data[0].numpy(), shards[image_id].refined)
            seen.append(image_id)
    assert sorted(seen) == sorted(tiny["ids"])
    # the labels differ between images, so a shifted lookup would have failed above
    assert len({shards[i].refined.tobytes() for i in tiny["ids"]}) == len(tiny["ids"])


def test_mismatched_shards_fail_before_training(tiny, tmp_path):
    with pytest.raises(ShardMismatchError, match="num_classes=81"):
        shard_dataset(tiny, num_classes=81)
    with pytest.raises(ShardMismatchError, match="dataset 'voc' but the config expects 'coco'"):
        shard_dataset(tiny, expected_dataset="coco")
    with pytest.raises(ShardMismatchError, match="class names"):
        segtrain.check_shards(open_shards(tiny["shards"]), class_names=get_class_set("coco").classes)
    extra = write_shards(tmp_path / "extra", tiny["voc"], tiny["ids"] + ["2008_000000"])
    (tiny["voc"] / "JPEGImages" / "2008_000000.jpg").rename(tmp_path / "moved.jpg")
    try:
        with pytest.raises(ShardMismatchError, match="1 of 5 image.*missing from"):
            shard_dataset(tiny, shards=extra)
    finally:
        (tmp_path / "moved.jpg").rename(tiny["voc"] / "JPEGImages" / "2008_000000.jpg")


def test_reordered_class_names_are_refused_without_a_validation_set(tiny, tmp_path):
    """21 classes, two names swapped: the count matches, so only comparing the names catches it (the demo config has
    no validation set, so the names come from the training dataset's ``class_set``)."""
    from mmengine.config import Config

    from segtrain.train import preflight

    names = list(VOC.classes[1:])
    names[0], names[1] = names[1], names[0]  # aeroplane <-> bicycle
    (tmp_path / "swapped.txt").write_text("\n".join(names) + "\n")
    swapped = write_shards(tmp_path / "swapped", tiny["voc"], tiny["ids"],
                           class_set=ClassSet.from_file(tmp_path / "swapped.txt"))
    config = tmp_path / "cfg.py"
    config.write_text(f"""
_base_ = ['{REPO / 'segtrain/configs/deeplabv3plus_r18-d8_1xb2-20iter_demo-pseudo-64x64.py'}']
train_dataloader = dict(dataset=dict(data_root='{tiny['voc']}', data_prefix=dict(img_path='JPEGImages'),
                                     shards_dir='{swapped}'))
""")
    cfg = Config.fromfile(config)
    assert cfg.val_dataloader is None
    with pytest.raises(ShardMismatchError, match=r"first difference: \[\('bicycle', 'aeroplane'\)\]"):
        preflight(cfg)
    with pytest.raises(ShardMismatchError, match="class names"):
        shard_dataset(tiny, shards=swapped, class_set="voc")
    assert preflight(Config.fromfile(tiny_voc_config(tiny, tmp_path / "ok.py", tiny["shards"])))["dataset"] == "voc"


def test_missing_validation_gt_fails_before_training(tiny, tmp_path):
    from mmengine.config import Config

    from segtrain.train import preflight

    cfg = Config.fromfile(tiny_voc_config(tiny, tmp_path / "cfg.py", tiny["shards"]))
    assert preflight(cfg)["dataset"] == "voc"
    gt = tiny["voc"] / "SegmentationClass"
    val_id = (tiny["voc"] / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    (gt / f"{val_id}.png").rename(tmp_path / "moved.png")
    try:
        with pytest.raises(FileNotFoundError, match=r"1 of 2 validation images have no GT mask.*render_coco_gt"):
            preflight(cfg)
    finally:
        (tmp_path / "moved.png").rename(gt / f"{val_id}.png")
    cfg.val_dataloader.dataset.ann_file = "ImageSets/Segmentation/absent.txt"
    with pytest.raises(FileNotFoundError, match=r"validation image list .*absent\.txt does not exist.*val_dataloader=None"):
        preflight(cfg)


def test_coco_config_validates_on_the_rendered_gt(tmp_path):
    from mmengine.config import Config

    from segtrain.train import check_validation_gt
    from tools.render_coco_gt import main as render

    register_all_modules(init_default_scope=True)
    root = make_coco(tmp_path / "coco", n_images=3, n_unannotated=1)
    cfg = Config.fromfile(REPO / "segtrain/configs/deeplabv3plus_r101-d8_4xb4-20k_coco14-pseudo-512x512.py")
    cfg.val_dataloader.dataset.data_root = str(root)
    with pytest.raises(FileNotFoundError, match=r"val2014\.txt does not exist.*render_coco_gt"):
        check_validation_gt(cfg)
    assert render(["--data-root", str(root)]) == 0
    check_validation_gt(cfg)  # the 3 annotated images, each with its GT


CONFIGS = REPO / "segtrain" / "configs"
# mmsegmentation's scheme: {algorithm}_{backbone}_{gpus}xb{batch}-{schedule}_{dataset}-{crop}.py
MMSEG_NAME = re.compile(r"^[a-z0-9]+_[a-z0-9-]+_\d+xb\d+-\d+(k|iter)_[a-z0-9]+(-[a-z0-9]+)*-\d+x\d+\.py$")
OLD_NAMES = ("deeplabv3plus_r101_voc_pseudo.py", "deeplabv3plus_r101_coco_pseudo.py", "demo_tiny.py")


def test_config_names_follow_mmseg_s_scheme():
    names = sorted(p.name for p in CONFIGS.glob("*.py"))
    assert [n for n in names if not MMSEG_NAME.match(n)] == sorted(OLD_NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for name in names:
            if name not in OLD_NAMES:
                read_config(CONFIGS / name)      # no rename warning


@pytest.mark.parametrize("old", OLD_NAMES)
def test_old_config_names_still_work_and_warn(old):
    with pytest.warns(FutureWarning, match="renamed to segtrain/configs/.*removed in the next"):
        alias = read_config(CONFIGS / old)
    assert MMSEG_NAME.match(alias[RENAMED_KEY])
    settings = alias.to_dict()
    settings.pop(RENAMED_KEY)
    assert settings == read_config(CONFIGS / alias[RENAMED_KEY]).to_dict()


def test_failures_and_random_weights_are_warned_about(tiny, tmp_path):
    failures = [{"image_id": "x", "path": "x.jpg", "reason": "unreadable"}] * 3
    shards = write_shards(tmp_path / "s", tiny["voc"], tiny["ids"], random_weights=True, failures=failures)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shard_dataset(tiny, shards=shards)
    messages = " ".join(str(w.message) for w in caught)
    assert "3 failed image(s)" in messages and "RANDOM model weights" in messages


def test_crf_aligns_a_noisy_prediction_to_the_image_edge():
    image = np.full((48, 64, 3), 40, np.uint8)
    image[:, 32:] = 210
    truth = np.zeros((48, 64), int)
    truth[:, 32:] = 1
    rng = np.random.default_rng(0)
    foreground = np.where(np.arange(64) >= 28, 0.7, 0.3)[None].repeat(48, 0) + rng.uniform(-0.25, 0.25, (48, 64))
    foreground = np.clip(foreground, 0.02, 0.98)
    probs = np.stack([1 - foreground, foreground]).astype(np.float32)
    refined = dense_crf(image, probs)
    assert refined.shape == probs.shape and np.allclose(refined.sum(0), 1, atol=1e-4)
    before, after = (probs.argmax(0) == truth).mean(), (refined.argmax(0) == truth).mean()
    assert before < 0.9 and after > 0.97


def test_offline_pretrained_download_fails_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("urllib.request.urlopen", offline)
    model = dict(pretrained="open-mmlab://resnet101_v1c", backbone=dict())
    with pytest.raises(pretrained.PretrainedUnavailableError, match="--no-pretrained") as error:
        pretrained.ensure_pretrained(model)
    assert "resnet101_v1c-e67eebb6.pth" in str(error.value)
    (tmp_path / "hub" / "checkpoints" / "resnet101_v1c-e67eebb6.pth").write_bytes(b"cached")
    assert pretrained.ensure_pretrained(model)[0].name == "resnet101_v1c-e67eebb6.pth"
    pretrained.drop_pretrained(model)
    assert pretrained.ensure_pretrained(model) == []


def test_pretrained_download_checks_the_hash_in_the_file_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = b"backbone weights"
    good = f"backbone-{hashlib.sha256(weights).hexdigest()[:8]}.pth"
    with serving({good: weights, "other-0123abcd.pth": weights}) as base:
        with pytest.raises(pretrained.PretrainedUnavailableError, match="checksum mismatch.*--no-pretrained"):
            pretrained.ensure_pretrained(dict(pretrained=base + "other-0123abcd.pth"))
        assert pretrained.ensure_pretrained(dict(pretrained=base + good))[0].read_bytes() == weights
    assert sorted(p.name for p in (tmp_path / "hub" / "checkpoints").iterdir()) == [good]


def tiny_voc_config(tiny, path: Path, shards: Path) -> Path:
    """The demo config retargeted to the tiny VOC layout, validated and tested on its GT (as a user's config would be)."""
    path.write_text(f"""
_base_ = ['{REPO / 'segtrain/configs/deeplabv3plus_r18-d8_1xb2-20iter_demo-pseudo-64x64.py'}']
data_root = '{tiny['voc']}'
train_dataloader = dict(dataset=dict(data_root=data_root, data_prefix=dict(img_path='JPEGImages'),
                                     shards_dir='{shards}', expected_dataset='voc'))
gt_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 64), keep_ratio=True),
               dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
val_dataloader = dict(_delete_=True, batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='PascalVOCDataset', data_root=data_root, pipeline=gt_pipeline,
                                   ann_file='ImageSets/Segmentation/val.txt',
                                   data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass')))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='IoUMetric', iou_metrics=['mIoU'])
val_cfg = dict(_delete_=True, type='ValLoop')
eval_gt = 'voc:val'
eval_data_root = data_root
""")
    return path


def test_train_resume_and_test_with_tta_and_crf(tiny, tmp_path):
    """Stage one (tiny random-weight models) -> train -> resume -> test with TTA + CRF -> evaluation report."""
    from pseudolabel.generate import run as stage_one
    from segtrain import test as seg_test
    from segtrain import train as seg_train

    shards = tmp_path / "stage_one"
    stage_one(["voc", "--data-root", str(tiny["voc"]), "--split", "train", "--out", str(shards), "--device", "cpu",
               "--clip-model", "ViT-T-16-cep-test-quickgelu", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
               "--sam-checkpoint", "random"])
    config = tiny_voc_config(tiny, tmp_path / "tiny_voc.py", shards)
    work = tmp_path / "work"
    common = [str(config), "--work-dir", str(work), "--no-pretrained"]
    options = ["train_cfg.val_interval=2", "default_hooks.checkpoint.interval=2", "default_hooks.logger.interval=1"]
    assert seg_train.main(common + ["--cfg-options", "train_cfg.max_iters=2", *options]) == 0
    assert (work / "iter_2.pth").is_file() and (work / "tiny_voc.py").is_file()
    assert json.loads((work / "versions.json").read_text())["packages"]["mmsegmentation"] == "1.2.2"

    assert seg_train.main(common + ["--resume", "--cfg-options", "train_cfg.max_iters=3", *options]) == 0
    assert torch.load(work / "iter_3.pth", weights_only=False)["meta"]["iter"] == 3
    logs = sorted(work.glob("*/*.log"))
    resumed = logs[-1].read_text()
    assert "resumed" in resumed.lower() and "Iter(train) [3/3]" in resumed and "Iter(train) [1/3]" not in resumed

    out = tmp_path / "test"
    args = [str(work / "iter_3.pth"), "--tta", "--scales", "1.0", "0.75", "--crf", "--out", str(out),
            "--bootstrap", "0"]
    assert seg_test.main(args) == 0
    val_ids = (tiny["voc"] / "ImageSets/Segmentation/val.txt").read_text().split()
    for image_id in val_ids:
        with Image.open(out / "pred" / f"{image_id}.png") as png:
            assert png.mode == "P" and png.size == (64, 48)
            assert np.array(png).max() < 21
    report = json.loads((out / "evaluation.json").read_text())
    assert report["num_images"] == len(val_ids) and 0 <= report["mIoU"] <= 100
    settings = json.loads((out / "test_settings.json").read_text())
    assert settings["scales"] == [1.0, 0.75] and settings["crf"]["iterations"] == 10


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def test_test_seg_refuses_a_crafted_checkpoint_and_one_that_does_not_fit(tiny, tmp_path, capsys):
    from segtrain import test as seg_test

    config = tiny_voc_config(tiny, tmp_path / "tiny_voc.py", tiny["shards"])
    marker, crafted, foreign = tmp_path / "marker", tmp_path / "crafted.pth", tmp_path / "foreign.pth"
    torch.save({"state_dict": {"backbone.stem.0.weight": torch.zeros(1)}, "meta": _Payload(marker)}, crafted)
    torch.save({"state_dict": {"decode_head.conv_seg.weight": torch.zeros(21, 8, 1, 1),
                               "some.other.model": torch.zeros(3)}}, foreign)
    common = ["--config", str(config), "--out", str(tmp_path / "test"), "--bootstrap", "0"]
    assert seg_test.main([str(crafted), *common]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "refused to load checkpoint" in line and "builtins.exec" in line and not marker.exists()

    assert seg_test.main([str(foreign), *common]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "does not fit the model" in line and " missing (auxiliary_head." in line and " more)" in line
    assert "1 unexpected (some.other.model)" in line and "of another shape (decode_head.conv_seg.weight)" in line


def test_resume_from_a_checkpoint_of_another_model_is_refused(tiny, tmp_path, capsys):
    from segtrain import train as seg_train

    config = tiny_voc_config(tiny, tmp_path / "tiny_voc.py", tiny["shards"])
    work = tmp_path / "work"
    work.mkdir()
    torch.save({"state_dict": {"x": torch.zeros(1)}, "meta": {"iter": 2}}, work / "iter_2.pth")
    (work / "last_checkpoint").write_text(str(work / "iter_2.pth"))
    assert seg_train.main([str(config), "--work-dir", str(work), "--no-pretrained", "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--resume checkpoint" in line and "iter_2.pth" in line and "1 unexpected (x)" in line


def test_training_on_damaged_shards_stops_before_the_runner(tiny, tmp_path, capsys):
    import shutil

    from segtrain import train as seg_train

    shards = shutil.copytree(tiny["shards"], tmp_path / "shards")
    shard = shards / "shard-r000-00000.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10   # one flipped bit inside the file
    shard.write_bytes(bytes(data))
    config = tiny_voc_config(tiny, tmp_path / "tiny_voc.py", shards)
    assert seg_train.main([str(config), "--work-dir", str(tmp_path / "work"), "--no-pretrained"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(shard) in line and "tools/check_shards.py" in line and "damaged" in line
    assert not list((tmp_path / "work").glob("*.pth"))


def test_training_on_shards_of_mixed_settings_stops_before_the_runner(tiny, tmp_path, capsys):
    from segtrain import train as seg_train

    shards = write_shards(tmp_path / "shards", tiny["voc"], tiny["ids"][:2], config={"cam": {"tau": 0.4}})
    write_shards(shards, tiny["voc"], tiny["ids"][2:], config={"cam": {"tau": 0.6}}, name="shard-r000-00001.h5")
    config = tiny_voc_config(tiny, tmp_path / "tiny_voc.py", shards)
    assert seg_train.main([str(config), "--work-dir", str(tmp_path / "work"), "--no-pretrained"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "cam.tau: 0.4 -> 0.6" in line and "shard-r000-00000.h5 -> shard-r000-00001.h5" in line, line
    assert not list((tmp_path / "work").glob("*.pth"))


def test_one_training_per_work_dir(tiny, tmp_path, capsys):
    from pseudolabel.storage.lock import OutputLock
    from segtrain import train as seg_train

    config = tiny_voc_config(tiny, tmp_path / "tiny_voc.py", tiny["shards"])
    work = tmp_path / "work"
    with OutputLock(work, what="--work-dir"):   # another training holds it
        assert seg_train.main([str(config), "--work-dir", str(work), "--no-pretrained"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"'{work}' is in use by another run" in line and f"PID {os.getpid()}" in line and "--work-dir" in line
