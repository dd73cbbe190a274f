"""Export of shards to PNGs (palette or index, VOC layout or flat), COCO RLE masks and CLIP-ES .npy maps: read back
by the evaluator, by a stock mmseg VOC pipeline, by the image readers trainers use (imageio as WeCLIP reads labels,
OpenCV, PIL, mmcv), by pycocotools and the way CLIP-ES's eval_cam.py reads them; resumable, atomic, refuses to mix
labels."""
import json

import cv2
import h5py
import numpy as np
import pytest
from PIL import Image

from pseudolabel.storage import export as export_module
from pseudolabel.storage.export import ExportConfig, ExportError, export_labels
from pseudolabel.storage.shards import LabelRecord, ShardWriter
from tests.fixtures.viewer_shards import ATTRS, VOC, load_tool, make_voc_run

# VOC's colour map, written out (not computed): index -> RGB of the official palette.
VOC_COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 5: (128, 0, 128), 12: (64, 0, 128), 15: (192, 128, 128),
               255: (224, 224, 192)}


def labels_with_ignore(shape, class_ids, seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array([0, *class_ids], np.uint8), size=shape)
    labels[0, :] = 255
    return labels


@pytest.fixture
def shards(tmp_path):
    """Three images in two shards; ids with a '/', ignore pixels, classes 5 and 12 (so a 0/1-based key is visible)."""
    records = []
    for seed, (image_id, class_ids, size) in enumerate([("2007_000001", (5, 12), (30, 41)), ("sub/b", (15,), (20, 33)),
                                                        ("2007_000003", (1, 5, 12), (17, 50))]):
        rng = np.random.default_rng(seed)
        refined, initial = labels_with_ignore(size, class_ids, seed), labels_with_ignore(size, class_ids, seed + 10)
        lowres = rng.random((len(class_ids), -(-size[0] // 16), -(-size[1] // 16))).astype(np.float32)
        records.append(LabelRecord(image_id=image_id, refined=refined, initial=initial, loc_maps_lowres=lowres,
                                   loc_class_ids=class_ids, class_ids=class_ids, size=size))
    directory = tmp_path / "shards"
    directory.mkdir()
    for number, chunk in enumerate((records[:2], records[2:])):
        with ShardWriter(directory / f"shard-r000-{number:05d}.h5", VOC, ATTRS) as writer:
            for record in chunk:
                writer.write(record)
    return directory, {r.image_id: r for r in records}


def stored(directory, image_id, name):
    """A dataset of the shards read with h5py directly (not through ShardSet)."""
    for path in sorted(directory.glob("shard-*.h5")):
        with h5py.File(path, "r") as handle:
            for group in handle["images"].values():
                if group.attrs["image_id"] == image_id:
                    return group[name][()]
    raise KeyError(image_id)


@pytest.mark.parametrize("kind", ["refined", "initial"])
def test_voc_layout_palette_pngs_and_id_list(shards, tmp_path, kind):
    directory, records = shards
    summary = export_labels(directory, tmp_path / "out", ExportConfig(kind=kind, workers=2), progress=False)
    assert summary.images == summary.written == 3
    assert (tmp_path / "out" / "train.txt").read_text().split() == sorted(records)
    for image_id in records:
        with Image.open(tmp_path / "out" / "SegmentationClassPseudo" / f"{image_id}.png") as image:
            assert image.mode == "P"
            palette = np.array(image.getpalette()).reshape(-1, 3)
            labels = np.array(image)
        assert np.array_equal(labels, stored(directory, image_id, kind))      # 255 kept
        for index, colour in VOC_COLOURS.items():
            assert tuple(palette[index]) == colour
    record = json.loads((tmp_path / "out" / "export.json").read_text())
    assert record["complete"] and record["kind"] == kind and record["random_weights"] is True


def test_flat_layout(shards, tmp_path):
    directory, records = shards
    export_labels(directory, tmp_path / "flat", ExportConfig(layout="flat", workers=1), progress=False)
    for image_id in records:
        assert np.array_equal(np.array(Image.open(tmp_path / "flat" / f"{image_id}.png")),
                              stored(directory, image_id, "refined"))
    assert not (tmp_path / "flat" / "SegmentationClassPseudo").exists()


def clipes_eval_cam_labels(cam_out_dir, image_id, cam_eval_thres=2):
    """The label CLIP-ES's eval_cam.py (run_eval_cam, cam_type 'attn_highres') makes from one .npy file; these lines
    follow its code statement by statement."""
    cam_dict = np.load(cam_out_dir / f"{image_id}.npy", allow_pickle=True).item()
    cams = cam_dict["attn_highres"]
    bg_score = np.power(1 - np.max(cams, axis=0, keepdims=True), cam_eval_thres)
    cams = np.concatenate((bg_score, cams), axis=0)
    keys = np.pad(cam_dict["keys"] + 1, (1, 0), mode="constant")
    cls_labels = np.argmax(cams, axis=0)
    return keys[cls_labels].astype(np.uint8), cam_dict


def test_clipes_maps_read_as_clipes_eval_reads_them(shards, tmp_path):
    directory, records = shards
    summary = export_labels(directory, tmp_path / "out", ExportConfig(maps="clipes"), progress=False)
    assert summary.maps_dir == tmp_path / "out" / "clipes_voc12"   # 'voc' in the path: CLIP-ES evaluates as VOC
    for image_id, record in records.items():
        labels, cam_dict = clipes_eval_cam_labels(summary.maps_dir, image_id)
        assert set(cam_dict) == {"keys", "attn_highres"}
        assert cam_dict["keys"].dtype == np.int64 and list(cam_dict["keys"]) == [c - 1 for c in record.class_ids]
        height, width = record.size
        # reference: the stored token-resolution maps, resized as CLIP-ES does (cv2.resize to (width, height))
        lowres = stored(directory, image_id, "loc_maps").astype(np.float32)
        expected_maps = np.stack([cv2.resize(m, (width, height)) for m in lowres])
        assert cam_dict["attn_highres"].dtype == np.float16 and cam_dict["attn_highres"].shape == expected_maps.shape
        np.testing.assert_allclose(cam_dict["attn_highres"], expected_maps, atol=1e-3)
        scores = np.concatenate([(1 - expected_maps.max(axis=0, keepdims=True)) ** 2, expected_maps])
        expected = np.array([0, *record.class_ids])[scores.argmax(axis=0)]
        assert np.mean(labels == expected) > 0.99    # float16 rounding may flip a near-tie
        assert set(np.unique(labels)) <= {0, *record.class_ids}


def test_round_trip_through_the_evaluator(tmp_path):
    root, shard_dir, _ = make_voc_run(tmp_path)
    assert load_tool("export_labels").main([str(shard_dir), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    evaluate = load_tool("evaluate").main
    results = {}
    for name, pred in (("shards", shard_dir), ("pngs", tmp_path / "out" / "SegmentationClassPseudo")):
        path = tmp_path / f"{name}.json"
        assert evaluate(["--gt", "voc:train", "--data-root", str(root), "--pred", str(pred), "--num-classes", "21",
                         "--bootstrap", "0", "--workers", "1", "--quiet", "--json", str(path)]) == 0
        results[name] = json.loads(path.read_text())
    assert results["pngs"]["num_images"] == results["shards"]["num_images"] == 4
    assert results["pngs"]["mIoU"] == results["shards"]["mIoU"] and results["pngs"]["mIoU"] < 100
    assert results["pngs"]["per_class"] == results["shards"]["per_class"]


@pytest.mark.parametrize("png_mode", ["palette", "index"])
def test_stock_mmseg_voc_pipeline_reads_the_export(tmp_path, png_mode):
    from mmseg.datasets import PascalVOCDataset
    from mmseg.datasets.transforms import LoadAnnotations

    root, shard_dir, dataset = make_voc_run(tmp_path)
    out = tmp_path / "out"
    export_labels(shard_dir, out, ExportConfig(png_mode=png_mode), progress=False)
    voc = PascalVOCDataset(data_root=str(root), ann_file=str(out / "train.txt"),
                           data_prefix=dict(img_path="JPEGImages", seg_map_path=str(out / "SegmentationClassPseudo")),
                           pipeline=[LoadAnnotations()])
    assert len(voc) == len(dataset)
    for index in range(len(voc)):
        sample = voc[index]
        image_id = sample["seg_map_path"].rsplit("/", 1)[-1][:-4]
        assert np.array_equal(sample["gt_seg_map"], stored(shard_dir, image_id, "refined"))


def test_interrupted_export_resumes_to_the_same_files(shards, tmp_path, monkeypatch):
    directory, records = shards
    clean = tmp_path / "clean"
    export_labels(directory, clean, ExportConfig(maps="clipes", workers=1), progress=False)

    calls = {"n": 0}
    real = export_module.write_label_png

    def dies_on_the_second(handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            handle.write(b"\x89PNG half")
            raise OSError("disk on fire")
        return real(handle, *args, **kwargs)

    monkeypatch.setattr(export_module, "write_label_png", dies_on_the_second)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="2007_000003.*disk on fire.*rerun to resume"):
        export_labels(directory, out, ExportConfig(maps="clipes", workers=1), progress=False)
    assert not (out / "SegmentationClassPseudo" / "2007_000003.png").exists()  # the half-written file got no name
    assert not list(out.rglob("*.tmp"))                     # and was removed
    assert not json.loads((out / "export.json").read_text())["complete"]
    monkeypatch.setattr(export_module, "write_label_png", real)

    finished = out / "SegmentationClassPseudo" / "2007_000001.png"
    before = finished.stat().st_mtime_ns
    (out / "clipes_voc12" / "2007_000001.npy").write_bytes(b"")   # e.g. emptied by a power loss
    summary = export_labels(directory, out, ExportConfig(maps="clipes", workers=1), progress=False)
    assert summary.written == 3 and finished.stat().st_mtime_ns == before   # finished PNG kept, the rest redone
    assert not list(out.rglob("*.tmp"))
    produced = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "export.json")
    assert produced == sorted(p.relative_to(clean) for p in clean.rglob("*") if p.is_file() and p.name != "export.json")
    for relative in produced:
        assert (out / relative).read_bytes() == (clean / relative).read_bytes(), relative
    assert export_labels(directory, out, ExportConfig(maps="clipes"), progress=False).written == 0


def test_other_labels_into_the_same_folder_are_refused_unless_overwrite(shards, tmp_path, capsys):
    directory, _ = shards
    tool = load_tool("export_labels").main
    assert tool([str(directory), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
    assert tool([str(directory), "--out", str(tmp_path / "out"), "--kind", "initial", "--quiet"]) == 2
    assert "kind: 'refined' -> 'initial'" in capsys.readouterr().err
    assert tool([str(directory), "--out", str(tmp_path / "out"), "--kind", "initial", "--overwrite", "--quiet"]) == 0
    png = tmp_path / "out" / "SegmentationClassPseudo" / "2007_000001.png"
    assert np.array_equal(np.array(Image.open(png)), stored(directory, "2007_000001", "initial"))
    assert tool([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def read_as_weclip(path):
    """WeCLIP's label loader (its datasets/voc.py: ``imageio.v2.imread``)."""
    imageio = pytest.importorskip("imageio.v2", reason="imageio is a test dependency (requirements.txt)")
    return imageio.imread(path)


def read_with_mmcv(path, backend):
    import mmcv

    with open(path, "rb") as handle:
        return mmcv.imfrombytes(handle.read(), flag="unchanged", backend=backend)


# How each reader a trainer may use opens a label PNG: imageio as WeCLIP, OpenCV unchanged and grayscale (CLIP-ES and
# many DeepLab ports), PIL, mmcv's decoders (mmseg's LoadAnnotations uses the pillow one).
READERS = {
    "imageio (WeCLIP)": read_as_weclip,
    "cv2 unchanged": lambda path: cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
    "cv2 grayscale": lambda path: cv2.imread(str(path), cv2.IMREAD_GRAYSCALE),
    "PIL": lambda path: np.array(Image.open(path)),
    "mmcv pillow": lambda path: read_with_mmcv(path, "pillow"),
    "mmcv cv2": lambda path: read_with_mmcv(path, "cv2"),
}
# Palette PNGs hold the indices too, but these readers turn them into colours (or grey levels of the colours).
COLOUR_READERS = {"imageio (WeCLIP)", "cv2 unchanged", "cv2 grayscale", "mmcv cv2"}


@pytest.mark.parametrize("reader", READERS)
def test_index_pngs_read_as_class_indices_with_every_reader(shards, tmp_path, reader):
    directory, records = shards
    summary = export_labels(directory, tmp_path / "out", ExportConfig(png_mode="index", workers=1), progress=False)
    for image_id in records:
        labels = READERS[reader](summary.label_dir / f"{image_id}.png")
        expected = stored(directory, image_id, "refined")
        assert labels.dtype == np.uint8 and labels.shape == expected.shape, reader
        assert np.array_equal(labels, expected), reader       # 15 stays 15, 255 stays 255
    assert json.loads((tmp_path / "out" / "export.json").read_text())["png_mode"] == "index"


@pytest.mark.parametrize("reader", READERS)
def test_palette_pngs_give_indices_only_to_palette_aware_readers(shards, tmp_path, reader):
    """What docs/export.md tells users: palette PNGs are for viewing and PIL-based loaders (mmseg)."""
    directory, records = shards
    summary = export_labels(directory, tmp_path / "out", ExportConfig(workers=1), progress=False)
    labels = READERS[reader](summary.label_dir / "sub/b.png")
    expected = stored(directory, "sub/b", "refined")
    reads_indices = labels.shape == expected.shape and np.array_equal(labels, expected)
    assert reads_indices == (reader not in COLOUR_READERS), reader
    if reader == "cv2 grayscale":      # the grey level of VOC's colour of class 15 (person), not 15
        assert set(np.unique(labels[expected == 15])) == {147}


def test_changing_the_png_mode_of_an_export_is_refused(shards, tmp_path):
    directory, _ = shards
    export_labels(directory, tmp_path / "out", ExportConfig(workers=1), progress=False)
    with pytest.raises(ExportError, match="png_mode: 'palette' -> 'index'"):
        export_labels(directory, tmp_path / "out", ExportConfig(png_mode="index", workers=1), progress=False)
    record = tmp_path / "out" / "export.json"
    older = json.loads(record.read_text())
    del older["png_mode"]                        # an export.json written before the option: palette PNGs
    record.write_text(json.dumps(older))
    assert export_labels(directory, tmp_path / "out", ExportConfig(workers=1), progress=False).written == 0


def masks_by_class(coco, image_entry, class_names):
    """{class index: decoded mask} of one image, through pycocotools' COCO API (annToMask)."""
    found = {}
    for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image_entry["id"]])):
        name = coco.loadCats([annotation["category_id"]])[0]["name"]
        index = class_names.index(name)
        assert index not in found, f"two annotations of {name} in {image_entry['file_name']}"
        found[index] = coco.annToMask(annotation)
    return found


def test_coco_rle_json_decodes_to_the_shard_labels(shards, tmp_path):
    from pycocotools.coco import COCO

    directory, records = shards
    summary = export_labels(directory, tmp_path / "out", ExportConfig(coco_rle=True, workers=2), progress=False)
    assert summary.coco_json == tmp_path / "out" / "train_coco_rle.json"
    document = json.loads(summary.coco_json.read_text())
    assert document["info"]["random_weights"] is True and document["info"]["kind"] == "refined"
    assert [(c["id"], c["name"]) for c in document["categories"]] == list(enumerate(VOC.classes))[1:]
    coco = COCO(str(summary.coco_json))
    assert len(coco.imgs) == len(records)
    for entry in coco.dataset["images"]:
        image_id = entry["file_name"].removesuffix(".jpg")        # VOC's JPEGImages/<id>.jpg
        labels = stored(directory, image_id, "refined")
        assert (entry["height"], entry["width"]) == labels.shape
        masks = masks_by_class(coco, entry, list(VOC.classes))
        present = {int(c) for c in np.unique(labels)} - {0, 255}
        assert set(masks) == present                              # one entry per class in the label map
        for index, mask in masks.items():
            assert np.array_equal(mask, labels == index), (image_id, index)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[entry["id"]])):
            mask = labels == VOC.classes.index(coco.loadCats([annotation["category_id"]])[0]["name"])
            rows, cols = np.nonzero(mask)
            assert annotation["area"] == mask.sum() and annotation["iscrowd"] == 0
            assert annotation["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1,
                                          rows.max() - rows.min() + 1]
    # a resumed export (every PNG already there) writes the same JSON
    again = export_labels(directory, tmp_path / "out", ExportConfig(coco_rle=True, workers=1), progress=False)
    assert again.written == 0 and json.loads(again.coco_json.read_text()) == document


def test_coco_rle_uses_coco_category_ids_and_custom_file_names(tmp_path):
    from pseudolabel.classes import get_class_set

    coco_classes = get_class_set("coco")
    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (9, 7)).save(images / "cat.png")
    labels = np.zeros((7, 9), np.uint8)
    labels[2:5, 3:8] = 80                                          # toothbrush: COCO category id 90
    labels[0, 0] = 1                                               # person: COCO category id 1
    attrs = dict(ATTRS, dataset="custom", image_dir=str(images))
    (tmp_path / "shards").mkdir()
    with ShardWriter(tmp_path / "shards" / "shard-r000-00000.h5", coco_classes, attrs) as writer:
        writer.write(LabelRecord(image_id="cat", refined=labels, initial=labels,
                                 loc_maps_lowres=np.zeros((2, 1, 1), np.float32), loc_class_ids=(1, 80),
                                 class_ids=(1, 80), size=labels.shape))
    summary = export_labels(tmp_path / "shards", tmp_path / "out", ExportConfig(coco_rle=True), progress=False)
    document = json.loads(summary.coco_json.read_text())
    assert document["images"] == [{"id": 1, "file_name": "cat.png", "height": 7, "width": 9}]
    assert sorted(a["category_id"] for a in document["annotations"]) == [1, 90]
    assert {c["id"]: c["name"] for c in document["categories"]}[90] == "toothbrush"
