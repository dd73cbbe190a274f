"""Dataset readers on tiny VOC / COCO / custom layouts, including every bad-input case."""
import json
import os
import subprocess
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pseudolabel.classes import pascal_palette
from pseudolabel.datasets import Sample, build_dataset
from pseudolabel.image_io import write_label_png
from tests.fixtures.tiny_datasets import coco_expected_mask, make_coco, make_custom, make_voc

TRAIN_IDS = [f"2007_{i:06d}" for i in range(4)]
AUG_ONLY_IDS = ["2009_000000", "2009_000001"]


@pytest.fixture()
def voc(tmp_path):
    return make_voc(tmp_path, n_train=4, n_val=3, with_aug=True)


def _no_warnings(build, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build(*args, **kwargs)


# ---------------------------------------------------------------- VOC
def test_voc_splits_ids_and_sequence_protocol(voc):
    train = _no_warnings(build_dataset, "voc", voc, "train")
    assert train.ids() == TRAIN_IDS and len(train) == 4 and [s.image_id for s in train] == TRAIN_IDS
    assert isinstance(train[0], Sample) and train.by_id("2007_000002") == train[2]
    assert (train.name, train.split, train.root, train.class_set.num_classes) == ("voc", "train", voc, 21)
    assert build_dataset("voc", voc, "val").ids() == [f"2008_{i:06d}" for i in range(3)]
    train_aug = build_dataset("voc", voc)  # default split
    assert train_aug.split == "train_aug" and train_aug.ids() == TRAIN_IDS + AUG_ONLY_IDS
    with pytest.raises(KeyError, match="2008_000000.*voc:train"):
        train.by_id("2008_000000")


def test_voc_xml_labels_equal_mask_labels_and_gt(voc):
    by_xml = build_dataset("voc", voc, "train_aug")
    by_mask = build_dataset("voc", voc, "train_aug", label_source="mask")
    assert any(len(s.class_ids) == 2 for s in by_xml)  # so the difficult (last) object is counted too
    for a, b in zip(by_xml, by_mask, strict=True):
        assert a.class_ids == b.class_ids and a.class_ids == tuple(sorted(a.class_ids)) and 0 not in a.class_ids
        assert set(np.unique(by_xml.read_gt(a.image_id)).tolist()) - {0, 255} == set(a.class_ids)
        assert all(isinstance(c, int) for c in a.class_ids)


def test_voc_gt_prefers_segmentation_class_then_aug_then_none(voc):
    data = build_dataset("voc", voc, "train_aug")
    assert data.by_id("2007_000000").gt_path == voc / "SegmentationClass" / "2007_000000.png"
    assert data.by_id("2009_000001").gt_path == voc / "SegmentationClassAug" / "2009_000001.png"
    gt = data.read_gt("2009_000001")
    assert gt.dtype == np.uint8 and gt.shape == (48, 64) and 255 not in gt  # SBD masks have no ignore border
    (voc / "SegmentationClassAug" / "2009_000001.png").unlink()
    data = build_dataset("voc", voc, "train_aug")
    assert data.by_id("2009_000001").gt_path is None and data.read_gt("2009_000001") is None
    with pytest.raises(FileNotFoundError, match="2009_000001.*label_source='xml'"):
        build_dataset("voc", voc, "train_aug", label_source="mask")


def test_voc_reads_deeplab_style_split_lines(voc):
    lines = "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in TRAIN_IDS)
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text(lines)
    assert build_dataset("voc", voc, "train_aug").ids() == TRAIN_IDS


def test_voc_default_root_env_override_and_explicit_root(tmp_path, monkeypatch):
    make_voc(tmp_path / "elsewhere")
    monkeypatch.setenv("CEP_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert build_dataset("voc", None, "train").root == tmp_path / "elsewhere" / "VOCdevkit" / "VOC2012"
    explicit = make_voc(tmp_path / "explicit", n_train=2)
    assert len(build_dataset("voc", explicit, "train")) == 2


def test_voc_missing_root_and_split_files_say_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*prepare_data\.sh voc"):
        build_dataset("voc", tmp_path / "nowhere", "train")
    voc = make_voc(tmp_path)  # no SBD
    with pytest.raises(FileNotFoundError, match=r"train_aug\.txt.*SBD.*prepare_data\.sh voc"):
        build_dataset("voc", voc, "train_aug")
    (voc / "SegmentationClassAug").mkdir()
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug/ is there but its id list is not"):
        build_dataset("voc", voc, "train_aug")
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        build_dataset("voc", voc, "val")
    with pytest.raises(ValueError, match="unknown VOC split 'test'"):
        build_dataset("voc", voc, "test")
    with pytest.raises(ValueError, match="unknown label source 'tags'"):
        build_dataset("voc", voc, "train", label_source="tags")


def test_voc_absent_image_and_empty_labels_become_problems(voc):
    (voc / "JPEGImages" / "2007_000001.jpg").unlink()
    (voc / "Annotations" / "2007_000002.xml").write_text("<annotation></annotation>")
    with pytest.warns(UserWarning, match="2 image"):
        data = build_dataset("voc", voc, "train")
    assert data.ids() == ["2007_000000", "2007_000003"]
    problems = {p["image_id"]: p for p in data.problems}
    assert set(problems) == {"2007_000001", "2007_000002"}
    assert "train.txt but the image is missing" in problems["2007_000001"]["reason"]
    assert problems["2007_000001"]["path"] == str(voc / "JPEGImages" / "2007_000001.jpg")
    assert "no foreground class" in problems["2007_000002"]["reason"]


def test_voc_mask_without_foreground_is_a_problem(voc):
    write_label_png(voc / "SegmentationClass" / "2007_000003.png", np.full((48, 64), 255, np.uint8), pascal_palette())
    with pytest.warns(UserWarning, match="1 image"):
        data = build_dataset("voc", voc, "train", label_source="mask")
    assert [p["image_id"] for p in data.problems] == ["2007_000003"]


def test_voc_unknown_class_in_xml_names_the_file(voc):
    xml = voc / "Annotations" / "2007_000000.xml"
    xml.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(ValueError, match=r"2007_000000\.xml.*unknown class 'unicorn'"):
        build_dataset("voc", voc, "train")
    xml.write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"2007_000000\.xml: unreadable"):
        build_dataset("voc", voc, "train")


# ---------------------------------------------------------------- COCO
def test_coco_label_mapping_keeps_crowd_tags(tmp_path):
    data = _no_warnings(build_dataset, "coco", make_coco(tmp_path, n_images=3), "val")
    assert data.class_set.num_classes == 81 and len(data) == 3
    assert data.ids()[0] == "COCO_val2014_000000000100"
    # category id 1 -> person (1), 90 -> toothbrush (80); image 1 has a bicycle (2) and a crowd of people (1)
    assert [s.class_ids for s in data] == [(1, 80), (1, 2), (3,)]
    assert data[0].image_path == tmp_path / "val2014" / "COCO_val2014_000000000100.jpg"


def test_coco_rendered_masks_match_numpy_reference(tmp_path):
    data = build_dataset("coco", make_coco(tmp_path, n_images=3), "val")
    for index, sample in enumerate(data):
        assert sample.gt_path is None
        gt = data.read_gt(sample.image_id)
        assert gt.dtype == np.uint8 and np.array_equal(gt, coco_expected_mask(index, (40, 56)))
    first, second = data.read_gt(data[0].image_id), data.read_gt(data[1].image_id)
    assert first[12, 12] == 1 and first[3, 3] == 80  # the smaller person painted over the toothbrush
    assert second[15, 25] == 255 and second[5, 5] == 2  # crowd region is ignore


def test_coco_gt_pngs_are_rendered_once_and_listed(tmp_path):
    from tools.render_coco_gt import main as render

    root = make_coco(tmp_path, n_images=3, n_unannotated=1)
    assert render(["--data-root", str(root), "--split", "val"]) == 0
    data = build_dataset("coco", root, "val")
    listed = (root / "SegmentationClass" / "val2014.txt").read_text().split()
    assert listed == data.ids() and len(listed) == 3  # the unannotated image has no GT and is not listed
    for index, sample in enumerate(data):
        assert sample.gt_path is not None  # the reader now takes the PNGs
        with Image.open(sample.gt_path) as png:
            assert png.mode == "P" and np.array_equal(np.array(png), coco_expected_mask(index, (40, 56)))
    assert data.write_gt_pngs()[0] == 0  # resumable: nothing left to render
    assert not list((root / "SegmentationClass").rglob(".*"))  # no partial file left


def test_coco_prefers_voc_style_pngs(tmp_path):
    root = make_coco(tmp_path, n_images=2, png_gt=True)
    data = build_dataset("coco", root, "val")
    png = root / "SegmentationClass" / "val2014" / "COCO_val2014_000000000100.png"
    assert data[0].gt_path == png
    marked = np.full((40, 56), 7, np.uint8)
    write_label_png(png, marked, pascal_palette())
    assert np.array_equal(data.read_gt(data[0].image_id), marked)


def test_coco_unannotated_and_missing_images_are_problems(tmp_path):
    root = make_coco(tmp_path, n_images=3, n_unannotated=1)
    (root / "val2014" / "COCO_val2014_000000000101.jpg").unlink()
    with pytest.warns(UserWarning, match="2 image"):
        data = build_dataset("coco", root, "val")
    assert len(data) == 2
    reasons = {p["image_id"]: p["reason"] for p in data.problems}
    assert "no annotated object" in reasons["COCO_val2014_000000000103"]
    assert "image is missing" in reasons["COCO_val2014_000000000101"]


def test_coco_missing_root_annotations_and_unknown_category(tmp_path, monkeypatch):
    monkeypatch.setenv("CEP_DATA_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"coco.*prepare_data\.sh coco"):
        build_dataset("coco", None, "val")
    root = make_coco(tmp_path / "coco")
    assert build_dataset("coco", None, "val").root == root
    with pytest.raises(FileNotFoundError, match=r"instances_train2014\.json"):
        build_dataset("coco", root, "train")
    ann = root / "annotations" / "instances_val2014.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 91
    data["categories"].append({"id": 91, "name": "hat"})
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_val2014\.json: unknown category ids \[91\]"):
        build_dataset("coco", root, "val")
    ann.write_text(ann.read_text()[:100])  # an interrupted download
    with pytest.raises(ValueError, match=r"instances_val2014\.json: not valid JSON"):
        build_dataset("coco", root, "val")


# ---------------------------------------------------------------- custom
def test_custom_csv_json_dict_and_json_list(tmp_path):
    images, labels, classes = make_custom(tmp_path, {"a": ["cat"], "b": ["dog", "cat"]})
    data = _no_warnings(build_dataset, "custom", images, labels=labels, classes=classes)
    cat, dog = data.class_set.index("cat"), data.class_set.index("dog")
    assert data.ids() == ["a", "b"] and [s.class_ids for s in data] == [(cat,), tuple(sorted((cat, dog)))]
    assert data[0].image_path == images / "a.jpg" and data.split == "all"
    labels.write_text("image_id,classes\na.jpg,dog|cat\nb,background;dog\n")  # '|' separator, explicit extension
    data = build_dataset("custom", None, images=images, labels=labels, classes=classes)
    assert [s.class_ids for s in data] == [tuple(sorted((cat, dog))), (dog,)]
    as_dict = tmp_path / "tags.json"
    as_dict.write_text(json.dumps({"a": ["dog"], "b": "cat;dog"}))
    assert [s.class_ids for s in build_dataset("custom", images, labels=as_dict, classes=classes)] == \
        [(dog,), tuple(sorted((cat, dog)))]
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([{"image_id": "b", "classes": ["cat"]}]))
    assert build_dataset("custom", images, labels=as_list, classes=classes).ids() == ["b"]


def test_custom_finds_extensions_and_reads_gt(tmp_path):
    images, labels, classes = make_custom(tmp_path, {"a": ["cat"]})
    (images / "a.jpg").rename(images / "a.PNG")
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    mask = np.eye(40, 48, dtype=np.uint8)
    write_label_png(gt_dir / "a.png", mask, pascal_palette())
    data = build_dataset("custom", images, labels=labels, classes=classes, gt_dir=gt_dir)
    assert data[0].image_path == images / "a.PNG" and np.array_equal(data.read_gt("a"), mask)
    with pytest.raises(FileNotFoundError, match="GT folder.*nope"):
        build_dataset("custom", images, labels=labels, classes=classes, gt_dir=tmp_path / "nope")


def test_custom_empty_label_list_and_missing_image_are_problems(tmp_path):
    images, labels, classes = make_custom(tmp_path, {"a": ["cat"], "b": [], "c": ["dog"]})
    (images / "c.jpg").unlink()
    with pytest.warns(UserWarning, match="2 image"):
        data = build_dataset("custom", images, labels=labels, classes=classes)
    assert data.ids() == ["a"]
    reasons = {p["image_id"]: p["reason"] for p in data.problems}
    assert "empty label list" in reasons["b"] and "no image file found" in reasons["c"]


def test_custom_bad_label_lists_raise_naming_the_file(tmp_path):
    images, labels, classes = make_custom(tmp_path, {"a": ["cat"]})
    cases = {
        "image_id,classes\na,zebra\n": r"labels\.csv: image 'a': unknown class 'zebra'",
        "image_id,classes\na,cat\na,dog\n": r"labels\.csv: image 'a' is listed twice",
        "id,tags\na,cat\n": r"labels\.csv: the CSV header must be 'image_id,classes'",
        "image_id,classes\n": r"labels\.csv: the label list names no image",
    }
    for text, message in cases.items():
        labels.write_text(text)
        with pytest.raises(ValueError, match=message):
            build_dataset("custom", images, labels=labels, classes=classes)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps([{"id": "a"}]))
    with pytest.raises(ValueError, match=r"bad\.json: expected"):
        build_dataset("custom", images, labels=bad_json, classes=classes)
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        build_dataset("custom", images, labels=bad_json, classes=classes)
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        build_dataset("custom", images, labels=tmp_path / "absent.csv", classes=classes)


