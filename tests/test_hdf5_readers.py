"""Stage-one shards as the readers users have read them: HDF5's own Image API (H5IM of the system's libhdf5_hl,
through ctypes), silx's NXdata parser and h5web's rules for which view a shard opens and how it draws it.

Nothing here reuses the writer's code: libhdf5_hl and silx are the readers themselves, the attribute encoding is
compared with what libhdf5_hl's own H5IM writers produce, colours are checked with PIL's palette conversion and
VOC's published colours, and h5web's rules are transcribed from its source (files named at each rule).
"""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from pseudolabel.generate import run
from tests.fixtures.hdf5_hl import find_libraries
from tests.fixtures.tiny_datasets import make_voc
from tests.fixtures.tiny_models import REPO

TINY = ["--clip-model", "ViT-T-16-cep-test-quickgelu", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu"]
FORMAT_2 = REPO / "tests" / "fixtures" / "shards_v2" / "shard-r000-00000.h5"   # written by the format-2 writer
# PASCAL VOC's colours (the devkit's VOClabelcolormap): background, aeroplane, person, and 255 (void)
VOC_COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 15: (192, 128, 128), 255: (224, 224, 192)}

needs_hl = pytest.mark.skipif(
    find_libraries() is None,
    reason="the system's HDF5 high-level library is not installed (Debian: apt-get install libhdf5-hl-100; "
           ".ci/run installs it)")


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    """A tiny stage-one run: 3 images of two sizes in 2 shards."""
    voc = make_voc(tmp_path_factory.mktemp("data"), n_train=3, n_val=1, size=(40, 56))
    out = tmp_path_factory.mktemp("run")
    run(["voc", "--data-root", str(voc), "--split", "train", "--out", str(out), "--shard-size", "2", *TINY])
    return sorted(out.glob("shard-*.h5"))


