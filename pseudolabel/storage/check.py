"""Integrity check of a stage-one output directory (``shard-*.h5`` + ``manifest.json``), layout of docs/design.md.

Checked for every shard: its bytes match the SHA-256 recorded in it when it was written (flipped bytes, truncation;
pseudolabel/storage/checksum.py); it opens (a truncated or non-HDF5 file is reported, never raised); every chunk
passes its Fletcher-32 checksum as it is read; the format attributes
are present; ``/palette`` follows the HDF5 Palette spec and every label dataset references it (format 3: every
Image/Palette string as libhdf5's H5IM functions write it, ``IMAGE_MINMAXRANGE`` the map's own range, the colour
renderings equal to the label maps in /palette's colours, the NXdata attributes and row axis silx and h5web plot them
by, and the NeXus defaults leading to the first image); each image group
has its attributes (``class_names`` naming its ``class_ids``), ``refined``/``initial`` of shape ``(height, width)``
uint8 with values in ``{0} ∪ class_ids ∪ {255}``, ``loc_maps`` whose first dimension equals its number of class ids
(all among the image's), and ``class_stats``, when present, one row per image class whose pixel counts match the
label maps (``masks_accepted <= prompts``, ``changed_pixels`` right); the JSON attributes parse, and config,
weights, class set, dataset and split are the same in every shard (each difference named) and the ones
``config.json`` records; every image is in exactly one shard and the shards hold exactly
the manifest's images (none missing, none extra, ``num_images`` right).

``check_shards(directory) -> list[str]`` gives the problems; ``run_check`` also gives the counts the CLI prints.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pseudolabel.cli_options import config_differences
from pseudolabel.exits import tool_main
from pseudolabel.storage.checksum import verify_file
from pseudolabel.storage.format import (
    CLASS_STATS,
    CLASS_STATS_ATTRS,
    CLASS_STATS_DTYPE,
    CONFIG_FILE,
    DEFAULT,
    FORMAT,
    IGNORE_INDEX,
    IMAGE_ATTRS,
    IMAGE_MINMAX,
    IMAGE_SPEC,
    IMAGES,
    INITIAL,
    LABEL_KINDS,
    LOC_MAPS,
    LOC_MAPS_ATTRS,
    MANIFEST,
    NXDATA_ATTRS,
    NXENTRY_ATTRS,
    PALETTE,
    PALETTE_REF,
    PALETTE_SPEC,
    READABLE_VERSIONS,
    REFINED,
    RENDERING_ATTRS,
    RENDERING_VERSION,
    RENDERINGS,
    ROOT_ATTRS,
    ROW_AXIS,
    SHARD_GLOB,
    TRUECOLOR_SPEC,
    VALID_RANGE,
    decode_text,
    image_id_from_key,
    image_key,
    read_attrs,
    row_axis,
)
from pseudolabel.storage.shards import identity_from_attrs, method_config, read_identity

SHARED_ROOT_ATTRS = tuple(name for name, attr in ROOT_ATTRS.items() if attr.shared)  # same in every shard
MAX_PROBLEMS_PER_SHARD = 50


@dataclass
class CheckResult:
    directory: Path
    shards: int = 0
    images: int = 0
    failures: int = 0
    random_weights: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"{self.directory}: {self.shards} shard(s), {self.images} image(s), "
                 f"{self.failures} failure(s) recorded in the manifest, {len(self.problems)} problem(s)"]
        if self.random_weights:
            lines.append("note: produced with RANDOM WEIGHTS")
        lines += [f"  - {p}" for p in self.problems]
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def _manifest_shards(manifest: dict, problems: list[str]) -> dict[str, list[str]] | None:
    """``shard file name -> image ids`` from the manifest's ``shards`` entry (None, with a problem, if malformed)."""
    shards = manifest.get("shards")
    if not isinstance(shards, dict) or not all(isinstance(ids, list) for ids in shards.values()):
        problems.append(f"{MANIFEST}: no 'shards' mapping (shard file name -> list of image ids)")
        return None
    return {str(name): [str(i) for i in ids] for name, ids in shards.items()}


