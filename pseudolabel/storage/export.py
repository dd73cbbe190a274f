"""Export of stage-one labels into the layouts other trainers and tools read (``tools/export_labels.py``,
``cep-export``; docs/export.md).

- ``voc`` layout: ``<out>/SegmentationClassPseudo/<id>.png`` and the id list ``<out>/<split>.txt``, to use in place
  of VOC's ``SegmentationClassAug`` (DeepLab, WeCLIP, CLIP-ES, a stock mmseg VOC pipeline);
- ``flat`` layout: ``<out>/<id>.png`` and the same id list;
- ``png_mode``: ``palette`` PNGs in the PASCAL colours (VOC's ``SegmentationClass``; PIL and mmseg read the indices,
  imageio and OpenCV the colours) or ``index`` PNGs, 8-bit single-channel (SBD's ``SegmentationClassAug``; every
  reader gets the indices). 255 = ignore is kept in both;
- ``coco_rle`` adds ``<out>/<split>_coco_rle.json``, one COCO-style RLE mask per image and class
  (:mod:`pseudolabel.storage.coco_rle`), for annotation tools;
- ``maps="clipes"`` adds CLIP-ES's localization maps, ``<out>/clipes_<voc12|coco14|class set>/<id>.npy``: a dict
  ``{"keys": int64 (K,) 0-based foreground class indices, "attn_highres": float16 (K, H, W)}`` saved with ``np.save``,
  exactly what CLIP-ES's ``generate_cams_voc12.py`` writes and its ``eval_cam.py`` / ``eval_cam_with_crf.py`` read.

Each file is written under a temporary name and renamed, so an interrupted export never leaves a half-written file
under a final name; a rerun writes only what is missing. ``<out>/export.json`` records what was exported, and a rerun
onto other labels (other shards, kind or layout) is refused unless ``overwrite``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pseudolabel.classes import pascal_palette
from pseudolabel.cli_options import DictConfig, add_dataclass_options, config_from_options
from pseudolabel.datasets.custom import find_image
from pseudolabel.exits import OutputError, output_error, prepare_output_dir, tool_main, worker_pool
from pseudolabel.image_io import write_label_png
from pseudolabel.storage.atomic import atomic_write
from pseudolabel.storage.coco_rle import category_ids, class_masks, coco_document
from pseudolabel.storage.format import LABEL_KINDS, REFINED
from pseudolabel.storage.shards import ShardError, ShardSet, open_shards

LAYOUTS = ("voc", "flat")
PNG_MODES = ("palette", "index")
MAP_FORMATS = ("clipes",)
VOC_LABEL_DIR = "SegmentationClassPseudo"
RECORD = "export.json"
RECORD_FORMAT = "cep-pseudolabel-export"
# CLIP-ES's eval scripts pick VOC or COCO from the words 'voc' / 'coco' in their --cam_out_dir path.
CLIPES_DATASET_TAGS = {"voc": "voc12", "coco": "coco14"}
# zlib level 1 encodes a VOC label map about twice as fast as PIL's default level 6 (bench/bench_export.py), for files
# of a few KB that are larger (5.7 against 3.2 KB there); every level decodes to the same labels.
PNG_COMPRESS_LEVEL = 1
# The exported files are not fsynced one by one (atomic_write's durable=False): an fsync costs as much as encoding
# the file. A file emptied by a power loss is rewritten by the next run, which redoes every empty file.
IDENTITY_KEYS = ("shards", "shards_config", "kind", "layout", "png_mode")
IDENTITY_DEFAULTS = {"png_mode": "palette"}   # what an export.json written without the key holds


class ExportError(ValueError):
    """The export cannot run as asked; the message names the file or option and the fix."""


@dataclass
class ExportConfig(DictConfig):
    """Options of an export (one command-line option per field)."""

    kind: str = field(default=REFINED, metadata={
        "help": "which labels: the SAM-refined ones or the Skip-CAM initial label Y0", "choices": LABEL_KINDS})
    layout: str = field(default="voc", metadata={
        "help": f"voc: <out>/{VOC_LABEL_DIR}/<id>.png + <out>/<split>.txt; flat: <out>/<id>.png + <out>/<split>.txt",
        "choices": LAYOUTS})
    png_mode: str = field(default="palette", metadata={
        "help": "palette: 8-bit palette PNGs in the VOC colours (like VOC's SegmentationClass; PIL and mmseg read the "
                "class indices, imageio and OpenCV read colours); index: 8-bit single-channel PNGs of the class "
                "indices (SBD's SegmentationClassAug format; what WeCLIP, CLIP-ES and OpenCV-based loaders need)",
        "choices": PNG_MODES})
    coco_rle: bool = field(default=False, metadata={
        "help": "also write <out>/<split>_coco_rle.json: COCO-style RLE masks, one per image and class, for "
                "annotation tools (CVAT, FiftyOne, Label Studio)"})
    maps: str | None = field(default=None, metadata={
        "help": "also write the localization maps in this format: clipes = CLIP-ES .npy files (keys, attn_highres)",
        "choices": MAP_FORMATS})
    workers: int = field(default=min(4, os.cpu_count() or 1), metadata={
        "help": "processes writing files (1: in this process)", "min": 1})
    overwrite: bool = field(default=False, metadata={
        "help": "rewrite every file, also over an export of other labels; without it, finished files are kept and "
                "a rerun resumes"})


@dataclass(frozen=True)
class ExportPaths:
    """Where each exported file goes."""

    out: Path
    layout: str
    maps_dir: Path | None
    split: str
    coco_rle: bool = False

    @classmethod
    def plan(cls, out: str | Path, config: ExportConfig, attrs: dict) -> "ExportPaths":
        out = Path(out)
        maps_dir = None
        if config.maps == "clipes":
            class_set = attrs["class_set"].name
            maps_dir = out / f"clipes_{CLIPES_DATASET_TAGS.get(class_set, class_set)}"
        return cls(out, config.layout, maps_dir, str(attrs.get("split") or "ids"), config.coco_rle)

    @property
    def label_dir(self) -> Path:
        return self.out / VOC_LABEL_DIR if self.layout == "voc" else self.out

    @property
    def id_list(self) -> Path:
        return self.out / f"{self.split}.txt"

    @property
    def coco_json(self) -> Path | None:
        return self.out / f"{self.split}_coco_rle.json" if self.coco_rle else None

    def label(self, image_id: str) -> Path:
        return self.label_dir / f"{image_id}.png"

    def maps(self, image_id: str) -> Path:
        return self.maps_dir / f"{image_id}.npy"

    def targets(self, image_id: str) -> list[Path]:
        return [self.label(image_id)] + ([self.maps(image_id)] if self.maps_dir else [])


def _finished(path: Path) -> bool:
    """A file written by an earlier run (atomic rename, so complete unless a power loss emptied it)."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def clipes_maps(loc_class_ids, loc_maps: np.ndarray) -> dict[str, np.ndarray]:
    """The dict CLIP-ES saves per image: 0-based foreground indices and the full-resolution maps in float16."""
    return {"keys": np.asarray(loc_class_ids, np.int64) - 1, "attn_highres": np.asarray(loc_maps, np.float16)}