def test_duplicate_ids_in_json_are_refused_like_in_csv(tmp_path):
    images, labels, classes = make_custom(tmp_path, {"a": ["cat"], "b": ["dog"]})
    tags = tmp_path / "tags.json"
    tags.write_text('{"a": ["cat"], "b": ["dog"], "a": ["dog"]}')   # json.loads would keep the last "a"
    with pytest.raises(ValueError, match=r"tags\.json: image 'a' is listed twice"):
        build_dataset("custom", images, labels=tags, classes=classes)
    tags.write_text(json.dumps([{"image_id": "b", "classes": ["cat"]}, {"image_id": " b ", "classes": ["dog"]}]))
    with pytest.raises(ValueError, match=r"tags\.json: image 'b' is listed twice"):
        build_dataset("custom", images, labels=tags, classes=classes)
    for text in ('{"": ["cat"]}', "image_id,classes\n ,cat\n"):
        empty = tmp_path / ("empty.json" if text.startswith("{") else "empty.csv")
        empty.write_text(text)
        with pytest.raises(ValueError, match="empty or unusable image id"):
            build_dataset("custom", images, labels=empty, classes=classes)


def test_utf8_bom_in_tag_and_class_lists_is_accepted(tmp_path):
    images, _, _ = make_custom(tmp_path, {"a": ["cat"], "b": ["dog", "cat"]})
    bom = "\ufeff"
    classes = tmp_path / "classes_bom.txt"
    classes.write_text(bom + "cat\ndog\n", encoding="utf-8")
    csv_tags = tmp_path / "tags_bom.csv"
    csv_tags.write_text(bom + "image_id,classes\na,cat\nb,dog;cat\n", encoding="utf-8")  # as Excel saves it
    json_tags = tmp_path / "tags_bom.json"
    json_tags.write_text(bom + json.dumps({"a": ["cat"], "b": ["dog", "cat"]}), encoding="utf-8")
    for tags in (csv_tags, json_tags):
        data = build_dataset("custom", images, labels=tags, classes=classes)
        assert data.class_set.classes == ("background", "cat", "dog")
        assert data.ids() == ["a", "b"] and [s.class_ids for s in data] == [(1,), (1, 2)]


