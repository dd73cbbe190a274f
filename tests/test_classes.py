"""Class sets (built-in and from files) and the PASCAL palette."""
import json

import numpy as np
import pytest

from pseudolabel.classes import ClassSet, get_class_set, pascal_palette


def test_builtin_voc_and_coco_sizes():
    voc, coco = get_class_set("voc"), get_class_set("coco")
    assert (voc.num_classes, len(voc.prompt_names), len(voc.background_words)) == (21, 20, 25)
    assert (coco.num_classes, len(coco.prompt_names), len(coco.background_words)) == (81, 80, 23)
    assert voc.classes[0] == coco.classes[0] == "background"
    assert voc.index("aeroplane") == 1 and voc.index("tvmonitor") == 20 and coco.index("toothbrush") == 80
    # CLIP-ES: COCO background words are the VOC ones without keyboard and sign
    assert set(coco.background_words) == set(voc.background_words) - {"keyboard", "sign"}


def test_coco_category_ids_strictly_increase_from_1_to_90():
    ids = np.array(get_class_set("coco").category_ids)
    assert len(ids) == 80 and ids[0] == 1 and ids[-1] == 90 and np.all(np.diff(ids) > 0)
    assert 12 not in ids  # one of the 10 ids COCO left unused


def test_unknown_class_and_unknown_builtin_raise_helpfully():
    with pytest.raises(KeyError, match="unknown class 'unicorn'.*aeroplane"):
        get_class_set("voc").index("unicorn")
    with pytest.raises(KeyError, match="from_file"):
        get_class_set("ade20k")


def test_class_set_from_text_file(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("# my classes\ncat\n\ndog\n")
    custom = ClassSet.from_file(txt)
    assert custom.classes == ("background", "cat", "dog") and custom.prompt_names == ("cat", "dog")
    assert custom.background_words == get_class_set("voc").background_words
    (tmp_path / "with_bg.txt").write_text("background\ncat\n")
    assert ClassSet.from_file(tmp_path / "with_bg.txt").classes == ("background", "cat")


def test_class_set_from_json_file_and_bad_files(tmp_path):
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"classes": ["background", "x"], "prompt_names": ["an x"]}))
    loaded = ClassSet.from_file(js)
    assert loaded.prompt_names == ("an x",) and ClassSet.from_json(loaded.to_json()) == loaded
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        ClassSet.from_file(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="names no class"):
        ClassSet.from_file(tmp_path / "empty.txt")


def test_pascal_palette_values():
    palette = pascal_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert tuple(palette[0]) == (0, 0, 0) and tuple(palette[1]) == (128, 0, 0) and tuple(palette[2]) == (0, 128, 0)
    assert tuple(palette[15]) == (192, 128, 128) and tuple(palette[255]) == (224, 224, 192)
    assert len({tuple(c) for c in palette}) == 256  # every index has its own colour