def libhdf5(command: str, path, *names: str) -> dict:
    """The JSON answer of tests/fixtures/hdf5_hl.py, run in a process of its own (no h5py in it)."""
    result = subprocess.run([sys.executable, "-m", "tests.fixtures.hdf5_hl", command, str(path), *names],
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def image_groups(path) -> dict[str, tuple[int, int]]:
    with h5py.File(path, "r") as handle:
        return {group.name: (int(group.attrs["height"]), int(group.attrs["width"]))
                for group in handle["images"].values()}


@needs_hl
def test_libhdf5_reads_every_label_map_and_palette_of_a_run(stage_one):
    assert len(stage_one) == 2
    for path in stage_one:
        groups = image_groups(path)
        maps = [f"{g}/{kind}" for g in groups for kind in ("refined", "initial")]
        renderings = [f"{name}_rgb" for name in maps]
        answers = libhdf5("query", path, "palette", *maps, *renderings)
        assert answers["open"] == 0      # HDF5 1.10's library reads the file format (libver v110)
        assert (answers["palette"]["is_palette"], answers["palette"]["is_image"]) == (1, 0)
        with h5py.File(path, "r") as handle:
            palette = handle["palette"][()]
        assert all(tuple(palette[index]) == colour for index, colour in VOC_COLOURS.items())
        for name in maps:
            answer, (height, width) = answers[name], groups[name.rsplit("/", 1)[0]]
            assert (answer["is_image"], answer["is_palette"]) == (1, 0), name
            assert (answer["get_npalettes"], answer["npalettes"]) == (0, 1), name
            assert (answer["get_image_info"], answer["height"], answer["width"], answer["planes"]) == \
                (0, height, width, 1), name
            assert (answer["get_palette_info"], answer["palette_dims"]) == (0, [256, 3]), name
            assert answer["get_palette"] == 0 and answer["palette"] == palette.ravel().tolist(), name
        for name in renderings:
            answer, (height, width) = answers[name], groups[name.rsplit("/", 1)[0]]
            assert (answer["is_image"], answer["npalettes"]) == (1, 0), name
            assert (answer["get_image_info"], answer["height"], answer["width"], answer["planes"],
                    answer["interlace"]) == (0, height, width, 3, "INTERLACE_PIXEL"), name


@needs_hl
def test_libhdf5_rejects_the_format_2_encoding():
    # the planted defect this module's first test catches: NULL-padded strings (format 2) are not images to HDF5
    answers = libhdf5("query", FORMAT_2, "palette", "images/a/refined")
    assert answers["images/a/refined"]["is_image"] == -1 and answers["palette"]["is_palette"] == -1


def encoding(attrs: h5py.AttributeManager, name: str) -> dict:
    """How an attribute is stored: type class, shape, and for strings size, padding, character set, variable length."""
    stored = attrs.get_id(name)
    stored_type = stored.get_type()
    described = {"class": stored_type.get_class(), "shape": stored.shape}
    if isinstance(stored_type, h5py.h5t.TypeStringID):
        described.update(size=stored_type.get_size(), pad=stored_type.get_strpad(), cset=stored_type.get_cset(),
                         variable=stored_type.is_variable_str())
    return described


@needs_hl
def test_attributes_are_encoded_as_libhdf5s_own_writers_encode_them(stage_one, tmp_path):
    reference = tmp_path / "reference.h5"
    assert libhdf5("reference", reference) == dict.fromkeys(
        ("make_image_8bit", "make_palette", "link_palette", "make_image_24bit"), 0)
    with h5py.File(reference, "r") as ref, h5py.File(stage_one[0], "r") as ours:
        group = next(iter(ours["images"].values()))
        pairs = [(ref["indexed"], group["refined"]), (ref["indexed"], group["initial"]),
                 (ref["truecolor"], group["refined_rgb"]), (ref["palette"], ours["palette"])]
        for theirs, mine in pairs:
            assert mine.dtype == theirs.dtype == np.uint8 and mine.ndim == theirs.ndim, mine.name
            assert mine.shape[2:] == theirs.shape[2:], mine.name
            for name in theirs.attrs:
                assert name in mine.attrs, (mine.name, name)
                if name == "PALETTE":
                    # H5IMlink_palette writes a scalar for a first palette; the spec's table asks for a 1-D array
                    # of references (what H5IMlink_palette writes from the second palette on)
                    assert encoding(theirs.attrs, name) == {**encoding(mine.attrs, name), "shape": ()}
                    assert encoding(mine.attrs, name)["shape"] == (1,), mine.name
                else:
                    assert encoding(mine.attrs, name) == encoding(theirs.attrs, name), (mine.name, name)
                    assert mine.attrs[name] == theirs.attrs[name], (mine.name, name)
            # the spec's optional strings we add follow the same rule as H5LTset_attribute_string
            string_rule = encoding(theirs.attrs, "CLASS")
            for name in ("DISPLAY_ORIGIN", "PAL_COLORMODEL", "PAL_TYPE", "INTERLACE_MODE"):
                if name in mine.attrs:
                    assert encoding(mine.attrs, name) == {**string_rule, "size": len(mine.attrs[name]) + 1}
        # IMAGE_MINMAXRANGE: the data's own minimum and maximum, in the data's type (spec, table 1)
        values = group["refined"][()]
        assert group["refined"].attrs["IMAGE_MINMAXRANGE"].tolist() == [values.min(), values.max()]
        assert group["refined"].attrs["IMAGE_MINMAXRANGE"].dtype == values.dtype


def pil_rendering(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    image = Image.fromarray(labels, "P")
    image.putpalette(palette.ravel().tolist())
    return np.asarray(image.convert("RGB"))


def test_silx_parses_each_image_as_an_upright_colour_nxdata(stage_one):
    nxdata = pytest.importorskip("silx.io.nxdata", reason="silx is not installed (pip install silx)")
    from silx.math.calibration import ArrayCalibration

    for path in stage_one:
        with h5py.File(path, "r") as handle:
            palette = handle["palette"][()]
            first = handle["images"][handle["images"].attrs["default"]]
            assert nxdata.get_default(handle).group.name == first.name   # what silx opens for the file
            assert nxdata.is_NXroot_with_default_NXdata(handle)
            for group in handle["images"].values():
                parsed = nxdata.NXdata(group)
                assert parsed.is_valid, parsed.issues
                assert parsed.interpretation == "rgb-image" and parsed.is_image and not parsed.is_stack
                assert parsed.signal_dataset_name == "refined_rgb"
                assert parsed.auxiliary_signals_dataset_names == ["initial_rgb"]
                assert parsed.axes_dataset_names == ["row", None, None]
                for kind, rendering in (("refined", parsed.signal), ("initial", parsed.auxiliary_signals[0])):
                    assert np.array_equal(rendering[()], pil_rendering(group[kind][()], palette)), kind
                # silx's image views place row i at y = calibration(i) on a y axis growing upward (RgbaImagePlot,
                # silx.gui.data._utils.getAxesCalib); a falling calibration puts row 0 at the top
                calibration = ArrayCalibration(parsed.axes[0])
                assert calibration.is_affine() and calibration.get_slope() < 0
                assert calibration(0) == max(calibration(i) for i in range(group["refined"].shape[0]))


# h5web's rules, as its source states them (silx-kit/h5web, packages/app/src/...):
def h5web_string(attrs, name):
    """utils.ts findScalarStrAttr: only a scalar string attribute counts."""
    if name not in attrs or attrs.get_id(name).shape != () or \
            attrs.get_id(name).get_type().get_class() != h5py.h5t.STRING:
        return None
    value = attrs[name]
    return value.decode() if isinstance(value, bytes) else value


def h5web_resolve(handle: h5py.File, path: str) -> tuple[str, str]:
    """visualizer/utils.ts resolvePath: (the entity shown, its primary vis) for a path opened in h5web."""
    entity = handle[path]
    if isinstance(entity, h5py.Dataset):
        dims, numeric = entity.shape, entity.dtype.kind in "uif"
        # core/visualizations.ts: RGB needs >= 3 dims, the last 3 or 4, numeric, CLASS=IMAGE; Heatmap >= 2 dims
        if len(dims) >= 3 and dims[-1] in (3, 4) and numeric and h5web_string(entity.attrs, "CLASS") == "IMAGE":
            return entity.name, "RGB"
        return entity.name, "Heatmap" if len(dims) >= 2 and numeric else "other"
    if h5web_string(entity.attrs, "NX_class") == "NXdata":        # nexus/utils.ts isNxDataGroup, findSignalDataset
        signal = entity[h5web_string(entity.attrs, "signal")]
        interpretation = h5web_string(signal.attrs, "interpretation")
        dims = signal.shape
        # nexus/visualizations.ts NxRGB.supports, always primary when supported
        if len(dims) >= 3 and dims[-1] in (3, 4) and (interpretation in ("rgb-image", "rgba-image") or
                                                     h5web_string(signal.attrs, "CLASS") == "IMAGE"):
            # core/rgb/utils.ts assertImageSubclassIfPresent
            assert h5web_string(signal.attrs, "IMAGE_SUBCLASS") in (None, "IMAGE_TRUECOLOR")
            # nexus/utils.ts findAssociatedDatasets: child names, '.' for none; heatmap/utils.ts getPixelEdgeValues:
            # an axis has at least as many values as its dimension
            for size, name in zip(dims, np.atleast_1d(entity.attrs["axes"])):
                name = name.decode() if isinstance(name, bytes) else name
                assert name == "." or ("/" not in name and entity[name].shape[0] >= size and
                                       entity[name].dtype.kind in "uif")
            return entity.name, "NX RGB"
    default = h5web_string(entity.attrs, "default")                 # getNxDefaultPath
    assert default is not None, f"h5web shows nothing for {path}"
    return h5web_resolve(handle, default if default.startswith("/") else f"{entity.name.rstrip('/')}/{default}")


def test_h5web_opens_a_shard_on_its_first_image_in_colour(stage_one):
    for path in stage_one:
        with h5py.File(path, "r") as handle:
            first = f"/images/{handle['images'].attrs['default']}"
            assert h5web_resolve(handle, "/") == (first, "NX RGB")   # RgbVis: row 0 at the top (flipYAxis: true)
            for key in handle["images"]:
                assert h5web_resolve(handle, f"/images/{key}") == (f"/images/{key}", "NX RGB")
                assert h5web_resolve(handle, f"/images/{key}/refined_rgb")[1] == "RGB"
                refined = handle[f"images/{key}/refined"]
                assert h5web_resolve(handle, refined.name)[1] == "Heatmap"
                # netcdf/utils.ts getValidRange: values outside valid_range (255, ignore) are not coloured
                assert refined.attrs["valid_range"].tolist() == [0, 20]
