"""The stage-one shard format, in one place: file names, group and dataset names, the label kinds, the ignore value,
the image-id -> HDF5-key mapping and every attribute with its declared encoding (layout: docs/design.md).

Writers (:mod:`pseudolabel.storage.shards`), the checker (:mod:`pseudolabel.storage.check`), the evaluator, stage
two's dataset and the viewer name the format only through this module. It needs nothing heavier than numpy.
"""
from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np

from pseudolabel.classes import IGNORE_INDEX  # noqa: F401  (label maps hold the project's ignore value as is)

FORMAT = "cep-pseudolabel-shard"
# 2: Fletcher-32 on every dataset, a SHA-256 of the file in its user block. 3: the Image/Palette attributes as
# libhdf5's H5IM functions write them, colour renderings of the label maps as NeXus NXdata (silx, h5web), the HDF5 1.10
# file format and gzip level 6.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
RENDERING_VERSION = 3                # the first version whose image groups hold RENDERINGS and the NXdata attributes
USERBLOCK_SIZE = 512                 # bytes before the HDF5 data, holding the digest (pseudolabel/storage/checksum.py)
# The HDF5 1.10 file format (readable by HDF5 1.10 and later: h5py, HDFView 3, h5web, silx): a single-chunk dataset
# needs no chunk B-tree and a small group no symbol-table heap: about 9 KB less per image than HDF5's earliest
# format (h5py's default).
HDF5_LIBVER = ("v110", "v110")
# Attributes an image group keeps in its object header (its 9 would pass HDF5's default of 8 and move to a heap of
# their own, about 1.5 KB more per image): HDF5's "attribute phase change", (max compact, min dense).
IMAGE_GROUP_ATTRIBUTE_PHASE_CHANGE = (16, 12)
SHARD_GLOB = "shard-*.h5"
MANIFEST = "manifest.json"
CONFIG_FILE = "config.json"          # the run identity (pseudolabel.storage.shards.run_identity) a folder is made under
RUN_FORMAT = "cep-pseudolabel-run"  # the manifest's "format"

PALETTE = "palette"                  # /palette
IMAGES = "images"                    # /images/<key>, one group per image
REFINED, INITIAL = "refined", "initial"
LABEL_KINDS = (REFINED, INITIAL)     # the label maps of an image group: SAM-refined, and Skip-CAM's Y0
LOC_MAPS = "loc_maps"                # /images/<key>/loc_maps
CLASS_STATS = "class_stats"          # /images/<key>/class_stats: stage one's per-class records (absent in older shards)
# One row per image class, an HDF5 compound table (HDFView and h5web show it as a table): the SAM prompt points the
# class got, the masks that passed the δ filter, its pixels in Y0 and in the refined label.
CLASS_STATS_DTYPE = np.dtype([("class_id", "<i8"), ("prompts", "<i8"), ("masks_accepted", "<i8"),
                              ("y0_pixels", "<i8"), ("refined_pixels", "<i8")])

LOC_CONVENTION = ("CLIP-ES attn_highres: CAA-refined map, min-max normalised at token resolution; "
                  "resize bilinearly (cv2) to (height, width)")
# Every chunked dataset. Level 6 (zlib's default) stores label maps in about 60 % of level 4's bytes, no slower.
DATASET_FILTERS = {"compression": "gzip", "compression_opts": 6, "fletcher32": True}

# HDF5 Image and Palette Specification 1.2, written as libhdf5's own H5IM functions write it (H5IMis_image and
# H5IMis_palette refuse anything else): every string attribute a scalar, ASCII, NULL-terminated, its length plus one
# byte (what H5LTset_attribute_string writes). HDFView shows the label maps in the palette's colours.
SPEC_STRING_PADDING = "nullterm"
IMAGE_SPEC = {"CLASS": "IMAGE", "IMAGE_VERSION": "1.2", "IMAGE_SUBCLASS": "IMAGE_INDEXED", "DISPLAY_ORIGIN": "UL"}
PALETTE_SPEC = {"CLASS": "PALETTE", "PAL_COLORMODEL": "RGB", "PAL_TYPE": "STANDARD8", "PAL_VERSION": "1.2"}
# A label map's palettes: the spec's one-dimensional array of object references, here one, to /palette (H5IMlink_palette
# writes a scalar for a first palette and an array from the second on; H5IM's readers count the references either way).
PALETTE_REF = "PALETTE"
IMAGE_MINMAX = "IMAGE_MINMAXRANGE"   # [minimum, maximum] of the map's own values, uint8 like the map (the spec's rule)
# [0, C-1]: the class indices. NetCDF readers and h5web treat values outside it (255, ignore) as missing.
VALID_RANGE = "valid_range"