@dataclass
class _ShardContext:
    """What the image checks of one shard need from its root."""

    handle: h5py.File
    version: int
    palette: np.ndarray | None     # /palette's colours (None when it is missing)
    num_classes: int | None

    @property
    def renders(self) -> bool:
        """Whether the shard's format has colour renderings, NXdata views and H5IM-exact strings."""
        return self.version >= RENDERING_VERSION

    def references_palette(self, raw) -> bool:
        """Whether a PALETTE attribute's first reference resolves to /palette (format 3: a 1-D array of them)."""
        refs = np.atleast_1d(raw)
        if self.palette is None or refs.size == 0 or (self.renders and np.ndim(raw) != 1):
            return False
        try:
            return isinstance(refs[0], h5py.Reference) and bool(refs[0]) and \
                self.handle[refs[0]].name == f"/{PALETTE}"
        except (ValueError, KeyError, OSError):
            return False


def _text_values(raw) -> str | list[str]:
    """A string attribute, or a list of them for an array of strings."""
    return decode_text(raw) if np.ndim(raw) == 0 else [decode_text(v) for v in np.asarray(raw).ravel()]


def _spec_string_problems(attrs, spec: dict[str, str], where: str, exact: bool) -> list[str]:
    """Image/Palette spec strings: the values, and with ``exact`` the encoding libhdf5's H5IMis_image and
    H5IMis_palette require (scalar, ASCII, NULL-terminated, its length plus one byte)."""
    problems = []
    for name, text in spec.items():
        if name not in attrs:
            problems.append(f"{where}: attribute {name} missing")
        elif _text_values(attrs[name]) != text:
            problems.append(f"{where}: {name} attribute is not '{text}'")
        elif exact:
            stored = attrs.get_id(name)
            string_type = stored.get_type()
            if not (isinstance(string_type, h5py.h5t.TypeStringID) and not string_type.is_variable_str()
                    and string_type.get_strpad() == h5py.h5t.STR_NULLTERM and stored.shape == ()
                    and string_type.get_size() == len(text) + 1 and string_type.get_cset() == h5py.h5t.CSET_ASCII):
                problems.append(f"{where}: {name} is not a NULL-terminated ASCII string of {len(text) + 1} bytes "
                                "(libhdf5's H5IM functions reject it)")
    return problems


def _check_label(name: str, data, where: str, size, allowed: set[int], shard: _ShardContext,
                 problems: list[str]) -> np.ndarray | None:
    """Check one label map; returns its values when they have the map's shape and dtype."""
    labels = None
    if data.shape != size:
        problems.append(f"{where}/{name}: shape {data.shape} != (height, width) {size}")
    if data.dtype != np.uint8:
        problems.append(f"{where}/{name}: dtype {data.dtype}, expected uint8")
    if PALETTE_REF not in data.attrs:
        problems.append(f"{where}/{name}: no {PALETTE_REF} attribute (HDFView shows it grey)")
    elif not shard.references_palette(data.attrs[PALETTE_REF]):
        problems.append(f"{where}/{name}: {PALETTE_REF} attribute does not reference /{PALETTE}"
                        + (" as a one-dimensional array" if shard.renders else ""))
    spec = IMAGE_SPEC if shard.renders else {"CLASS": IMAGE_SPEC["CLASS"]}
    problems += _spec_string_problems(data.attrs, spec, f"{where}/{name}", exact=shard.renders)
    values = data[()]
    present = np.unique(values)
    bad = sorted(set(int(v) for v in present) - allowed)
    if bad:
        problems.append(f"{where}/{name}: label values {bad} outside {{0}} ∪ class_ids "
                        f"{sorted(allowed - {0, IGNORE_INDEX})} ∪ {{{IGNORE_INDEX}}}")
    if data.shape == size and data.dtype == np.uint8:
        labels = values
    if shard.renders and present.size:
        if list(np.atleast_1d(data.attrs.get(IMAGE_MINMAX, []))) != [present[0], present[-1]]:
            problems.append(f"{where}/{name}: {IMAGE_MINMAX} is not the map's [minimum, maximum] "
                            f"[{present[0]}, {present[-1]}]")
        if shard.num_classes is not None and \
                list(np.atleast_1d(data.attrs.get(VALID_RANGE, []))) != [0, shard.num_classes - 1]:
            problems.append(f"{where}/{name}: {VALID_RANGE} is not the class indices [0, {shard.num_classes - 1}]")
    return labels