def test_build_dataset_rejects_unknown_names_and_incomplete_custom_options(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'ade'"):
        build_dataset("ade", tmp_path, "train")
    with pytest.raises(ValueError, match="--labels"):
        build_dataset("custom", tmp_path, None)


def test_sample_images_are_readable_rgb(tmp_path):
    from pseudolabel.image_io import read_rgb

    voc = make_voc(tmp_path, n_train=1, n_val=0)
    sample = build_dataset("voc", voc, "train")[0]
    image = read_rgb(sample.image_path)
    assert image.shape == (48, 64, 3) and Image.open(sample.image_path).size == (64, 48)


# ---------------------------------------------------------------- tools/prepare_data.sh
PREPARE = Path(__file__).resolve().parents[1] / "tools" / "prepare_data.sh"


def _prepare(*args, **env):
    return subprocess.run(["bash", str(PREPARE), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_prepare_data_offline_prints_manual_steps_and_fails(tmp_path):
    result = _prepare("voc", str(tmp_path), VOC_URL="file:///nonexistent/VOC.tar")
    assert result.returncode == 1
    assert f"-> {tmp_path}/downloads/VOCtrainval_11-May-2012.tar" in result.stderr
    assert f"-> {tmp_path}/downloads/SegmentationClassAug.zip" in result.stderr
    assert _prepare("imagenet").returncode == 2


def test_prepare_data_unpacks_archives_copied_by_hand(tmp_path):
    source = make_voc(tmp_path / "src", n_train=2, n_val=1, with_aug=True, n_aug_only=1)
    downloads = tmp_path / "dest" / "downloads"
    downloads.mkdir(parents=True)
    with tarfile.open(downloads / "VOCtrainval_11-May-2012.tar", "w") as archive:
        for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets"):
            archive.add(source / sub, f"VOCdevkit/VOC2012/{sub}")
    with zipfile.ZipFile(downloads / "SegmentationClassAug.zip", "w") as archive:
        for png in sorted((source / "SegmentationClassAug").iterdir()):
            archive.write(png, f"SegmentationClassAug/{png.name}")
        archive.writestr("__MACOSX/SegmentationClassAug/._x.png", b"metadata")
    (downloads / "train_aug.txt").write_text((source / "ImageSets/Segmentation/train_aug.txt").read_text())
    result = _prepare("voc", str(tmp_path / "dest"), VOC_URL="file:///nonexistent")
    assert result.returncode == 0, result.stderr
    assert "expected 10582" in result.stderr  # the tiny list is flagged
    voc = tmp_path / "dest" / "VOCdevkit" / "VOC2012"
    assert not (voc / "__MACOSX").exists()
    assert build_dataset("voc", voc, "train_aug").ids() == ["2007_000000", "2007_000001", "2009_000000"]


def test_voc_and_coco_find_files_whose_names_are_in_the_other_unicode_form(tmp_path):
    """A list (or annotation file) writes an id in NFC, the file system holds the NFD name (as macOS writes it), or
    the other way round: every file of the image is found, under the id as listed."""
    import unicodedata

    nfc, nfd = (unicodedata.normalize(form, "café_1") for form in ("NFC", "NFD"))
    voc = make_voc(tmp_path / "voc", n_train=2, n_val=1)
    first = (voc / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"), ("Annotations", ".xml")):
        (voc / folder / f"{first}{suffix}").rename(voc / folder / f"{nfd}{suffix}")
    listed = (voc / "ImageSets/Segmentation/train.txt").read_text().replace(first, nfc)
    (voc / "ImageSets/Segmentation/train.txt").write_text(listed)
    for source in ("xml", "mask"):
        sample = build_dataset("voc", voc, "train", label_source=source).by_id(nfc)
        assert sample.image_path.is_file() and sample.gt_path is not None and sample.gt_path.is_file()
        assert sample.class_ids

    coco = make_coco(tmp_path / "coco", split="val", n_images=2, png_gt=True)
    ann_file = coco / "annotations" / "instances_val2014.json"
    annotations = json.loads(ann_file.read_text())
    old = Path(annotations["images"][0]["file_name"]).stem
    annotations["images"][0]["file_name"] = f"{nfd}.jpg"
    ann_file.write_text(json.dumps(annotations))
    (coco / "val2014" / f"{old}.jpg").rename(coco / "val2014" / f"{nfc}.jpg")
    (coco / "SegmentationClass/val2014" / f"{old}.png").rename(coco / "SegmentationClass/val2014" / f"{nfc}.png")
    sample = build_dataset("coco", coco, "val").by_id(nfd)
    assert sample.image_path.is_file() and sample.gt_path is not None and sample.gt_path.is_file()
