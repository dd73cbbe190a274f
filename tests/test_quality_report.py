"""The label-quality report (tools/view_labels.py --report): its numbers against a shard whose per-class records were
written by hand and whose totals are worked out by hand below; shards without records; the page in headless
Chromium."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

from pseudolabel.storage.class_stats import ClassStats
from pseudolabel.storage.shards import LabelRecord, ShardWriter
from tests.fixtures.browser import chromium, load_in_chromium
from tests.fixtures.viewer_shards import ATTRS, VOC, load_tool, make_voc_run

AEROPLANE, PERSON = 1, 15
# image: (size, classes, prompts, masks passing δ, Y0 pixels, refined pixels, changed pixels); None = no records
HAND = {
    "a": ((10, 10), (AEROPLANE, PERSON), (4, 6), (2, 6), (30, 20), (25, 0), 30),   # person lost
    "b": ((10, 20), (AEROPLANE,), (8,), (2,), (50,), (80,), 40),
    "c": ((10, 10), (PERSON,), (0,), (0,), (0,), (0,), 0),                           # person absent from Y0, lost
    "d": ((10, 10), (AEROPLANE,), None, None, None, None, None),                      # an older shard's record
}


@pytest.fixture
def hand_shards(tmp_path):
    directory = tmp_path / "shards"
    directory.mkdir()
    with ShardWriter(directory / "shard-r000-00000.h5", VOC, ATTRS) as writer:
        for image_id, (size, classes, prompts, accepted, y0, refined, changed) in HAND.items():
            stats = None if prompts is None else ClassStats(classes, prompts, accepted, y0, refined, changed)
            labels = np.zeros(size, np.uint8)
            writer.write(LabelRecord(image_id=image_id, refined=labels, initial=labels,
                                     loc_maps_lowres=np.zeros((len(classes), 1, 2), np.float32),
                                     loc_class_ids=classes, class_ids=classes, size=size, class_stats=stats))
    return directory


class Tables(HTMLParser):
    """Rows of every table (cell texts), keyed by the row's data-class for the per-class table."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.classes, self._row, self._cell, self._class = [], {}, None, None, None
        self.panels, self.ids = [], set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "tr":
            self._row, self._class = [], attrs.get("data-class")
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "figure" and "panel" in attrs.get("class", ""):
            self.panels.append(attrs["data-id"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr":
            self.rows.append(self._row)
            if self._class:
                self.classes[self._class] = self._row
            self._row = None


def test_numbers_against_a_hand_computed_shard(hand_shards, tmp_path):
    assert load_tool("view_labels").main([str(hand_shards), "--report", "--out", str(tmp_path / "q")]) == 0
    numbers = json.loads((tmp_path / "q" / "report.json").read_text())
    # By hand: 4 images, d without records. Tagged pairs a:2 + b:1 + c:1 = 4; lost: a-person, c-person = 2.
    # Changed pixels (30 + 40 + 0) / (100 + 200 + 100). Prompts 4 + 6 + 8 + 0 = 18, passing 2 + 6 + 2 + 0 = 10.
    assert numbers["images"] == 4 and numbers["images_with_records"] == 3 and numbers["images_without_records"] == ["d"]
    assert numbers["tagged_classes"] == 4 and numbers["lost_classes"] == 2 and numbers["lost_rate"] == 0.5
    assert numbers["images_with_a_lost_class"] == 2
    assert numbers["changed_pixel_share"] == pytest.approx(70 / 400)
    assert (numbers["prompts"], numbers["masks_accepted"]) == (18, 10)
    assert numbers["acceptance"] == pytest.approx(10 / 18)
    aeroplane, person = numbers["classes"]
    # aeroplane in a and b: Y0 shares 30/100 and 50/200, refined 25/100 and 80/200; 12 prompts, 4 passing.
    assert (aeroplane["name"], aeroplane["images"], aeroplane["lost"], aeroplane["absent_in_y0"]) == \
        ("aeroplane", 2, 0, 0)
    assert aeroplane["mean_y0_share"] == pytest.approx(0.275) and aeroplane["mean_refined_share"] == pytest.approx(0.325)
    assert (aeroplane["prompts"], aeroplane["masks_accepted"]) == (12, 4)
    assert aeroplane["acceptance"] == pytest.approx(1 / 3)
    # person in a and c: lost in both, absent from c's Y0; Y0 shares 20/100 and 0; 6 prompts, all passing.
    assert (person["name"], person["images"], person["lost"], person["lost_rate"], person["absent_in_y0"]) == \
        ("person", 2, 2, 1.0, 1)
    assert person["mean_y0_share"] == pytest.approx(0.1) and person["mean_refined_share"] == 0
    assert (person["prompts"], person["masks_accepted"], person["acceptance"]) == (6, 6, 1.0)
    # the page shows the same numbers; panels: most lost classes first (a, c: one each; a changed more), then b
    page = Tables((tmp_path / "q" / "report.html").read_text())
    assert page.classes["aeroplane"] == ["aeroplane", "2", "0", "0.0%", "0", "27.5%", "32.5%", "12", "4", "33.3%"]
    assert page.classes["person"] == ["person", "2", "2", "100.0%", "1", "10.0%", "0.0%", "6", "6", "100.0%"]
    overview = {row[0]: row[1] for row in page.rows if len(row) == 2}
    assert overview["lost classes (tagged, absent from the refined label)"] == "2 (50.0%)"
    assert overview["pixels SAM changed (refined label differs from Y0)"] == "17.5%"
    assert overview["SAM prompts / masks that passed δ"] == "18 / 10 (55.6%)"
    assert page.panels == ["a", "c", "b"] and "records-missing" in page.ids
    assert "RANDOM WEIGHTS" in (tmp_path / "q" / "report.html").read_text()


def test_shards_without_records_open_and_the_report_says_so(tmp_path):
    _, shards, _ = make_voc_run(tmp_path)          # written without per-class records, as older shards were
    out = tmp_path / "q"
    assert load_tool("view_labels").main([str(shards), "--report", "--out", str(out)]) == 0
    text = (out / "report.html").read_text()
    assert "4 of 4 image(s) have no per-class records" in text and "<table" not in text
    assert json.loads((out / "report.json").read_text())["images_with_records"] == 0
    assert load_tool("view_labels").main([str(shards), "--report", "--gt", "x", "--out", str(out)]) == 2


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (Debian package 'chromium')")
def test_the_page_renders_in_headless_chromium_without_errors(hand_shards, tmp_path):
    assert load_tool("view_labels").main([str(hand_shards), "--report", "--out", str(tmp_path / "q")]) == 0
    loaded = load_in_chromium(tmp_path / "q" / "report.html")
    assert loaded["problems"] == []
    assert loaded["images"] == 3 + 3           # overview, coverage and acceptance figures; panels of a, b, c
    text = (tmp_path / "q" / "report.html").read_text()
    assert "src=\"http" not in text and "href=\"http" not in text     # self-contained
