"""One EXIF convention through every tool: a photo is labelled, exported, scored and trained on as a viewer shows it
(orientation applied), never as its pixels are stored.

Each photo is a JPEG whose stored pixels, turned as its EXIF orientation says, give the picture; its twin is a PNG of
that picture's decoded pixels with no EXIF. Stage one must label the two alike, the export must write the picture's
shape, the viewer must show the picture, the evaluator must score the photo against the twin's labels as GT with no error, and stage two must load the
photo in the same orientation as its shard label.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pseudolabel.classes import get_class_set
from pseudolabel.storage.shards import open_shards
from tests.fixtures.tiny_models import REPO

VOC = get_class_set("voc")
TINY = ["--clip-model", "ViT-T-16-cep-test-quickgelu", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu"]
ORIENTATION_TAG = 274
# The stored pixels of a picture for each EXIF orientation, from the EXIF specification's meaning of the tag (3: the
# stored image is upside down; 6: it must turn 90 degrees clockwise to be upright; 8: 90 degrees counter-clockwise),
# written with numpy rather than PIL, which the code under test uses.
STORED = {3: lambda picture: np.rot90(picture, 2), 6: lambda picture: np.rot90(picture, 1),
          8: lambda picture: np.rot90(picture, -1)}
UPRIGHT = {3: lambda stored: np.rot90(stored, 2), 6: lambda stored: np.rot90(stored, -1),
           8: lambda stored: np.rot90(stored, 1)}
SHAPES = {"square": (48, 48), "wide": (40, 64)}    # (height, width) of the picture as a viewer shows it


def picture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A picture whose quadrants differ, so any turn of it is visible: smooth colour ramps plus a bright block."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows * 255 // height, cols * 255 // width, (rows + cols) * 127 // (height + width)], -1)
    image[: height // 3, : width // 4] = (250, 240, 30 + seed * 40)
    return image.astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """``images/`` with ``o<N>_<shape>.jpg`` (EXIF orientation N) and ``o<N>_<shape>_twin.png``; tags; the
    pictures as decoded upright (what a viewer shows)."""
    root = tmp_path_factory.mktemp("exif")
    images = root / "images"
    images.mkdir()
    upright, tags = {}, {}
    for seed, orientation in enumerate(STORED):
        for shape_name, shape in SHAPES.items():
            image_id = f"o{orientation}_{shape_name}"
            exif = Image.Exif()
            exif[ORIENTATION_TAG] = orientation
            stored = np.ascontiguousarray(STORED[orientation](picture(shape, seed)))
            Image.fromarray(stored).save(images / f"{image_id}.jpg", quality=95, exif=exif)
            with Image.open(images / f"{image_id}.jpg") as jpeg:     # the decoded pixels, as stored
                decoded = np.asarray(jpeg.convert("RGB"))
            upright[image_id] = np.ascontiguousarray(UPRIGHT[orientation](decoded))
            assert upright[image_id].shape[:2] == shape
            Image.fromarray(upright[image_id]).save(images / f"{image_id}_twin.png")
            tags[image_id] = tags[f"{image_id}_twin"] = ["cat", "dog"] if seed % 2 else ["person"]
    labels = root / "tags.json"
    labels.write_text(json.dumps(tags))
    classes = root / "classes.txt"
    classes.write_text("\n".join(VOC.classes[1:]) + "\n")
    return {"root": root, "images": images, "labels": labels, "classes": classes, "upright": upright}


@pytest.fixture(scope="module")
def shards(photos):
    from pseudolabel.generate import run

    out = photos["root"] / "shards"
    run(["custom", "--images", str(photos["images"]), "--labels", str(photos["labels"]), "--classes",
         str(photos["classes"]), "--out", str(out), "--batch-size", "1", *TINY])
    return out


def test_stage_one_labels_a_photo_as_its_upright_twin(photos, shards):
    stored = open_shards(shards)
    for image_id, upright in photos["upright"].items():
        photo, twin = stored[image_id], stored[f"{image_id}_twin"]
        assert photo.size == twin.size == upright.shape[:2]
        np.testing.assert_array_equal(photo.refined, twin.refined)
        np.testing.assert_array_equal(photo.initial, twin.initial)
        np.testing.assert_array_equal(photo.loc_maps_lowres, twin.loc_maps_lowres)
    # the maps depend on how the picture is turned, so a label of the stored pixels could not have matched
    square = stored["o6_square"]
    turned = stored["o3_square_twin"]
    assert not np.array_equal(square.loc_maps_lowres, np.rot90(square.loc_maps_lowres, 1, axes=(1, 2)))
    assert turned.loc_maps_lowres.shape[1:] == square.loc_maps_lowres.shape[1:]


def test_the_export_has_the_upright_shape_and_labels(photos, shards, tmp_path):
    from pseudolabel.storage.export import ExportConfig, export_labels

    export_labels(shards, tmp_path, ExportConfig(layout="flat", png_mode="index"))
    stored = open_shards(shards)
    for image_id, upright in photos["upright"].items():
        with Image.open(tmp_path / f"{image_id}.png") as png:
            labels = np.asarray(png)
        with Image.open(photos["images"] / f"{image_id}.jpg") as jpeg:   # the size an EXIF-aware viewer shows
            shown = jpeg.size if jpeg.getexif().get(ORIENTATION_TAG) == 3 else jpeg.size[::-1]
        assert labels.shape == upright.shape[:2] == shown[::-1]
        np.testing.assert_array_equal(labels, stored[image_id].refined)


def test_the_viewer_shows_the_upright_photo_beside_its_label(photos, shards):
    from pseudolabel.viewer.photos import PhotoFinder

    stored = open_shards(shards)
    finder = PhotoFinder(stored.attrs, None, None)     # the image folder recorded in the shards
    for image_id, upright in photos["upright"].items():
        shown = finder.read(image_id)
        assert shown.shape[:2] == stored[image_id].size
        np.testing.assert_array_equal(shown, upright)


def test_the_evaluator_scores_a_photo_against_gt_drawn_on_the_upright_picture(photos, shards, tmp_path):
    from pseudolabel.evaluation.cli import main as evaluate

    stored = open_shards(shards)
    gt = tmp_path / "gt"
    gt.mkdir()
    for image_id in photos["upright"]:
        Image.fromarray(stored[f"{image_id}_twin"].refined).save(gt / f"{image_id}.png")
    report = tmp_path / "report.json"
    assert evaluate(["--gt", str(gt), "--pred", str(shards), "--num-classes", str(len(VOC.classes)),
                     "--bootstrap", "0", "--workers", "1", "--quiet", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["num_images"] == len(photos["upright"])
    assert result["mIoU"] == pytest.approx(100.0)


def test_stage_two_loads_each_photo_in_the_orientation_of_its_label(photos, shards):
    """The configs' own loading steps (mmseg's LoadImageFromFile, the shard label), then a training run on the
    photos: a photo loaded as stored would not fit its label (the wide ones) or show another picture (the square)."""
    from mmengine.config import Config
    from mmseg.utils import register_all_modules

    from segtrain.datasets import ShardPseudoLabelDataset

    register_all_modules(init_default_scope=True)
    pipeline = Config.fromfile(str(REPO / "segtrain/configs/deeplabv3plus_r101-d8_4xb4-20k_voc12aug-pseudo-512x512.py"))
    loading = [step for step in pipeline.train_pipeline if step["type"] in ("LoadImageFromFile", "LoadShardLabel")]
    assert len(loading) == 2
    dataset = ShardPseudoLabelDataset(shards_dir=str(shards), data_root=str(photos["root"]),
                                      data_prefix=dict(img_path="images"), img_suffix=".jpg",
                                      pipeline=[*loading, dict(type="PackSegInputs")])
    checked = 0
    for index in range(len(dataset)):
        sample = dataset[index]["data_samples"]
        image_id = Path(sample.img_path).stem
        if image_id not in photos["upright"]:
            continue
        loaded = dataset[index]["inputs"].permute(1, 2, 0).numpy()[..., ::-1]     # BGR -> RGB
        upright = photos["upright"][image_id].astype(np.int16)
        assert loaded.shape == upright.shape and sample.gt_sem_seg.data.shape[1:] == upright.shape[:2]
        # cv2 and PIL decode a JPEG alike up to IDCT rounding; the same picture turned differs by far more
        assert np.abs(loaded.astype(np.int16) - upright).mean() < 3
        if upright.shape[0] == upright.shape[1]:
            assert np.abs(np.rot90(loaded).astype(np.int16) - upright).mean() > 20
        checked += 1
    assert checked == len(photos["upright"])


def test_a_training_step_on_the_photos_runs(photos, shards, tmp_path):
    from segtrain import train as seg_train

    config = tmp_path / "exif_photos.py"
    config.write_text(f"""
_base_ = ['{REPO / 'segtrain/configs/deeplabv3plus_r18-d8_1xb2-20iter_demo-pseudo-64x64.py'}']
train_dataloader = dict(dataset=dict(data_root='{photos["root"]}', shards_dir='{shards}'))
""")
    work = tmp_path / "work"
    assert seg_train.main([str(config), "--work-dir", str(work), "--no-pretrained", "--cfg-options",
                           "train_cfg.max_iters=2", "default_hooks.checkpoint.interval=2",
                           "default_hooks.logger.interval=1"]) == 0
    assert (work / "iter_2.pth").is_file()