def _check_rendering(group: h5py.Group, kind: str, labels: np.ndarray, where: str, shard: _ShardContext,
                     problems: list[str]) -> None:
    """A label map's colour rendering: an HDF5 truecolor image equal to the map in /palette's colours."""
    name = RENDERINGS[kind]
    if name not in group:
        problems.append(f"{where}: dataset '{name}' missing (the colour rendering of '{kind}')")
        return
    data = group[name]
    if data.shape != labels.shape + (3,) or data.dtype != np.uint8:
        problems.append(f"{where}/{name}: shape {data.shape} {data.dtype}, expected {labels.shape + (3,)} uint8")
        return
    problems += _spec_string_problems(data.attrs, TRUECOLOR_SPEC, f"{where}/{name}", exact=True)
    problems += _spec_string_problems(data.attrs, RENDERING_ATTRS, f"{where}/{name}", exact=False)
    if shard.palette is not None and not np.array_equal(data[()], np.take(shard.palette, labels, axis=0)):
        problems.append(f"{where}/{name}: does not show '{kind}' in the colours of /{PALETTE}")


def _check_nxdata(group: h5py.Group, where: str, height: int, problems: list[str]) -> None:
    """The NXdata attributes and the row axis that silx and h5web plot an image group by."""
    for key, value in NXDATA_ATTRS.items():
        got = _text_values(group.attrs[key]) if key in group.attrs else None
        if got != value:
            problems.append(f"{where}: NXdata attribute {key} is {got!r}, expected {value!r}")
    axis = group.get(ROW_AXIS)
    if not isinstance(axis, h5py.Dataset) or not np.array_equal(axis[()], row_axis(height)):
        problems.append(f"{where}: '{ROW_AXIS}' is not the row axis (0, -1, ..., {1 - height}) silx draws by")


def _shared_root_attrs(name: str, attrs, problems: list[str]) -> dict:
    """The root attributes every shard must agree on, decoded (left out, with a problem, if undecodable)."""
    shared = {}
    for key in SHARED_ROOT_ATTRS:
        if key not in attrs:
            continue
        try:
            shared[key] = ROOT_ATTRS[key].decode(attrs[key])
        except ValueError as error:
            problems.append(f"{name}: {key} attribute is not valid {ROOT_ATTRS[key].encoding.value} ({error})")
    class_set, class_names = shared.get("class_set"), shared.get("class_names")
    if isinstance(class_set, dict) and class_names is not None and class_set.get("classes") != class_names:
        problems.append(f"{name}: class_set classes differ from class_names")
    return shared


def _check_class_stats(group: h5py.Group, where: str, class_ids: list[int], problems: list[str]) -> None:
    """The per-class records, when present, against the image's classes and its label maps."""
    table = group[CLASS_STATS]
    if table.dtype != CLASS_STATS_DTYPE:
        problems.append(f"{where}/{CLASS_STATS}: row type {table.dtype}, expected {CLASS_STATS_DTYPE}")
        return
    rows = table[()]
    if rows["class_id"].tolist() != class_ids:
        problems.append(f"{where}/{CLASS_STATS}: rows for classes {rows['class_id'].tolist()}, the image has "
                        f"{class_ids}")
        return
    if (rows["masks_accepted"] > rows["prompts"]).any() or (rows["masks_accepted"] < 0).any():
        problems.append(f"{where}/{CLASS_STATS}: masks_accepted not within 0..prompts")
    if not all(kind in group for kind in LABEL_KINDS):
        return
    initial, refined = group[INITIAL][()], group[REFINED][()]
    for column, labels in (("y0_pixels", initial), ("refined_pixels", refined)):
        counts = np.bincount(labels.ravel(), minlength=256)[class_ids]
        if not np.array_equal(rows[column], counts):
            problems.append(f"{where}/{CLASS_STATS}: {column} {rows[column].tolist()} but the label map has "
                            f"{counts.tolist()}")
    changed = read_attrs(table.attrs, CLASS_STATS_ATTRS).get("changed_pixels")
    if changed != int(np.count_nonzero(initial != refined)):
        problems.append(f"{where}/{CLASS_STATS}: changed_pixels {changed}, but {np.count_nonzero(initial != refined)} "
                        "pixels differ between Y0 and the refined label")


