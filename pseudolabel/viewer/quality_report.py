"""The label-quality report without ground truth: one self-contained HTML page (plus its numbers as JSON) from stage
one's per-class records (``tools/view_labels.py SHARDS --report --out DIR``; docs/viewing.md).

It shows per-class tables and histograms (matplotlib, embedded as base64 PNGs) of coverage and SAM acceptance, the
rate of lost classes (tagged, absent from the refined label), the share of pixels SAM changed, and panels of the images
with the most lost classes, then the most change. Shards written before stage one kept these records open as usual;
the report then says the records are missing.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pseudolabel.exits import prepare_output_dir
from pseudolabel.storage.class_stats import ClassStats
from pseudolabel.storage.shards import ShardSet

PANELS = 20
HISTOGRAM_BINS = np.linspace(0.0, 1.0, 21)


@dataclass
class ClassQuality:
    """One class over every image tagged with it."""

    name: str
    images: int = 0                   # images tagged with the class
    lost: int = 0                     # ... whose refined label has none of it
    absent_in_y0: int = 0             # ... whose Y0 has none of it (so it got no prompt)
    prompts: int = 0
    masks_accepted: int = 0
    y0_shares: list[float] = field(default_factory=list)        # per tagged image: class pixels / image pixels
    refined_shares: list[float] = field(default_factory=list)
    acceptances: list[float] = field(default_factory=list)      # per tagged image with prompts: accepted / prompts

    @property
    def lost_rate(self) -> float:
        return self.lost / self.images

    @property
    def acceptance(self) -> float | None:
        """SAM masks that passed δ per prompt, over all the class's prompts (None without prompts)."""
        return self.masks_accepted / self.prompts if self.prompts else None

    def to_json(self) -> dict:
        return {"name": self.name, "images": self.images, "lost": self.lost, "lost_rate": self.lost_rate,
                "absent_in_y0": self.absent_in_y0, "prompts": self.prompts, "masks_accepted": self.masks_accepted,
                "acceptance": self.acceptance, "mean_y0_share": float(np.mean(self.y0_shares)),
                "mean_refined_share": float(np.mean(self.refined_shares))}


@dataclass
class ImageQuality:
    image_id: str
    changed_share: float              # pixels whose refined label differs from Y0 / image pixels
    lost: list[str]                   # names of the image's lost classes


@dataclass
class QualitySummary:
    """The report's numbers, from the records of every image."""

    images: int = 0
    missing: list[str] = field(default_factory=list)            # ids whose shard holds no records
    classes: dict[int, ClassQuality] = field(default_factory=dict)
    per_image: list[ImageQuality] = field(default_factory=list)
    changed_pixels: int = 0
    pixels: int = 0                   # pixels of the images with records

    @classmethod
    def compute(cls, records: Iterable[tuple[str, tuple[int, int], ClassStats | None]],
                class_names) -> "QualitySummary":
        """From ``(image id, (height, width), record or None)`` per image."""
        summary = cls()
        for image_id, (height, width), stats in records:
            summary.images += 1
            if stats is None:
                summary.missing.append(image_id)
                continue
            pixels = height * width
            summary.pixels += pixels
            summary.changed_pixels += stats.changed_pixels
            for c, prompts, accepted, y0, refined in zip(stats.class_ids, stats.prompts, stats.masks_accepted,
                                                         stats.y0_pixels, stats.refined_pixels):
                quality = summary.classes.setdefault(c, ClassQuality(class_names[c]))
                quality.images += 1
                quality.lost += refined == 0
                quality.absent_in_y0 += y0 == 0
                quality.prompts += prompts
                quality.masks_accepted += accepted
                quality.y0_shares.append(y0 / pixels)
                quality.refined_shares.append(refined / pixels)
                if prompts:
                    quality.acceptances.append(accepted / prompts)
            summary.per_image.append(ImageQuality(image_id, stats.changed_pixels / pixels,
                                                  [class_names[c] for c, gone in zip(stats.class_ids, stats.lost)
                                                   if gone]))
        summary.classes = dict(sorted(summary.classes.items()))
        return summary

    @property
    def recorded(self) -> int:
        return self.images - len(self.missing)

    def total(self, count: str) -> int:
        """A :class:`ClassQuality` count summed over the classes (``images``: the tagged image-class pairs)."""
        return sum(getattr(q, count) for q in self.classes.values())

    def most_affected(self, count: int = PANELS) -> list[ImageQuality]:
        """The images with the most lost classes, then the most pixels changed by SAM."""
        return sorted(self.per_image, key=lambda i: (-len(i.lost), -i.changed_share, i.image_id))[:count]

    def to_json(self) -> dict:
        tagged, lost, prompts = self.total("images"), self.total("lost"), self.total("prompts")
        return {"images": self.images, "images_with_records": self.recorded, "images_without_records": self.missing,
                "tagged_classes": tagged, "lost_classes": lost, "lost_rate": lost / tagged if tagged else None,
                "images_with_a_lost_class": sum(bool(i.lost) for i in self.per_image),
                "changed_pixel_share": self.changed_pixels / self.pixels if self.pixels else None,
                "prompts": prompts, "masks_accepted": self.total("masks_accepted"),
                "acceptance": self.total("masks_accepted") / prompts if prompts else None,
                "classes": [q.to_json() for q in self.classes.values()],
                "per_image": [asdict(i) for i in self.per_image]}


