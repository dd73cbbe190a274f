"""Boundary bands: hand-computed areas, border modes, the all-classes trick against per-class cv2.erode."""
import cv2
import numpy as np
import pytest

from pseudolabel.evaluation.boundary import label_band, mask_band


def square(top, left, side=30, size=60):
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def blocky_labels(rng, shape=(48, 40), block=8, values=(0, 1, 2, 3, 255)):
    """Random piecewise-constant label map (blocks of random classes), uint8."""
    coarse = rng.choice(values, size=(shape[0] // block + 1, shape[1] // block + 1))
    return np.kron(coarse, np.ones((block, block), int))[: shape[0], : shape[1]].astype(np.uint8)


@pytest.mark.parametrize("border", ["default", "pad"])
def test_interior_square_band_area(border):
    # 30x30 square away from the edge: the 23x23 erosion keeps a (30 - 22)^2 = 8x8 core.
    assert mask_band(square(15, 15), 23, border).sum() == 900 - 8 * 8


def test_edge_square_default_vs_pad():
    corner = square(0, 0)
    # default border: the image edge is not background, the core spans rows/cols 0..18 -> 19x19.
    assert mask_band(corner, 23, "default").sum() == 900 - 19 * 19
    # pad: zero padding makes the edge a boundary, as for an interior square.
    assert mask_band(corner, 23, "pad").sum() == 900 - 8 * 8


@pytest.mark.parametrize("border", ["default", "pad"])
def test_kernel_one_gives_empty_band(border):
    labels = blocky_labels(np.random.default_rng(0))
    assert not label_band(labels, 1, border).any()


@pytest.mark.parametrize("border", ["default", "pad"])
def test_23_kernel_equals_11_iterations_of_3x3(border):
    mask = blocky_labels(np.random.default_rng(1), (70, 64), 6, (0, 1)).astype(np.uint8)
    border_args = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0} if border == "pad" else {}
    iterated = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=11, **border_args).astype(bool)
    expected = mask.astype(bool) & ~iterated
    r = 11  # the equality is claimed away from the border; check the interior, then the whole image
    assert np.array_equal(mask_band(mask, 23, border)[r:-r, r:-r], expected[r:-r, r:-r])
    assert np.array_equal(mask_band(mask, 23, border), expected)


@pytest.mark.parametrize("border", ["default", "pad"])
@pytest.mark.parametrize("kernel", [3, 7, 23])
def test_all_class_bands_equal_per_class_erosion(border, kernel):
    rng = np.random.default_rng(kernel)
    for _ in range(3):
        labels = blocky_labels(rng, block=int(rng.integers(2, 9)))
        on_band = label_band(labels, kernel, border)
        for value in np.unique(labels):
            assert np.array_equal(on_band & (labels == value), mask_band(labels == value, kernel, border))


def test_bad_kernel_and_border_are_rejected():
    labels = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError, match="odd"):
        label_band(labels, 4)
    with pytest.raises(ValueError, match="border"):
        label_band(labels, 3, "reflect")