@dataclass
class ImageExport:
    """What exporting one image did: whether it wrote a file, and its RLE masks when asked for (else None)."""

    written: bool
    masks: list[dict] | None = None


@dataclass
class ImageExporter:
    """Writes the missing files of one image (picklable: worker processes get one copy each)."""

    shards: ShardSet
    kind: str
    paths: ExportPaths
    overwrite: bool
    palette: np.ndarray | None = field(default_factory=pascal_palette)   # None: index PNGs
    category_of: list[int] | None = None                                   # class -> COCO category id (coco_rle)

    def __call__(self, image_id: str) -> ImageExport:
        label_path = self.paths.label(image_id)
        labels = None
        try:
            done = ImageExport(written=False)
            if self.overwrite or not _finished(label_path):
                labels = self.shards.read_label(image_id, self.kind)
                label_path.parent.mkdir(parents=True, exist_ok=True)   # ids may name subfolders
                atomic_write(label_path, lambda h: write_label_png(h, labels, self.palette, PNG_COMPRESS_LEVEL),
                             durable=False)
                done.written = True
            if self.paths.maps_dir is not None and (self.overwrite or not _finished(self.paths.maps(image_id))):
                record = self.shards[image_id]
                maps = clipes_maps(record.loc_class_ids, record.loc_maps)
                maps_path = self.paths.maps(image_id)
                maps_path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(maps_path, lambda h: np.save(h, maps, allow_pickle=True), durable=False)
                done.written = True
            if self.category_of is not None:
                labels = self.shards.read_label(image_id, self.kind) if labels is None else labels
                done.masks = class_masks(labels, self.category_of)
            return done
        except ShardError:
            raise
        except (OSError, KeyError, ValueError) as error:
            if isinstance(error, OSError) and (unwritable := output_error(error)):
                raise unwritable from None
            raise ExportError(f"image '{image_id}' of {self.shards.directory}: {error}. Files finished so far are "
                              "kept; check the shards with tools/check_shards.py, then rerun to resume") from None