def _check_image(group: h5py.Group, key: str, where: str, class_names: list | None, shard: _ShardContext,
                 problems: list[str]) -> str:
    """Check one image group; returns its image id."""
    attrs = read_attrs(group.attrs, IMAGE_ATTRS)  # ValueError (undecodable): the caller reports the image
    if "image_id" not in attrs:
        problems.append(f"{where}: attribute image_id missing")
        image_id = image_id_from_key(key)
    else:
        image_id = attrs["image_id"]
        if image_key(image_id) != key:
            problems.append(f"{where}: group name does not match image_id '{image_id}'")
    missing = [name for name in IMAGE_ATTRS if name != "image_id" and name not in attrs]
    if missing:
        problems.append(f"{where}: attribute(s) {missing} missing")
        return image_id
    size = (attrs["height"], attrs["width"])
    class_ids = list(attrs["class_ids"])
    if class_names is not None:
        if any(not 0 < c < len(class_names) for c in class_ids):
            problems.append(f"{where}: class_ids {class_ids} outside 1..{len(class_names) - 1}")
        elif attrs["class_names"] != [class_names[c] for c in class_ids]:
            problems.append(f"{where}: class_names attribute does not name class_ids {class_ids}")
    allowed = {0, IGNORE_INDEX, *class_ids}
    for label in LABEL_KINDS:
        if label not in group:
            problems.append(f"{where}: dataset '{label}' missing")
            continue
        labels = _check_label(label, group[label], where, size, allowed, shard, problems)
        if shard.renders and labels is not None:
            _check_rendering(group, label, labels, where, shard, problems)
    if shard.renders:
        _check_nxdata(group, where, size[0], problems)
    if CLASS_STATS in group:   # absent in shards written before stage one kept per-class records
        _check_class_stats(group, where, class_ids, problems)
    if LOC_MAPS not in group:
        problems.append(f"{where}: dataset '{LOC_MAPS}' missing")
        return image_id
    loc = group[LOC_MAPS]
    loc_attrs = read_attrs(loc.attrs, LOC_MAPS_ATTRS)
    if "class_ids" not in loc_attrs:
        problems.append(f"{where}/{LOC_MAPS}: attribute class_ids missing")
    loc_ids = list(loc_attrs.get("class_ids", ()))
    if not set(loc_ids) <= set(class_ids):
        problems.append(f"{where}/{LOC_MAPS}: class ids {loc_ids} not all among the image's {class_ids}")
    if loc.ndim != 3 or loc.shape[0] != len(loc_ids):
        problems.append(f"{where}/{LOC_MAPS}: shape {loc.shape}, expected ({len(loc_ids)}, h, w) "
                        f"for loc class ids {loc_ids}")
    elif loc.size:
        loc[()]  # decompresses every chunk: a damaged chunk is reported here
    return image_id


def _check_defaults(name: str, handle: h5py.File, images: h5py.Group, problems: list[str]) -> None:
    """The NeXus defaults silx and h5web follow when a shard is opened: the root's to /images, its to an image."""
    if _text_values(handle.attrs.get(DEFAULT, "")) != IMAGES:
        problems.append(f"{name}: root attribute {DEFAULT} is not '{IMAGES}'")
    for key, value in NXENTRY_ATTRS.items():
        if _text_values(images.attrs.get(key, "")) != value:
            problems.append(f"{name}:/{IMAGES}: attribute {key} is not '{value}'")
    if len(images) and _text_values(images.attrs.get(DEFAULT, "")) not in images:
        problems.append(f"{name}:/{IMAGES}: attribute {DEFAULT} does not name one of its images")


