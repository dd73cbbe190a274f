"""Dataset readers on tiny VOC / COCO / custom layouts, including every bad-input case."""
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from pseudolabel.classes import ClassSet, get_class_set, pascal_palette
from pseudolabel.datasets import build_dataset
from pseudolabel.image_io import ImageReadError, read_label_png, read_rgb
from tests.fixtures.tiny_datasets import make_coco, make_custom, make_voc


@pytest.fixture()
def voc(tmp_path):
    return make_voc(tmp_path, n_train=4, n_val=3, with_aug=True)


def test_voc_ids_splits_and_xml_labels_match_masks(voc):
    train = build_dataset("voc", voc, "train")
    assert train.ids() == [f"2007_{i:06d}" for i in range(4)]
    assert len(build_dataset("voc", voc, "val")) == 3
    assert build_dataset("voc", voc).split == "train_aug" and len(build_dataset("voc", voc)) == 4
    by_mask = build_dataset("voc", voc, "train", label_source="mask")
    for a, b in zip(train, by_mask):
        assert a.class_ids == b.class_ids and a.class_ids and 0 not in a.class_ids
        gt = train.read_gt(a.image_id)
        assert set(np.unique(gt)) - {0, 255} == set(a.class_ids)


def test_voc_missing_root_and_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_data.sh voc"):
        build_dataset("voc", tmp_path / "nowhere", "train")
    voc = make_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match="SBD"):
        build_dataset("voc", voc, "train_aug")


def test_voc_absent_image_and_empty_labels_are_problems_not_samples(voc):
    (voc / "JPEGImages" / "2007_000001.jpg").unlink()
    (voc / "Annotations" / "2007_000002.xml").write_text("<annotation></annotation>")
    with pytest.warns(UserWarning, match="2 image"):
        data = build_dataset("voc", voc, "train")
    assert data.ids() == ["2007_000000", "2007_000003"]
    reasons = {p["image_id"]: p["reason"] for p in data.problems}
    assert "missing" in reasons["2007_000001"] and "no foreground class" in reasons["2007_000002"]


def test_voc_unknown_class_in_xml_names_the_file(voc):
    (voc / "Annotations" / "2007_000000.xml").write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(ValueError, match=r"2007_000000\.xml.*unicorn"):
        build_dataset("voc", voc, "train")


def test_coco_labels_mapping_and_rendered_masks(tmp_path):
    root = make_coco(tmp_path, split="val")
    data = build_dataset("coco", root, "val")
    coco = get_class_set("coco")
    assert data.class_set.num_classes == 81
    first = data[0]
    assert first.class_ids == (1, 80)  # category id 1 -> person (1), 90 -> toothbrush (80)
    gt = data.read_gt(first.image_id)
    assert gt.shape == (40, 56)
    assert gt[3, 3] == 80 and gt[12, 12] == 1  # the smaller object is painted last, so it stays visible
    assert coco.category_ids[79] == 90


def test_custom_csv_and_json_tags(tmp_path):
    tags = {"a": ["cat"], "b": ["dog", "cat"], "c": []}
    images, labels, classes = make_custom(tmp_path, tags)
    with pytest.warns(UserWarning):
        data = build_dataset("custom", images, labels=labels, classes=classes)
    cs = data.class_set
    assert [s.class_ids for s in data] == [(cs.index("cat"),), tuple(sorted((cs.index("cat"), cs.index("dog"))))]
    assert data.problems[0]["image_id"] == "c" and "empty label list" in data.problems[0]["reason"]
    images, labels, classes = make_custom(tmp_path / "j", {"x": ["dog"]}, fmt="json")
    assert build_dataset("custom", images, labels=labels, classes=classes)[0].class_ids == (cs.index("dog"),)


def test_custom_unknown_class(tmp_path):
    images, labels, classes = make_custom(tmp_path, {"a": ["cat"]})
    labels.write_text("image_id,classes\na,zebra\n")
    with pytest.raises(ValueError, match="zebra"):
        build_dataset("custom", images, labels=labels, classes=classes)


def test_read_rgb_conversions_warn_and_name_the_file(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(gray)
    with pytest.warns(UserWarning, match="gray.png"):
        assert read_rgb(gray).shape == (4, 5, 3)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (6, 4), (0, 255, 0, 0)).save(cmyk)
    with pytest.warns(UserWarning, match="CMYK"):
        assert read_rgb(cmyk).shape == (4, 6, 3)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 1000], [2000, 4000]], np.uint16)).save(deep)
    with pytest.warns(UserWarning, match="scaled"):
        out = read_rgb(deep)
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == 255 and out[0, 1, 0] == 64


def test_read_rgb_rejects_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    for path in (truncated, garbage, tmp_path / "absent.jpg"):
        with pytest.raises(ImageReadError, match=path.name):
            read_rgb(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_rgb(good).dtype == np.uint8


def test_label_png_roundtrip_and_rgb_rejection(tmp_path):
    from pseudolabel.image_io import write_label_png

    labels = np.array([[0, 1], [15, 255]], np.uint8)
    write_label_png(tmp_path / "l.png", labels, pascal_palette())
    assert np.array_equal(read_label_png(tmp_path / "l.png"), labels)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="palette"):
        read_label_png(tmp_path / "rgb.png")


def test_class_sets_and_palette(tmp_path):
    voc, coco = get_class_set("voc"), get_class_set("coco")
    assert (voc.num_classes, len(voc.prompt_names), len(voc.background_words)) == (21, 20, 25)
    assert (coco.num_classes, len(coco.prompt_names), len(coco.background_words)) == (81, 80, 23)
    assert list(coco.category_ids) == sorted(coco.category_ids) and coco.category_ids[0] == 1
    palette = pascal_palette()
    assert tuple(palette[1]) == (128, 0, 0) and tuple(palette[255]) == (224, 224, 192)
    txt = tmp_path / "c.txt"
    txt.write_text("cat\ndog\n")
    custom = ClassSet.from_file(txt)
    assert custom.classes == ("background", "cat", "dog") and custom.background_words == voc.background_words
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"classes": ["background", "x"], "prompt_names": ["an x"]}))
    assert ClassSet.from_file(js).prompt_names == ("an x",)
