"""The static HTML contact sheet (pseudolabel.viewer.html_report), parsed with html.parser, alone and from
tools/view_labels.py --html on small real shards."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from pseudolabel.viewer.html_report import ReportEntry, render_html, write_html
from pseudolabel.storage.shards import open_shards
from pseudolabel.viewer.visualize import class_coverage, image_iou
from tests.fixtures.viewer_shards import VOC, load_tool, make_voc_run


class ContactSheet(HTMLParser):
    """Entries (``figure`` data attributes), image sources, sort buttons and anything loaded from outside."""

    def __init__(self, text: str):
        super().__init__()
        self.entries: list[dict] = []
        self.images: list[str] = []
        self.sort_keys: list[str] = []
        self.external: list[dict] = []
        self.text = text
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure" and "data-id" in attrs:
            self.entries.append(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "button":
            self.sort_keys += re.findall(r"sortEntries\('(\w+)'", attrs.get("onclick", ""))
        if (tag == "script" and "src" in attrs) or tag in ("link", "iframe"):
            self.external.append(attrs)

    @property
    def ids(self) -> list[str]:
        return [e["data-id"] for e in self.entries]


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    return make_voc_run(tmp_path_factory.mktemp("html"))


def test_entries_sorted_by_score_escaped_and_self_contained():
    entries = [ReportEntry("b", "b.png", {"cat": 0.25}, 50.0), ReportEntry("a<&>\"", "a.png", {}, 10.0),
               ReportEntry("c", "c.png", {"dog": 0.1, "person": 0.3}, None, ["photo not found"])]
    sheet = ContactSheet(render_html(entries, random_weights=True))
    assert sheet.ids == ["a<&>\"", "b", "c"]                                  # ascending score, unscored last
    assert [e["data-score"] for e in sheet.entries] == ["10.0000", "50.0000", ""]
    assert [float(e["data-foreground"]) for e in sheet.entries] == pytest.approx([0.0, 25.0, 40.0])
    assert sheet.images == ["a.png", "b.png", "c.png"] and not sheet.external
    assert "RANDOM WEIGHTS" in sheet.text and "photo not found" in sheet.text and "person 30.0%" in sheet.text
    # every sort button sorts by the id or by a data attribute that every entry carries
    assert set(sheet.sort_keys) == {"score", "foreground", "id"}
    assert all(f"data-{k}" in e for k in sheet.sort_keys if k != "id" for e in sheet.entries)


def test_without_scores_entries_are_in_id_order():
    entries = [ReportEntry(i, f"{i}.png", {"cat": 0.5}) for i in ("z", "m", "a")]
    sheet = ContactSheet(render_html(entries))
    assert sheet.ids == ["a", "m", "z"] and all(e["data-score"] == "" for e in sheet.entries)
    assert "score" not in sheet.sort_keys and "RANDOM WEIGHTS" not in sheet.text


def test_panel_paths_are_relative_to_the_report(tmp_path):
    (tmp_path / "panels").mkdir()
    path = write_html([ReportEntry("a b", str(tmp_path / "panels" / "a b.png"))], tmp_path / "index.html")
    assert ContactSheet(path.read_text()).images == ["panels/a%20b.png"]


def test_view_labels_html_worst_first_with_scores_and_coverage(voc_run, tmp_path):
    root, shard_dir, dataset = voc_run
    out = tmp_path / "viz"
    assert load_tool("view_labels").main([str(shard_dir), "--out", str(out), "--worst", "3", "--gt", "voc:train",
                                          "--data-root", str(root), "--html", "--tile-height", "32"]) == 0
    shards = open_shards(shard_dir)
    scores = {i: image_iou(dataset.read_gt(i), shards[i].refined, VOC.num_classes) for i in shards}
    expected = sorted(scores, key=scores.get)[:3]
    sheet = ContactSheet((out / "index.html").read_text())
    assert sheet.ids == expected                                                # worst first
    got = [float(e["data-score"]) for e in sheet.entries]
    assert got == sorted(got) and got == pytest.approx([scores[i] for i in expected], abs=1e-4)
    for entry in sheet.entries:
        record = shards[entry["data-id"]]
        foreground = 100 * sum(class_coverage(record.refined, record.class_ids).values())
        assert float(entry["data-foreground"]) == pytest.approx(foreground, abs=1e-3)
    assert all((out / src).is_file() for src in sheet.images) and not sheet.external
    assert "RANDOM WEIGHTS" in sheet.text                                        # the test shards say so


def test_view_labels_html_without_gt(voc_run, tmp_path):
    root, shard_dir, dataset = voc_run
    out = tmp_path / "viz"
    assert load_tool("view_labels").main([str(shard_dir), "--out", str(out), "--data-root", str(root), "--html",
                                          "--tile-height", "32"]) == 0
    sheet = ContactSheet((out / "index.html").read_text())
    assert sheet.ids == sorted(dataset.ids()) and all(e["data-score"] == "" for e in sheet.entries)
    assert len(sheet.images) == len(list(out.glob("*.png"))) == len(dataset)