def _check_shard(path: Path, handle: h5py.File, problems: list[str], ids_in: dict[str, list[str]]) -> dict:
    """Check one open shard; returns its :data:`SHARED_ROOT_ATTRS` (parsed) for the cross-shard comparison."""
    name = path.name
    attrs = handle.attrs
    for key, attr in ROOT_ATTRS.items():
        if attr.required and key not in attrs:
            problems.append(f"{name}: root attribute '{key}' missing")
    if "format" in attrs and decode_text(attrs["format"]) != FORMAT:
        problems.append(f"{name}: format '{decode_text(attrs['format'])}' is not '{FORMAT}'")
    if "format_version" in attrs and int(attrs["format_version"]) not in READABLE_VERSIONS:
        problems.append(f"{name}: format_version {attrs['format_version']} (this checker knows {READABLE_VERSIONS})")
    shared = _shared_root_attrs(name, attrs, problems)
    class_names = shared.get("class_names") if isinstance(shared.get("class_names"), list) else None

    version = int(attrs["format_version"]) if "format_version" in attrs else 1
    exact = version >= RENDERING_VERSION
    palette = handle.get(PALETTE)
    colours = None
    if not isinstance(palette, h5py.Dataset):
        problems.append(f"{name}: /{PALETTE} missing")
    else:
        if palette.shape != (256, 3) or palette.dtype != np.uint8:
            problems.append(f"{name}: /{PALETTE} has shape {palette.shape} {palette.dtype}, expected (256, 3) uint8")
        else:
            colours = palette[()]
        spec = PALETTE_SPEC if exact else {"CLASS": PALETTE_SPEC["CLASS"]}
        problems += _spec_string_problems(palette.attrs, spec, f"{name}:/{PALETTE}", exact)
    shard = _ShardContext(handle, version, colours, len(class_names) if class_names is not None else None)

    images = handle.get(IMAGES)
    if images is None:
        problems.append(f"{name}: /{IMAGES} group missing")
        return shared
    if shard.renders:
        _check_defaults(name, handle, images, problems)
    start = len(problems)
    for key in images:
        if len(problems) - start > MAX_PROBLEMS_PER_SHARD:
            problems.append(f"{name}: more problems not listed")
            break
        where = f"{name}:/{IMAGES}/{key}"
        try:
            ids_in[_check_image(images[key], key, where, class_names, shard, problems)].append(name)
        except (OSError, KeyError, ValueError, RuntimeError) as error:
            problems.append(f"{where}: unreadable ({type(error).__name__}: {error})")
    return shared