# -- figures ------------------------------------------------------------------------------------------------------
def _png_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_data_uri(rgb: np.ndarray) -> str:
    """An RGB array as an embedded PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _overview_figure(summary: QualitySummary) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    y0 = [s for q in summary.classes.values() for s in q.y0_shares]
    refined = [s for q in summary.classes.values() for s in q.refined_shares]
    axes[0].hist([y0, refined], bins=HISTOGRAM_BINS, label=["Y0", "refined"], color=["#999999", "#1f77b4"])
    axes[0].set(title="coverage of each tagged class", xlabel="share of the image's pixels", ylabel="image-classes")
    axes[0].legend()
    acceptances = [a for q in summary.classes.values() for a in q.acceptances]
    axes[1].hist(acceptances, bins=HISTOGRAM_BINS, color="#2ca02c")
    axes[1].set(title="SAM acceptance", xlabel="masks passing δ / prompts", ylabel="image-classes with prompts")
    axes[2].hist([i.changed_share for i in summary.per_image], bins=HISTOGRAM_BINS, color="#d62728")
    axes[2].set(title="pixels SAM changed", xlabel="share of the image's pixels", ylabel="images")
    uri = _png_data_uri(figure)
    plt.close(figure)
    return uri


def _per_class_figure(summary: QualitySummary, kind: str) -> str:
    """Small multiples, one histogram per class: ``coverage`` (Y0 and refined share) or ``acceptance``."""
    plt = _pyplot()
    classes = list(summary.classes.values())
    columns = min(5, len(classes))
    rows = math.ceil(len(classes) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 1.9 * rows), squeeze=False,
                                constrained_layout=True)
    for axis, quality in zip(axes.ravel(), classes):
        if kind == "coverage":
            axis.hist([quality.y0_shares, quality.refined_shares], bins=HISTOGRAM_BINS, color=["#999999", "#1f77b4"])
        else:
            axis.hist(quality.acceptances, bins=HISTOGRAM_BINS, color="#2ca02c")
        axis.set_title(f"{quality.name} ({quality.images})", fontsize=9)
        axis.tick_params(labelsize=7)
    for axis in axes.ravel()[len(classes):]:
        axis.axis("off")
    uri = _png_data_uri(figure)
    plt.close(figure)
    return uri


# -- HTML ---------------------------------------------------------------------------------------------------------
STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; max-width: 1400px; }
.warn { background: #c00; color: #fff; padding: 0.2em 0.5em; font-weight: bold; }
.missing { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; height: auto; }
figure { margin: 0 0 1em 0; padding: 0.5em; background: #fff; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; }
"""


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list], row_ids: list[str] | None = None) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        attr = f' data-class="{esc(row_ids[index], quote=True)}"' if row_ids else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{esc(str(cell))}</td>" for cell in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_report(summary: QualitySummary, panels: dict[str, str], title: str, random_weights: bool = False,
                  settings: str = "", refinement: bool = True) -> str:
    """The HTML page; ``panels`` maps image ids (of :meth:`QualitySummary.most_affected`) to embedded PNG URIs."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{esc(title)}</title>",
             f"<style>{STYLE}</style>", "</head>", "<body>", f"<h1>{esc(title)}</h1>"]
    if random_weights:
        parts.append('<p><span class="warn">RANDOM WEIGHTS</span> these labels were produced with random (untrained) '
                     "model weights; the numbers below say nothing about the method.</p>")
    if settings:
        parts.append(f"<p>{esc(settings)}</p>")
    if summary.missing:
        parts.append(f'<p class="missing" id="records-missing">{len(summary.missing)} of {summary.images} image(s) '
                     "have no per-class records: their shards were written before stage one kept them. Rerun stage "
                     "one into a new folder (or with --overwrite) to get them for every image.</p>")
    if not summary.recorded:
        parts += ["</body>", "</html>", ""]
        return "\n".join(parts)
    overview = summary.to_json()
    rows = [["images with records", summary.recorded],
            ["tagged classes (image-class pairs)", overview["tagged_classes"]],
            ["lost classes (tagged, absent from the refined label)",
             f"{overview['lost_classes']} ({_percent(overview['lost_rate'])})"],
            ["images with a lost class", overview["images_with_a_lost_class"]],
            ["pixels SAM changed (refined label differs from Y0)", _percent(overview["changed_pixel_share"])],
            ["SAM prompts / masks that passed δ",
             f"{overview['prompts']} / {overview['masks_accepted']} ({_percent(overview['acceptance'])})"
             if refinement else "SAM refinement was off"]]
    parts += ["<h2>Overview</h2>", f'<div id="overview">{_table(["", "value"], rows)}</div>']
    header = ["class", "images", "lost", "lost rate", "absent from Y0", "mean Y0 share", "mean refined share",
              "prompts", "masks passing δ", "acceptance"]
    class_rows = [[q.name, q.images, q.lost, _percent(q.lost_rate), q.absent_in_y0, _percent(np.mean(q.y0_shares)),
                   _percent(np.mean(q.refined_shares)), q.prompts, q.masks_accepted, _percent(q.acceptance)]
                  for q in summary.classes.values()]
    parts += ["<h2>Per class</h2>",
              "<p>Shares are a class's pixels over the image's pixels, averaged over the images tagged with it. "
              "Acceptance is the SAM masks that passed the δ filter per prompt point: a class whose masks rarely pass "
              "suggests a lower δ (or a containment filter), one that passes everything a higher δ.</p>",
              f'<div id="classes">{_table(header, class_rows, [q.name for q in summary.classes.values()])}</div>',
              "<h2>Histograms</h2>",
              f'<figure><img src="{_overview_figure(summary)}" alt="overview histograms"><figcaption>All classes: '
              "coverage in Y0 and in the refined label, SAM acceptance, pixels changed per image.</figcaption></figure>",
              f'<figure><img src="{_per_class_figure(summary, "coverage")}" alt="coverage per class"><figcaption>'
              "Coverage per class (grey Y0, blue refined; number of images in brackets).</figcaption></figure>"]
    if refinement and overview["prompts"]:
        parts.append(f'<figure><img src="{_per_class_figure(summary, "acceptance")}" alt="acceptance per class">'
                     "<figcaption>SAM acceptance per class (masks passing δ / prompts, per image).</figcaption>"
                     "</figure>")
    chosen = summary.most_affected()
    parts.append(f"<h2>The {len(chosen)} images with the most lost classes, then the most change</h2>")
    for item in chosen:
        lost = ", ".join(item.lost) or "none"
        image = (f'<img src="{panels[item.image_id]}" alt="{esc(item.image_id, quote=True)}">'
                 if item.image_id in panels else "")
        parts.append(f'<figure class="panel" data-id="{esc(item.image_id, quote=True)}">{image}<figcaption>'
                     f"<b>{esc(item.image_id)}</b> — lost: {esc(lost)} — changed by SAM: "
                     f"{_percent(item.changed_share)}</figcaption></figure>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def describe_settings(attrs: dict) -> tuple[str, bool]:
    """The stage-one settings the report's numbers depend on (from the shard attributes), and whether SAM refinement
    was on."""
    refine = (attrs.get("config") or {}).get("refine") or {}
    enabled = bool(refine.get("enabled", True))
    if not enabled:
        return "SAM refinement off: the refined label is Y0.", False
    keys = ("sam_model", "grid_size", "delta", "filter_metric", "filter_scope", "mask_select", "merge")
    return "Stage one: " + ", ".join(f"{key} {refine[key]}" for key in keys if key in refine) + ".", True


def write_report(shards: ShardSet, out: str | Path, image_ids: list[str] | None = None,
                 photo: Callable[[str], np.ndarray | None] | None = None, tile_height: int = 160) -> tuple[Path, Path]:
    """Write ``<out>/report.html`` (self-contained) and ``<out>/report.json`` for the images of ``shards`` (or
    ``image_ids``); ``photo(image_id)`` gives the photo of a panel (None: a placeholder tile)."""
    from pseudolabel.viewer.visualize import render_panel

    attrs = shards.attrs
    ids = sorted(shards) if image_ids is None else list(image_ids)
    records = ((i, shards.image_size(i), shards.read_class_stats(i)) for i in ids)
    summary = QualitySummary.compute(tqdm(records, total=len(ids), desc="records", unit="img", leave=False,
                                          disable=len(ids) < 500), shards.class_set.classes)
    random_weights = bool(attrs.get("random_weights", False))
    settings, refinement = describe_settings(attrs)
    title = f"Label quality: {attrs.get('dataset')}:{attrs.get('split')} ({shards.directory.name})"
    panels = {item.image_id: image_data_uri(render_panel(shards[item.image_id], shards.class_set,
                                                         photo=photo(item.image_id) if photo else None,
                                                         random_weights=random_weights, tile_height=tile_height))
              for item in summary.most_affected()}
    out = Path(out)
    prepare_output_dir(out)
    page = out / "report.html"
    page.write_text(render_report(summary, panels, title, random_weights, settings, refinement), encoding="utf-8")
    numbers = out / "report.json"
    numbers.write_text(json.dumps({"title": title, "shards": str(shards.directory.resolve()),
                                   "random_weights": random_weights, "settings": settings, **summary.to_json()},
                                  indent=1))
    return page, numbers