_WORKER: ImageExporter | None = None   # the exporter of a worker process (set once by its initializer)


def _start_worker(exporter: ImageExporter) -> None:
    global _WORKER
    _WORKER = exporter


def _export_in_worker(image_id: str) -> ImageExport:
    return _WORKER(image_id)


def _run(exporter: ImageExporter, image_ids: list[str], workers: int, progress: bool) -> list[ImageExport]:
    """Export every image (results in the order of ``image_ids``), in ``workers`` processes when > 1 (the exporter
    goes to each worker once, through the pool's initializer, not with every task)."""
    bar = dict(total=len(image_ids), desc="export", unit="img", disable=not progress, dynamic_ncols=True)
    if workers <= 1 or len(image_ids) < 2:
        return [exporter(image_id) for image_id in tqdm(image_ids, **bar)]
    chunk = max(1, min(64, len(image_ids) // (8 * workers)))
    with worker_pool(workers, initializer=_start_worker, initargs=(exporter,)) as pool:
        return list(tqdm(pool.map(_export_in_worker, image_ids, chunksize=chunk), **bar))


def _fingerprint(attrs: dict) -> str:
    """What decided the shards' labels (stage-one config and weights), hashed."""
    decided = {key: attrs.get(key) for key in ("config", "weights")}
    return hashlib.sha256(json.dumps(decided, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_previous(paths: ExportPaths, record: dict, overwrite: bool) -> None:
    """Refuse to resume over an export of other labels (unless ``overwrite``)."""
    path = paths.out / RECORD
    if overwrite or not path.is_file():
        return
    previous = json.loads(path.read_text())
    changed = [f"{key}: {previous.get(key, IDENTITY_DEFAULTS.get(key))!r} -> {record[key]!r}" for key in IDENTITY_KEYS
               if previous.get(key, IDENTITY_DEFAULTS.get(key)) != record[key]]
    if changed:
        raise ExportError(f"'{paths.out}' holds an export of other labels ({'; '.join(changed)}). Use another --out, "
                          "or --overwrite to rewrite every file")


@dataclass
class ExportSummary:
    """What an export did."""

    out: Path
    label_dir: Path
    id_list: Path
    maps_dir: Path | None
    images: int
    written: int
    random_weights: bool
    coco_json: Path | None = None

    def describe(self) -> str:
        lines = [f"exported {self.images} label map(s) ({self.written} written now, {self.images - self.written} "
                 f"already there) -> {self.label_dir}", f"id list: {self.id_list}"]
        if self.maps_dir is not None:
            lines.append(f"CLIP-ES maps: {self.maps_dir}")
        if self.coco_json is not None:
            lines.append(f"COCO RLE masks: {self.coco_json}")
        return "\n".join(lines)


def image_file_name(attrs: dict, image_id: str) -> str:
    """The image's file name in its dataset's image folder: found there for custom and demo shards (which record the
    folder), else ``<id>.jpg`` (VOC's ``JPEGImages``, COCO's ``train2014``)."""
    folder = attrs.get("image_dir")
    found = find_image(Path(folder), image_id) if folder else None
    return found.relative_to(folder).as_posix() if found is not None else f"{image_id}.jpg"


def write_coco_json(paths: ExportPaths, shards: ShardSet, image_ids: list[str], results: list[ImageExport],
                    record: dict) -> None:
    """``<out>/<split>_coco_rle.json`` from the RLE masks of every image (:mod:`pseudolabel.storage.coco_rle`)."""
    attrs = shards.attrs
    images = [(image_file_name(attrs, image_id), shards.image_size(image_id)) for image_id in image_ids]
    info = {key: record[key] for key in ("dataset", "split", "kind", "random_weights", "shards")}
    document = coco_document(images, [result.masks for result in results], attrs["class_set"], info)
    atomic_write(paths.coco_json, lambda h: h.write(json.dumps(document).encode()))


def export_labels(shards_dir: str | Path, out: str | Path, config: ExportConfig | None = None,
                  progress: bool = True) -> ExportSummary:
    """Export every image of a stage-one output directory (see the module docstring for the layouts)."""
    config = config or ExportConfig()
    if (config.kind not in LABEL_KINDS or config.layout not in LAYOUTS or config.png_mode not in PNG_MODES
            or config.maps not in (None, *MAP_FORMATS)):
        raise ExportError(f"kind must be one of {LABEL_KINDS}, layout one of {LAYOUTS}, png_mode one of {PNG_MODES}, "
                          f"maps None or one of {MAP_FORMATS} (got {config.kind!r}, {config.layout!r}, "
                          f"{config.png_mode!r}, {config.maps!r})")
    shards = open_shards(shards_dir)
    attrs = shards.attrs
    paths = ExportPaths.plan(out, config, attrs)
    record = {"format": RECORD_FORMAT, "shards": str(Path(shards_dir).resolve()), "shards_config": _fingerprint(attrs),
              "kind": config.kind, "layout": config.layout, "png_mode": config.png_mode, "maps": config.maps,
              "coco_rle": None if paths.coco_json is None else paths.coco_json.name, "dataset": attrs.get("dataset"),
              "split": attrs.get("split"), "class_names": list(attrs["class_set"].classes),
              "random_weights": bool(attrs.get("random_weights", False)), "num_images": len(shards), "complete": False}
    _check_previous(paths, record, config.overwrite)
    prepare_output_dir(paths.out)
    paths.label_dir.mkdir(parents=True, exist_ok=True)
    if paths.maps_dir is not None:
        paths.maps_dir.mkdir(parents=True, exist_ok=True)
    for tmp in paths.out.rglob("*.tmp"):   # left by an interrupted export
        tmp.unlink()
    write_json = lambda data: atomic_write(paths.out / RECORD, lambda h: h.write(json.dumps(data, indent=1).encode()))  # noqa: E731
    write_json(record)
    image_ids = sorted(shards)
    # the RLE masks need every image's labels; otherwise only images with a file missing are visited
    todo = image_ids if config.coco_rle else [
        i for i in image_ids if config.overwrite or not all(_finished(p) for p in paths.targets(i))]
    exporter = ImageExporter(shards, config.kind, paths, config.overwrite,
                             pascal_palette() if config.png_mode == "palette" else None,
                             category_ids(attrs["class_set"]) if config.coco_rle else None)
    results = _run(exporter, todo, config.workers, progress)
    if paths.coco_json is not None:
        write_coco_json(paths, shards, image_ids, results, record)
    atomic_write(paths.id_list, lambda h: h.write("".join(f"{i}\n" for i in image_ids).encode()))
    write_json(dict(record, complete=True))
    return ExportSummary(paths.out, paths.label_dir, paths.id_list, paths.maps_dir, len(image_ids),
                         sum(result.written for result in results), record["random_weights"], paths.coco_json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export stage-one pseudo labels as PNGs of class indices (palette or single-channel; VOC "
                    "layout or a flat folder), with --coco-rle as COCO-style RLE masks for annotation tools and, "
                    "with --maps clipes, CLIP-ES .npy localization maps. Resumable: a rerun writes only what is "
                    "missing. See docs/export.md.",
        epilog="examples:\n"
               "  export_labels.py outputs/voc_train_aug --out exported/voc_train_aug --png-mode index\n"
               "  export_labels.py outputs/voc_train --out exported/voc_train --kind initial --maps clipes\n"
               "  export_labels.py outputs/custom --out exported/custom --layout flat --coco-rle",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", help="stage-one output directory (shard-*.h5)")
    parser.add_argument("--out", required=True, help="export directory (created)")
    add_dataclass_options(parser, ExportConfig)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@tool_main(ExportError, ShardError, FileNotFoundError, OutputError)
def main(argv: list[str] | None = None) -> int:
    """``tools/export_labels.py``: exit status 0, 2 (an error, one line) or 130 (interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_options(args, ExportConfig, parser=parser)
    summary = export_labels(args.shards, args.out, config, progress=not args.quiet)
    print(summary.describe())
    if summary.random_weights:
        print("NOTE: these labels were produced with RANDOM WEIGHTS (see export.json); they are not meaningful.",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