def run_check(directory: str | Path, require_manifest: bool = True) -> CheckResult:
    """Check a shard directory; never raises for a damaged shard (it becomes a problem)."""
    directory = Path(directory)
    result = CheckResult(directory)
    problems = result.problems
    if not directory.is_dir():
        problems.append(f"'{directory}' is not a directory")
        return result
    paths = sorted(directory.glob(SHARD_GLOB))
    result.shards = len(paths)
    if not paths:
        problems.append(f"no {SHARD_GLOB} files in '{directory}'")
    manifest = None
    manifest_path = directory / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            result.failures = len(manifest.get("failures", []))
        except ValueError as error:
            problems.append(f"{MANIFEST}: not valid JSON ({error})")
    elif require_manifest:
        problems.append(f"{MANIFEST} missing (the run did not finish, or this is not a stage-one output directory)")

    ids_in: dict[str, list[str]] = defaultdict(list)
    shared_attrs: dict[str, dict] = {}
    for path in paths:
        damage = verify_file(path)
        if damage is not None:
            problems.append(f"{path.name}: damaged: {damage}; rerunning stage one (the same command) moves it to "
                            "damaged/ and labels its images again")
        try:
            handle = h5py.File(path, "r")
        except (OSError, ValueError) as error:
            problems.append(f"{path.name}: cannot be opened ({error}); truncated or not an HDF5 file")
            continue
        with handle:
            try:
                attrs = _check_shard(path, handle, problems, ids_in)
                if isinstance(attrs.get("config"), dict):
                    attrs["config"] = method_config(attrs["config"])
                shared_attrs[path.name] = attrs
                result.random_weights |= bool(handle.attrs.get("random_weights", False))
            except (OSError, KeyError, ValueError, RuntimeError) as error:
                problems.append(f"{path.name}: unreadable ({type(error).__name__}: {error})")
    result.images = len(ids_in)

    if shared_attrs:
        first_name, first = next(iter(shared_attrs.items()))
        for other, values in shared_attrs.items():
            differing = config_differences({k: first[k] for k in values if k in first},
                                           {k: values[k] for k in first if k in values})
            if differing:
                problems.append(f"{other}: made with other settings than {first_name} ({'; '.join(differing)})")
    _check_config_file(directory, shared_attrs, problems)

    for image_id, where in ids_in.items():
        if len(where) > 1:
            problems.append(f"image '{image_id}' stored {len(where)} times: {', '.join(where)}")

    if manifest is not None:
        listed = _manifest_shards(manifest, problems)
        if listed is not None:
            on_disk = {p.name for p in paths}
            for shard in sorted(set(listed) - on_disk):
                problems.append(f"{MANIFEST} lists shard '{shard}' which does not exist")
            for shard in sorted(on_disk - set(listed)):
                problems.append(f"shard '{shard}' is not listed in {MANIFEST}")
            expected: dict[str, list[str]] = defaultdict(list)
            for shard, ids in listed.items():
                for image_id in ids:
                    expected[image_id].append(shard)
            listed_count = sum(len(ids) for ids in listed.values())
            if manifest.get("num_images", listed_count) != listed_count:
                problems.append(f"{MANIFEST}: num_images {manifest['num_images']} but its shards list {listed_count}")
            for image_id, shards in expected.items():
                if len(shards) > 1:
                    problems.append(f"{MANIFEST} lists image '{image_id}' {len(shards)} times ({', '.join(shards)})")
            missing = [i for i in expected if i not in ids_in]
            extra = [i for i in ids_in if i not in expected]
            if missing:
                problems.append(f"{len(missing)} manifest image(s) missing from the shards: "
                                f"{', '.join(sorted(missing)[:10])}{' ...' if len(missing) > 10 else ''}")
            if extra:
                problems.append(f"{len(extra)} image(s) in the shards but not in {MANIFEST}: "
                                f"{', '.join(sorted(extra)[:10])}{' ...' if len(extra) > 10 else ''}")
            for image_id, shards in expected.items():
                if image_id in ids_in and shards[0] in on_disk and shards[0] not in ids_in[image_id]:
                    problems.append(f"image '{image_id}' is in {', '.join(ids_in[image_id])}, "
                                    f"the manifest says {shards[0]}")
    return result


def _check_config_file(directory: Path, shared_attrs: dict[str, dict], problems: list[str]) -> None:
    """Report the shards whose run identity ``config.json`` contradicts, each difference named once."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        return
    try:
        recorded = read_identity(path)
    except ValueError as error:
        problems.append(f"{CONFIG_FILE}: not valid JSON ({error})")
        return
    contradicted: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, values in shared_attrs.items():
        differing = "config" in values and config_differences(identity_from_attrs(values), recorded)
        if differing:
            contradicted[tuple(differing)].append(name)
    for differing, names in contradicted.items():
        problems.append(f"{CONFIG_FILE} contradicts the settings {len(names)} shard(s) were made with "
                        f"({'; '.join(differing)}: shard -> {CONFIG_FILE}): {', '.join(names[:5])}"
                        f"{' ...' if len(names) > 5 else ''}; the shards' own settings are the labels'")


def check_shards(directory: str | Path, require_manifest: bool = True) -> list[str]:
    """Problems found in a shard directory (empty list: all good)."""
    return run_check(directory, require_manifest).problems


@tool_main()
def main(argv: list[str] | None = None) -> int:
    """CLI: ``tools/check_shards.py DIR``; exit 1 when any problem is found (130: interrupted)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="check_shards.py",
        description="Check a stage-one shard directory (layout in docs/design.md); exit status 1 on any problem.")
    parser.add_argument("directory", help="stage-one output directory holding shard-*.h5 and manifest.json")
    parser.add_argument("--no-manifest", action="store_true",
                        help="do not require manifest.json (e.g. shards copied without it)")
    args = parser.parse_args(argv)
    result = run_check(args.directory, require_manifest=not args.no_manifest)
    print(result.summary())
    return 0 if result.ok else 1