# Colour renderings: /images/<key>/<kind>_rgb, (H, W, 3) uint8, the label map in /palette's colours, for viewers that
# draw no palette (silx, h5web). Each is an HDF5 truecolor image too (HDFView, h5web's RGB view).
RENDERINGS = {REFINED: "refined_rgb", INITIAL: "initial_rgb"}
RENDERING_TITLES = {REFINED: "refined label in class colours", INITIAL: "Y0 (initial label) in class colours"}
TRUECOLOR_SPEC = {"CLASS": "IMAGE", "IMAGE_VERSION": "1.2", "IMAGE_SUBCLASS": "IMAGE_TRUECOLOR",
                  "INTERLACE_MODE": "INTERLACE_PIXEL", "DISPLAY_ORIGIN": "UL"}
RENDERING_ATTRS = {"interpretation": "rgb-image"}     # NeXus: the last dimension holds the colour channels
# Every image group is a NeXus NXdata group plotting its renderings: silx and h5web show it as a colour image (the
# refined label, Y0 as the auxiliary signal). Its y axis ROW_AXIS holds -row (0, -1, ..., 1-H): silx draws y upward,
# so a falling axis puts row 0 at the top; h5web draws colour images with row 0 at the top whatever the axis.
ROW_AXIS = "row"                     # /images/<key>/row: a hard link to /rows/<H>, one dataset per image height
ROW_AXES = "rows"                    # /rows/<H>: (H,) int32
ROW_AXIS_TITLE = "-row (row 0 at the top)"
NXDATA_ATTRS = {"NX_class": "NXdata", "signal": RENDERINGS[REFINED], "auxiliary_signals": [RENDERINGS[INITIAL]],
                "axes": [ROW_AXIS, ".", "."]}
# NeXus defaults, so that silx and h5web open a shard on its first image: the root's "default" names /images (an
# NXentry), whose "default" names its first image group.
DEFAULT = "default"
NXENTRY_ATTRS = {"NX_class": "NXentry"}

_ESCAPED = re.compile(r"[%/]|^\.$")
_ESCAPE = re.compile(r"%(25|2F|2E)")


def image_key(image_id: str) -> str:
    """HDF5 group name of an image id: '%' -> '%25', '/' -> '%2F' and the id '.' -> '%2E' (HDF5 names cannot hold
    '/', and '.' names the group itself), nothing else.

    Injective, so two ids never share a group; other ids are their own key. Hand-written because
    ``urllib.parse.quote`` also escapes spaces and non-ASCII characters, which would rename existing groups. An
    empty id or one holding NUL (no file name does) cannot be stored: ``ValueError``.
    """
    if not image_id or "\0" in image_id:
        raise ValueError(f"image id {image_id!r} cannot be stored: ids must be non-empty and hold no NUL character")
    return _ESCAPED.sub(lambda match: f"%{ord(match[0]):02X}", image_id)


def image_id_from_key(key: str) -> str:
    """Inverse of :func:`image_key`."""
    return _ESCAPE.sub(lambda match: chr(int(match[1], 16)), key)


def row_axis_path(height: int) -> str:
    """Where the row axis of images of ``height`` rows is stored (hard-linked into each image group as ROW_AXIS)."""
    return f"{ROW_AXES}/{height}"


def row_axis(height: int) -> np.ndarray:
    """The values of the row axis: ``-row`` for each row, int32 (see :data:`ROW_AXIS`)."""
    return -np.arange(height, dtype=np.int32)


def decode_text(raw) -> str:
    """A string attribute as ``str``: fixed-length ASCII (the HDF5 Image/Palette spec) or variable-length UTF-8."""
    return bytes(raw).decode("utf-8", "replace") if isinstance(raw, (bytes, np.bytes_)) else str(raw)


