"""read_rgb / read_label_png: exact pixels, every conversion warns naming the file, bad files raise clearly."""
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pseudolabel.classes import pascal_palette
from pseudolabel.image_io import ImageReadError, read_label_png, read_rgb, write_label_png

RNG = np.random.default_rng(0)


def _read_without_warning(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_rgb(path)


def test_rgb_png_is_read_exactly_without_warning(tmp_path):
    pixels = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    out = _read_without_warning(tmp_path / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and np.array_equal(out, pixels)


@pytest.mark.parametrize(
    ("name", "make", "expected", "words"),
    [
        ("gray.png", lambda: Image.fromarray(np.full((4, 5), 7, np.uint8)),
         lambda im: np.full((4, 5, 3), 7, np.uint8), "greyscale"),
        ("rgba.png", lambda: Image.fromarray(np.dstack([np.full((3, 3, 3), 9, np.uint8), np.zeros((3, 3), np.uint8)])),
         lambda im: np.full((3, 3, 3), 9, np.uint8), "alpha"),
        ("palette.png", lambda: Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8)).convert("L").convert("P"),
         lambda im: np.asarray(im.convert("RGB")), "palette"),
        ("cmyk.tif", lambda: Image.new("CMYK", (6, 4), (0, 255, 0, 0)),
         lambda im: np.asarray(im.convert("RGB")), "CMYK"),
    ],
)
def test_8bit_conversions_warn_and_match_pil(tmp_path, name, make, expected, words):
    image = make()
    image.save(tmp_path / name)
    with pytest.warns(UserWarning, match=rf"{name}.*{words}"):
        out = read_rgb(tmp_path / name)
    assert out.dtype == np.uint8 and np.array_equal(out, expected(Image.open(tmp_path / name)))


def test_cmyk_jpeg_is_converted(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    with pytest.warns(UserWarning, match="cmyk.jpg: CMYK"):
        out = read_rgb(tmp_path / "cmyk.jpg")
    assert out.shape == (8, 8, 3) and np.all(np.abs(out[4, 4].astype(int) - (255, 0, 0)) <= 3)  # red


@pytest.mark.parametrize(("dtype", "name"), [(np.uint16, "deep.png"), (np.int32, "deep.tif")])
def test_high_bit_depth_is_scaled_by_its_actual_range(tmp_path, dtype, name):
    values = np.array([[1000, 1255], [2020, 3550]], dtype)  # 12-bit-like data in a 16/32-bit container
    Image.fromarray(values).save(tmp_path / name)
    with pytest.warns(UserWarning, match=rf"{name}: I.*scaled from its range \[1000, 3550\]"):
        out = read_rgb(tmp_path / name)
    reference = np.rint((values - 1000) * 255.0 / 2550).astype(np.uint8)
    assert np.array_equal(out, np.repeat(reference[..., None], 3, axis=2))


def test_constant_16bit_image_is_black_not_nan(tmp_path):
    Image.fromarray(np.full((3, 3), 500, np.uint16)).save(tmp_path / "flat.png")
    with pytest.warns(UserWarning):
        assert not read_rgb(tmp_path / "flat.png").any()


def test_truncated_garbage_empty_and_missing_files_raise_naming_the_file(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    for name in ("truncated.jpg", "garbage.jpg", "empty.jpg", "absent.jpg", "folder.jpg"):
        with pytest.raises(ImageReadError, match=rf"{name}: .*(re-download|check the dataset root)") as info:
            read_rgb(tmp_path / name)
        assert info.value.path == str(tmp_path / name)
    assert _read_without_warning(good).shape == (64, 64, 3)


def test_image_read_error_survives_pickling():  # data-loader workers send it to the main process
    error = pickle.loads(pickle.dumps(ImageReadError("/x/a.jpg", "cannot decode")))
    assert (error.path, error.reason, str(error)) == ("/x/a.jpg", "cannot decode", "/x/a.jpg: cannot decode")


def test_label_png_roundtrip_keeps_indices_not_colours(tmp_path):
    labels = RNG.integers(0, 21, (6, 9)).astype(np.uint8)
    labels[0] = 255
    write_label_png(tmp_path / "l.png", labels, pascal_palette())
    assert Image.open(tmp_path / "l.png").mode == "P"
    out = read_label_png(tmp_path / "l.png")
    assert out.dtype == np.uint8 and np.array_equal(out, labels)
    Image.fromarray(labels).save(tmp_path / "gray.png")  # mode L
    assert np.array_equal(read_label_png(tmp_path / "gray.png"), labels)


def test_label_png_rejects_colour_missing_and_corrupt_files(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match=r"rgb.png: .*palette.*got mode RGB"):
        read_label_png(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="absent.png: label file does not exist"):
        read_label_png(tmp_path / "absent.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageReadError, match="bad.png: cannot decode"):
        read_label_png(tmp_path / "bad.png")


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("size", [(6, 6), (8, 5)])
def test_read_rgb_applies_exif_orientation(tmp_path, orientation, size):
    """The image is read as a viewer shows it: PIL's own transpose for each EXIF orientation."""
    stored = np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3)
    exif = Image.Exif()
    exif[274] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(stored).save(path, exif=exif)
    turn = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}[orientation]
    np.testing.assert_array_equal(read_rgb(path), turn(stored))


def test_env_stamp_hashes_contents_not_paths():
    """Moving the checkout or sharing CEP_VENV keeps the stamp: no path goes into the hash."""
    text = (Path(__file__).resolve().parents[1] / "tools" / "_env.sh").read_text()
    line = next(l for l in text.splitlines() if l.startswith("WANT="))
    assert "sha256sum \"$REPO_ROOT" not in line and line.startswith('WANT="$(cat ')
