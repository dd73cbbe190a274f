"""A static HTML contact sheet of inspection panels: one self-contained file, no server, no external scripts or CSS.

Each entry is ``<figure class="entry" data-id=... data-score=... data-foreground=...>`` with the panel (``<img>`` by
relative path, so the report folder can be copied as a whole), the image id, its classes with their coverage and, when
GT was given, the per-image IoU of the refined label. Entries are written in ascending score order when scores exist
(worst first), else in id order; a few lines of inline JavaScript re-sort them.
"""
from __future__ import annotations

import html
import math
import os
from urllib.parse import quote
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ReportEntry:
    image_id: str
    panel: str                               # path of the panel PNG (made relative to the HTML file)
    coverage: dict[str, float] = field(default_factory=dict)  # image class -> share of the refined label's pixels
    score: float | None = None               # per-image IoU (percent) of the refined label vs GT
    notes: list[str] = field(default_factory=list)  # shown in the caption, e.g. "photo not found"

    @property
    def foreground(self) -> float:
        """Fraction of the pixels labelled with one of the image's classes."""
        return sum(self.coverage.values())


def _has_score(entry: ReportEntry) -> bool:
    return entry.score is not None and not math.isnan(entry.score)


def sort_entries(entries: list[ReportEntry]) -> list[ReportEntry]:
    """Ascending score (entries without a score last, by id) when any entry has a score; else by id."""
    if any(_has_score(e) for e in entries):
        return sorted(entries, key=lambda e: (not _has_score(e), e.score if _has_score(e) else 0.0, e.image_id))
    return sorted(entries, key=lambda e: e.image_id)


STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; }
header { margin-bottom: 1em; }
.warn { background: #c00; color: #fff; padding: 0.2em 0.5em; font-weight: bold; }
#sheet { display: flex; flex-direction: column; gap: 1em; }
figure.entry { margin: 0; padding: 0.5em; background: #fff; border: 1px solid #ddd; }
figure.entry img { max-width: 100%; height: auto; image-rendering: pixelated; }
figcaption { font-size: 0.9em; margin-top: 0.3em; }
.score { font-weight: bold; }
button { margin-right: 0.5em; }
"""

SCRIPT = """
function sortEntries(key, ascending) {
  var sheet = document.getElementById('sheet');
  var items = Array.prototype.slice.call(sheet.querySelectorAll('figure.entry'));
  items.sort(function (a, b) {
    var x, y;
    if (key !== 'id') {
      x = parseFloat(a.getAttribute('data-' + key)); y = parseFloat(b.getAttribute('data-' + key));
      if (isNaN(x) && isNaN(y)) { return 0; }
      if (isNaN(x)) { return 1; }
      if (isNaN(y)) { return -1; }
      return ascending ? x - y : y - x;
    }
    x = a.getAttribute('data-id'); y = b.getAttribute('data-id');
    return ascending ? (x < y ? -1 : x > y ? 1 : 0) : (x < y ? 1 : x > y ? -1 : 0);
  });
  items.forEach(function (item) { sheet.appendChild(item); });
}
"""


def render_html(entries: list[ReportEntry], title: str = "Pseudo labels", base_dir: str | Path | None = None,
                random_weights: bool = False, description: str = "") -> str:
    """The HTML text; panel paths are made relative to ``base_dir`` (the folder of the HTML file) when given."""
    entries = sort_entries(list(entries))
    scored = any(_has_score(e) for e in entries)
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{esc(title)}</title>", f"<style>{STYLE}</style>", f"<script>{SCRIPT}</script>", "</head>",
             "<body>", "<header>", f"<h1>{esc(title)}</h1>"]
    if random_weights:
        parts.append('<p><span class="warn">RANDOM WEIGHTS</span> these labels were produced with random '
                     "(untrained) model weights and say nothing about the method.</p>")
    if description:
        parts.append(f"<p>{esc(description)}</p>")
    summary = f"{len(entries)} image(s); the % after a class is its share of the refined label's pixels"
    if scored:
        values = [e.score for e in entries if _has_score(e)]
        summary += f"; refined-vs-GT IoU of listed images: mean {sum(values) / len(values):.1f}, " \
                   f"min {min(values):.1f}, max {max(values):.1f}; sorted worst first"
    parts.append(f"<p>{esc(summary)}</p>")
    parts.append("<p>Sort: ")
    if scored:
        parts.append('<button onclick="sortEntries(\'score\', true)">IoU ascending</button>'
                     '<button onclick="sortEntries(\'score\', false)">IoU descending</button>')
    parts.append('<button onclick="sortEntries(\'foreground\', true)">coverage ascending</button>'
                 '<button onclick="sortEntries(\'id\', true)">image id</button></p>')
    parts.append("</header>")
    parts.append('<main id="sheet">')
    for entry in entries:
        panel = str(entry.panel)
        if base_dir is not None and os.path.isabs(panel):
            panel = os.path.relpath(panel, base_dir)
        panel = quote(Path(panel).as_posix())
        score_attr = f"{entry.score:.4f}" if _has_score(entry) else ""
        classes = ", ".join(f"{name} {100 * share:.1f}%" for name, share in entry.coverage.items())
        caption = f"<b>{esc(entry.image_id)}</b> — {esc(classes or 'no foreground class')}"
        if scored:
            caption += f' — <span class="score">IoU {f"{entry.score:.2f}" if score_attr else "n/a"}</span>'
        for note in entry.notes:
            caption += f' — <span class="note">{esc(note)}</span>'
        parts.append(f'<figure class="entry" data-id="{esc(entry.image_id, quote=True)}" '
                     f'data-score="{score_attr}" data-foreground="{100 * entry.foreground:.4f}">'
                     f'<img src="{esc(panel, quote=True)}" alt="{esc(entry.image_id, quote=True)}" loading="lazy">'
                     f"<figcaption>{caption}</figcaption></figure>")
    parts += ["</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def write_html(entries: list[ReportEntry], path: str | Path, **options) -> Path:
    """Write the contact sheet to ``path`` (panel paths relative to its folder)."""
    path = Path(path)
    path.write_text(render_html(entries, base_dir=path.parent.resolve(), **options), encoding="utf-8")
    return path