class Encoding(enum.Enum):
    """How an attribute value is stored."""

    TEXT = "text"            # str (variable-length UTF-8)
    INT = "int"              # int64 scalar
    BOOL = "bool"            # bool scalar
    INT_TUPLE = "int tuple"  # int64 array, read back as a tuple of ints
    JSON = "json"            # a JSON document in a string (lists, dicts)


@dataclass(frozen=True)
class Attr:
    """One attribute of the format: its name, its encoding, whether every shard must have it and whether every
    shard of a run must hold the same value (root attributes)."""

    name: str
    encoding: Encoding
    required: bool = True
    shared: bool = False

    def encode(self, value):
        """The value as it is written to the file."""
        if self.encoding is Encoding.JSON:
            return json.dumps(value)
        if self.encoding is Encoding.INT_TUPLE:
            return np.array(value, np.int64)
        return {Encoding.TEXT: str, Encoding.INT: int, Encoding.BOOL: bool}[self.encoding](value)

    def decode(self, raw):
        """The value read from the file; ``ValueError`` when it does not have the declared encoding."""
        if self.encoding is Encoding.JSON:
            if not isinstance(raw, (str, bytes, np.bytes_)):
                raise ValueError(f"attribute '{self.name}' is not a JSON string")
            return json.loads(decode_text(raw))
        if self.encoding is Encoding.TEXT:
            return decode_text(raw)
        if self.encoding is Encoding.INT_TUPLE:
            return tuple(int(v) for v in np.atleast_1d(raw))
        return int(raw) if self.encoding is Encoding.INT else bool(raw)


def _table(*attrs: Attr) -> dict[str, Attr]:
    return {attr.name: attr for attr in attrs}


ROOT_ATTRS = _table(
    Attr("format", Encoding.TEXT),
    Attr("format_version", Encoding.INT, shared=True),
    Attr("class_names", Encoding.JSON, shared=True),
    Attr("class_set", Encoding.JSON, shared=True),        # ClassSet.to_json()
    Attr("dataset", Encoding.TEXT, shared=True),
    Attr("split", Encoding.TEXT, shared=True),
    Attr("config", Encoding.JSON, shared=True),           # PseudoLabelConfig.to_dict()
    Attr("weights", Encoding.JSON, shared=True),          # identity of the CLIP and SAM weights
    Attr("image_dir", Encoding.TEXT, required=False),     # custom and demo datasets: where the photos are
    Attr("random_weights", Encoding.BOOL),
    Attr("versions", Encoding.JSON),
    Attr("rank", Encoding.INT),
)
IMAGE_ATTRS = _table(
    Attr("image_id", Encoding.TEXT),
    Attr("height", Encoding.INT),
    Attr("width", Encoding.INT),
    Attr("class_ids", Encoding.INT_TUPLE),
    Attr("class_names", Encoding.JSON),
)
CLASS_STATS_ATTRS = _table(
    Attr("changed_pixels", Encoding.INT),                  # pixels whose refined label differs from Y0
)
LOC_MAPS_ATTRS = _table(
    Attr("class_ids", Encoding.INT_TUPLE),
    Attr("class_names", Encoding.JSON),
    Attr("convention", Encoding.TEXT),
)


def write_attrs(target: MutableMapping, table: Mapping[str, Attr], values: Mapping) -> None:
    """Write ``values`` (in their order) into an HDF5 attribute set, each encoded as ``table`` declares."""
    unknown = [name for name in values if name not in table]
    if unknown:
        raise ValueError(f"attribute(s) {unknown} are not part of the shard format (known: {', '.join(table)})")
    for name, value in values.items():
        target[name] = table[name].encode(value)


def read_attrs(source: Mapping, table: Mapping[str, Attr]) -> dict:
    """Decode the attributes of ``table`` present in an HDF5 attribute set (others are left out)."""
    return {name: attr.decode(source[name]) for name, attr in table.items() if name in source}


def check_label_kind(kind: str) -> str:
    """``kind`` if it names a label map of the format, else ``ValueError`` listing them."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"label kind must be one of {LABEL_KINDS}, not {kind!r}")
    return kind
