"""HDF5 shards: the stage-one output, readable by stage two, the evaluator, the viewer and standard HDF5 viewers.

Layout (docs/design.md): root attributes (dataset, split, class names, config JSON, versions, weights identity,
random_weights), ``/palette`` (HDF5 Palette spec) and one group per image under ``/images`` holding ``refined`` and
``initial`` label maps (HDF5 Image spec as libhdf5's H5IM writes it, indexed, referencing the palette, so HDFView
shows them coloured; a ``valid_range`` for h5web), their colour renderings (the image group is a NeXus NXdata group
plotting them, for silx and h5web), the localization maps at token resolution and the per-class records
``class_stats`` (absent in shards written before stage one kept them). gzip and Fletcher-32 only; one chunk per
dataset. Nothing is ever unpickled: metadata is JSON.

Self-checking (:mod:`pseudolabel.storage.checksum`): a shard is built in memory and written with plain Python I/O
(temp file, fsync, rename; HDF5 itself never writes to disk, so a full disk is an ordinary ``OSError``), with the
SHA-256 of the file in its user block. :class:`ShardSet` verifies every shard when it opens a directory and raises
:class:`ShardDamagedError` naming the file; a damaged chunk read later fails its Fletcher-32 the same way.
"""
from __future__ import annotations

import functools
import glob
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

try:  # zlib-ng inflates the same deflate streams 10-20x faster than the standard library (VOC-sized label maps)
    from zlib_ng import zlib_ng as deflate
except ImportError:  # a platform without zlib-ng wheels: same result, slower
    import zlib as deflate

from pseudolabel.classes import ClassSet, pascal_palette
from pseudolabel.cli_options import config_differences
from pseudolabel.loc_maps import resize_maps
from pseudolabel.storage.atomic import atomic_write
from pseudolabel.storage.checksum import fletcher32, fletcher32_payload, seal, verify_file
from pseudolabel.storage.class_stats import ClassStats
from pseudolabel.storage.format import (
    CLASS_STATS,
    CLASS_STATS_ATTRS,
    DATASET_FILTERS,
    DEFAULT,
    FORMAT,
    FORMAT_VERSION,
    HDF5_LIBVER,
    IMAGE_ATTRS,
    IMAGE_GROUP_ATTRIBUTE_PHASE_CHANGE,
    IMAGE_MINMAX,
    IMAGE_SPEC,
    IMAGES,
    INITIAL,
    LABEL_KINDS,
    LOC_CONVENTION,
    LOC_MAPS,
    LOC_MAPS_ATTRS,
    MANIFEST,
    NXDATA_ATTRS,
    NXENTRY_ATTRS,
    PALETTE,
    PALETTE_REF,
    PALETTE_SPEC,
    REFINED,
    RENDERING_ATTRS,
    RENDERING_TITLES,
    RENDERINGS,
    ROOT_ATTRS,
    ROW_AXIS,
    ROW_AXIS_TITLE,
    SHARD_GLOB,
    TRUECOLOR_SPEC,
    USERBLOCK_SIZE,
    VALID_RANGE,
    check_label_kind,
    image_key,
    read_attrs,
    row_axis,
    row_axis_path,
    write_attrs,
)


@dataclass(kw_only=True)
class LabelRecord:
    """Everything stage one stores for one image (built with keyword arguments only)."""

    image_id: str
    refined: np.ndarray                 # (H, W) uint8
    initial: np.ndarray                 # (H, W) uint8 (Y0)
    loc_maps_lowres: np.ndarray         # (K, h, w) float32
    loc_class_ids: tuple[int, ...]
    class_ids: tuple[int, ...]
    size: tuple[int, int]               # (H, W)
    class_stats: ClassStats | None = None   # per-class records (None: a shard written before stage one kept them)

    @property
    def loc_maps(self) -> np.ndarray:
        """Localization maps at full image resolution, ``(K, H, W)`` float32 (CLIP-ES ``attn_highres``)."""
        return resize_maps(self.loc_maps_lowres, self.size)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for pickle-free staging with ``np.savez``)."""
        arrays = {"image_id": np.array(self.image_id), "refined": self.refined, "initial": self.initial,
                  "loc_maps_lowres": self.loc_maps_lowres, "loc_class_ids": np.array(self.loc_class_ids, np.int64),
                  "class_ids": np.array(self.class_ids, np.int64), "size": np.array(self.size, np.int64)}
        if self.class_stats is not None:
            arrays.update(class_stats=self.class_stats.to_rows(),
                          changed_pixels=np.array(self.class_stats.changed_pixels, np.int64))
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "LabelRecord":
        return cls(image_id=str(arrays["image_id"]), refined=np.asarray(arrays["refined"]),
                   initial=np.asarray(arrays["initial"]),
                   loc_maps_lowres=np.asarray(arrays["loc_maps_lowres"], np.float32),
                   loc_class_ids=tuple(int(c) for c in arrays["loc_class_ids"]),
                   class_ids=tuple(int(c) for c in arrays["class_ids"]), size=tuple(int(s) for s in arrays["size"]),
                   class_stats=ClassStats.from_rows(arrays["class_stats"], int(arrays["changed_pixels"]))
                   if "class_stats" in arrays else None)


class ShardError(ValueError):
    """A shard directory that cannot be read as stage-one output; the message names the file and the fix."""


class ShardDamagedError(ShardError):
    """A shard file whose bytes are not those written (flipped bits, truncation, a failed checksum)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"shard '{path}' is damaged: {reason}. Run tools/check_shards.py {Path(path).parent} for a "
                         "report; rerunning stage one (the same command) moves it to damaged/ and labels its images "
                         "again")

    def __reduce__(self):  # picklable: evaluator worker processes send it back
        return type(self), (self.path, self.reason)


@functools.cache
def _spec_string(text: str) -> tuple[h5py.h5t.TypeStringID, np.ndarray]:
    """HDF5 type and value of an Image/Palette spec string as libhdf5's ``H5LTset_attribute_string`` writes it:
    ASCII, NULL-terminated, the text's length plus one byte (``H5IMis_image`` and ``H5IMis_palette`` refuse other
    padding)."""
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(text) + 1)
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    return string_type, np.array(text.encode("ascii"), f"S{len(text) + 1}")


def _write_spec_strings(target: h5py.HLObject, values: Mapping[str, str]) -> None:
    """Scalar spec string attributes on a new object (h5py's low-level calls: a third of ``attrs.create``'s time)."""
    scalar = h5py.h5s.create(h5py.h5s.SCALAR)
    for name, text in values.items():
        string_type, value = _spec_string(text)
        h5py.h5a.create(target.id, name.encode(), string_type, scalar).write(value)


def _single_chunk_dataset(group: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
    """A one-chunk dataset with :data:`DATASET_FILTERS`, its chunk deflated (zlib-ng when installed) and checksummed
    here and written as HDF5's filters store it (deflate, then Fletcher-32 appended little-endian). Hand-written
    because zlib-ng deflates 3-5x faster than the zlib HDF5 links, and the label maps and their colour renderings
    are most of a shard's writing time; HDF5 reads and verifies the chunk like any other."""
    data = group.create_dataset(name, shape=array.shape, dtype=array.dtype, chunks=array.shape, **DATASET_FILTERS)
    payload = deflate.compress(np.ascontiguousarray(array).tobytes(), DATASET_FILTERS["compression_opts"])
    data.id.write_direct_chunk((0,) * array.ndim, payload + fletcher32(payload).to_bytes(4, "little"))
    return data


class ShardWriter:
    """Writes records into one shard file. Use as a context manager: the shard is built in memory and written to
    ``path`` (sealed with its digest, temp file, fsync, rename) when the block ends without an exception, so the file
    is complete or absent; an exception discards it. Write errors (a full disk) are plain ``OSError``."""

    def __init__(self, path: str | Path, class_set: ClassSet, attrs: dict):
        self.path = Path(path)
        self.class_set = class_set
        self.buffer = io.BytesIO()
        self.file = h5py.File(self.buffer, "w", userblock_size=USERBLOCK_SIZE, libver=HDF5_LIBVER)
        write_attrs(self.file.attrs, ROOT_ATTRS, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                                  "class_names": list(class_set.classes),
                                                  "class_set": class_set.to_json(), **attrs})
        self.file.attrs[DEFAULT] = IMAGES
        self.palette = pascal_palette()
        palette = self.file.create_dataset(PALETTE, data=self.palette)
        _write_spec_strings(palette, PALETTE_SPEC)
        self.palette_ref = palette.ref
        self.images = self.file.create_group(IMAGES)
        self.images.attrs.update(NXENTRY_ATTRS)
        self.group_properties = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
        self.group_properties.set_attr_phase_change(*IMAGE_GROUP_ATTRIBUTE_PHASE_CHANGE)
        self.group_properties.set_obj_track_times(False)   # no creation times: equal records give equal bytes
        self.link_properties = h5py.h5p.create(h5py.h5p.LINK_CREATE)
        self.link_properties.set_char_encoding(h5py.h5t.CSET_UTF8)   # group names as h5py's create_group stores them
        self.count = 0

    def _label_dataset(self, group: h5py.Group, kind: str, labels: np.ndarray) -> None:
        labels = np.asarray(labels, np.uint8)
        data = _single_chunk_dataset(group, kind, labels)
        _write_spec_strings(data, IMAGE_SPEC)
        data.attrs.create(PALETTE_REF, [self.palette_ref], dtype=h5py.ref_dtype)
        data.attrs[IMAGE_MINMAX] = np.array([labels.min(), labels.max()], np.uint8)
        data.attrs[VALID_RANGE] = np.array([0, self.class_set.num_classes - 1], np.uint8)
        rgb = np.take(self.palette, labels, axis=0)   # 9x faster than palette[labels]
        rendering = _single_chunk_dataset(group, RENDERINGS[kind], rgb)
        _write_spec_strings(rendering, TRUECOLOR_SPEC)
        rendering.attrs.update({**RENDERING_ATTRS, "long_name": RENDERING_TITLES[kind]})

    def _row_axis(self, height: int) -> h5py.Dataset:
        """The shard's row axis for images of ``height`` rows (one dataset per height, hard-linked into each group)."""
        path = row_axis_path(height)
        if path not in self.file:
            self.file.create_dataset(path, data=row_axis(height)).attrs["long_name"] = ROW_AXIS_TITLE
        return self.file[path]

    def write(self, record: LabelRecord) -> None:
        """Add one image's record."""
        height, width = record.size
        if record.refined.shape != (height, width) or record.initial.shape != (height, width):
            raise ValueError(f"{record.image_id}: label maps {record.refined.shape}/{record.initial.shape} "
                             f"do not match the image size {record.size}")
        key = image_key(record.image_id)
        # h5py's create_group takes no group-creation properties (IMAGE_GROUP_ATTRIBUTE_PHASE_CHANGE)
        h5py.h5g.create(self.images.id, key.encode(), lcpl=self.link_properties, gcpl=self.group_properties)
        group = self.images[key]
        write_attrs(group.attrs, IMAGE_ATTRS, {"image_id": record.image_id, "height": height, "width": width,
                                               "class_ids": record.class_ids,
                                               "class_names": [self.class_set.classes[c] for c in record.class_ids]})
        group.attrs.update(NXDATA_ATTRS)
        self._label_dataset(group, REFINED, record.refined)
        self._label_dataset(group, INITIAL, record.initial)
        group[ROW_AXIS] = self._row_axis(height)
        if self.count == 0:
            self.images.attrs[DEFAULT] = key
        maps = np.asarray(record.loc_maps_lowres, np.float16)
        loc = group.create_dataset(LOC_MAPS, data=maps, chunks=maps.shape if maps.size else None,
                                   **(DATASET_FILTERS if maps.size else {}))
        write_attrs(loc.attrs, LOC_MAPS_ATTRS, {
            "class_ids": record.loc_class_ids,
            "class_names": [self.class_set.classes[c] for c in record.loc_class_ids], "convention": LOC_CONVENTION})
        if record.class_stats is not None:
            if record.class_stats.class_ids != tuple(record.class_ids):
                raise ValueError(f"{record.image_id}: class records for classes {record.class_stats.class_ids}, "
                                 f"but the image has {tuple(record.class_ids)}")
            stats = group.create_dataset(CLASS_STATS, data=record.class_stats.to_rows())
            write_attrs(stats.attrs, CLASS_STATS_ATTRS, {"changed_pixels": record.class_stats.changed_pixels})
        self.count += 1

    def close(self) -> None:
        """Finish the file and write it to ``path``."""
        if self.file.id.valid:
            self.file.close()
            data = seal(self.buffer.getvalue())
            atomic_write(self.path, lambda handle: handle.write(data))
            self.buffer = io.BytesIO()

    def discard(self) -> None:
        """Drop what was written; nothing reaches the disk."""
        if self.file.id.valid:
            self.file.close()
        self.buffer = io.BytesIO()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


# Settings that outputs of earlier versions stored in their configuration though no label depends on them (runtime
# options now): left out of every run identity, so those outputs resume and compare as before.
RUNTIME_FIELDS_STORED_BEFORE = {"refine": ("points_per_batch",)}


def run_identity(config: dict, weights: dict | None, class_set: dict) -> dict:
    """What a run's labels depend on, as ``config.json`` holds it: the method configuration
    (``PseudoLabelConfig.to_dict()``), the identity of the weights and the class set (``ClassSet.to_json()``), as
    JSON values. Every shard records its parts (root attributes ``config``, ``weights``, ``class_set``)."""
    return json.loads(json.dumps({**method_config(config), "weights": weights, "class_set": class_set}))


def method_config(config: dict) -> dict:
    """A stored configuration without :data:`RUNTIME_FIELDS_STORED_BEFORE` (a copy)."""
    return {part: ({k: v for k, v in value.items() if k not in RUNTIME_FIELDS_STORED_BEFORE.get(part, ())}
                   if isinstance(value, dict) else value) for part, value in config.items()}


def read_identity(path: str | Path) -> dict:
    """A run identity written as JSON (``config.json``, a staging folder's ``identity.json``), as :func:`run_identity`
    gives it."""
    stored = json.loads(Path(path).read_text())
    return run_identity(stored, stored.get("weights"), stored.get("class_set"))


def identity_from_attrs(root_attrs: Mapping) -> dict:
    """:func:`run_identity` from a shard's decoded root attributes (``class_set`` as stored)."""
    return run_identity(root_attrs.get("config", {}), root_attrs.get("weights"), root_attrs.get("class_set", {}))


def shard_identity(path: str | Path) -> dict:
    """The run identity one shard was made under (:func:`run_identity`), from its root attributes."""
    with h5py.File(path, "r") as handle:
        return identity_from_attrs(read_attrs(handle.attrs, ROOT_ATTRS))


def _with_class_set(root_attrs: dict) -> dict:
    return dict(root_attrs, class_set=ClassSet.from_json(root_attrs["class_set"]))


def read_root_attrs(path: str | Path) -> dict:
    """Root attributes of one shard, decoded as the format declares them, ``class_set`` as a :class:`ClassSet`."""
    with h5py.File(path, "r") as handle:
        return _with_class_set(read_attrs(handle.attrs, ROOT_ATTRS))


def shard_image_ids(path: str | Path) -> list[str]:
    """Ids of the images of one shard, in storage order."""
    with h5py.File(path, "r") as handle:
        return [IMAGE_ATTRS["image_id"].decode(group.attrs["image_id"]) for group in handle[IMAGES].values()]


_VERIFIED: set[tuple] = set()  # (path, inode, size, mtime) of the shards this process found intact


def shard_problem(path: str | Path) -> str | None:
    """Why a shard file is damaged (its digest fails, or HDF5 cannot open it), or None. Fast: one sequential read;
    a file already found intact by this process, unchanged since, is not read again."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return None
    problem = verify_file(path)
    if problem is None:
        try:
            h5py.File(path, "r").close()
        except (OSError, ValueError) as error:
            problem = f"HDF5 cannot open it ({error})"
    if problem is None:
        _VERIFIED.add(key)
    return problem


def verify_shard(path: str | Path) -> None:
    """Raise :class:`ShardDamagedError` when :func:`shard_problem` finds one."""
    problem = shard_problem(path)
    if problem is not None:
        raise ShardDamagedError(path, problem)


class ShardSet(Mapping):
    """``image id -> LabelRecord`` over every shard of a directory.

    Opening verifies every shard (:func:`verify_shard`; ``verify=False`` skips it where the directory was verified
    already, e.g. in data-loader workers); a damaged file raises :class:`ShardDamagedError` naming it. Reads that
    fail later (a chunk's Fletcher-32) raise it too. Shards made under different run identities
    (:func:`shard_identity`: another setting, other weights or classes) raise :class:`ShardError` naming the
    setting and two of the files. Files are opened lazily in each process (after a fork a worker
    opens its own handles), so a ShardSet can be handed to DataLoader workers.
    """

    def __init__(self, directory: str | Path, verify: bool = True):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"shard directory '{self.directory}' does not exist; run tools/gen_pseudo.sh first")
        self.shard_paths = [Path(p) for p in sorted(glob.glob(str(self.directory / SHARD_GLOB)))]
        if not self.shard_paths:
            raise FileNotFoundError(f"no {SHARD_GLOB} files in '{self.directory}'; run tools/gen_pseudo.sh first")
        self._where: dict[str, tuple[int, str]] = {}
        for index, path in enumerate(self.shard_paths):
            if verify:
                verify_shard(path)
            try:
                with h5py.File(path, "r") as handle:
                    for key, group in handle[IMAGES].items():
                        image_id = IMAGE_ATTRS["image_id"].decode(group.attrs["image_id"])
                        if image_id in self._where:
                            raise ShardError(f"image '{image_id}' appears in two shards: "
                                             f"{self.shard_paths[self._where[image_id][0]].name} and {path.name}")
                        self._where[image_id] = (index, key)
                    root_attrs = read_attrs(handle.attrs, ROOT_ATTRS)
                if index == 0:
                    self.attrs, first_identity = _with_class_set(root_attrs), identity_from_attrs(root_attrs)
            except (OSError, KeyError) as error:
                raise ShardDamagedError(path, f"unreadable ({error})") from None
            if index:
                self._check_same_identity(first_identity, path, identity_from_attrs(root_attrs))
        manifest = self.directory / MANIFEST
        self.manifest = json.loads(manifest.read_text()) if manifest.is_file() else None
        self.failures = self.manifest.get("failures", []) if self.manifest else []
        self._handles: dict[int, h5py.File] = {}
        self._raw: dict[int, tuple[int, dict]] = {}  # shard index -> (fd, label chunk index), per process
        self._pid = os.getpid()

    def _check_same_identity(self, first: dict, path: Path, identity: dict) -> None:
        """Refuse a directory whose shard ``path`` was made under another identity than its first shard."""
        changed = config_differences(first, identity)
        if changed:
            raise ShardError(f"'{self.directory}' mixes labels made with different settings: {'; '.join(changed)} "
                             f"({self.shard_paths[0].name} -> {path.name}); label it again with one configuration "
                             "(stage one with --overwrite) or read another folder")

    @property
    def class_set(self) -> ClassSet:
        return self.attrs["class_set"]

    def _file(self, index: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: the parent's handles must not be used here
            self._handles, self._raw, self._pid = {}, {}, os.getpid()
        if index not in self._handles:
            self._handles[index] = h5py.File(self.shard_paths[index], "r")
        return self._handles[index]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_raw"] = {}, {}
        return state

    def _damaged(self, index: int, image_id: str, error: Exception) -> ShardDamagedError:
        return ShardDamagedError(self.shard_paths[index], f"image '{image_id}' is unreadable ({error})")

    def __getitem__(self, image_id: str) -> LabelRecord:
        index, key = self._where[image_id]
        try:
            group = self._file(index)[IMAGES][key]
            loc = group[LOC_MAPS]
            attrs = read_attrs(group.attrs, IMAGE_ATTRS)
            return LabelRecord(
                image_id=image_id,
                refined=group[REFINED][()],
                initial=group[INITIAL][()],
                loc_maps_lowres=loc[()].astype(np.float32),
                loc_class_ids=LOC_MAPS_ATTRS["class_ids"].decode(loc.attrs["class_ids"]),
                class_ids=attrs["class_ids"],
                size=(attrs["height"], attrs["width"]),
                class_stats=self._class_stats(group),
            )
        except (OSError, KeyError, ValueError) as error:
            raise self._damaged(index, image_id, error) from None

    @staticmethod
    def _class_stats(group: h5py.Group) -> ClassStats | None:
        if CLASS_STATS not in group:
            return None
        table = group[CLASS_STATS]
        return ClassStats.from_rows(table[()], read_attrs(table.attrs, CLASS_STATS_ATTRS)["changed_pixels"])

    def image_size(self, image_id: str) -> tuple[int, int]:
        """``(height, width)`` of an image, from its attributes only."""
        index, key = self._where[image_id]
        attrs = read_attrs(self._file(index)[IMAGES][key].attrs, IMAGE_ATTRS)
        return attrs["height"], attrs["width"]

    def read_class_stats(self, image_id: str) -> ClassStats | None:
        """Only the per-class records of one image (None for shards written before stage one kept them)."""
        index, key = self._where[image_id]
        return self._class_stats(self._file(index)[IMAGES][key])

    def _label_chunks(self, index: int) -> tuple[int, dict]:
        """File descriptor and ``(key, kind) -> (byte offset, size, shape, fletcher32)`` of every single-chunk gzip
        label map (Fletcher-32 or not).

        Hand-written fast path: h5py's per-read selection machinery costs more than inflating the chunk, and makes
        shard labels slower to load than PNGs; each label map is exactly one deflate-compressed chunk, so reading
        its bytes, checking their Fletcher-32 and inflating them (zlib-ng when installed) gives the identical array.
        """
        handle = self._file(index)
        if index not in self._raw:
            chunks = {}
            for key, group in handle[IMAGES].items():
                for kind in LABEL_KINDS:
                    data = group[kind]
                    plain_gzip = (data.chunks == data.shape and data.compression == "gzip" and not data.shuffle
                                  and data.scaleoffset is None and data.dtype == np.uint8)
                    info = data.id.get_chunk_info(0) if plain_gzip else None
                    if info is not None and info.filter_mask == 0:
                        chunks[key, kind] = (info.byte_offset, info.size, data.shape, data.fletcher32)
            self._raw[index] = (os.open(self.shard_paths[index], os.O_RDONLY), chunks)
        return self._raw[index]

    def read_label(self, image_id: str, kind: str = REFINED) -> np.ndarray:
        """Only one label map (one of ``LABEL_KINDS``): what training reads, without the localization maps."""
        check_label_kind(kind)
        index, key = self._where[image_id]
        try:
            fd, chunks = self._label_chunks(index)
            if (key, kind) not in chunks:  # not a plain single gzip chunk: let HDF5 decode it
                return self._file(index)[IMAGES][key][kind][()]
            offset, size, shape, fletcher32 = chunks[key, kind]
            raw = os.pread(fd, size, offset)
            if fletcher32 and (raw := fletcher32_payload(raw)) is None:
                raise ValueError(f"the Fletcher-32 checksum of its '{kind}' map fails")
            labels = deflate.decompress(raw, bufsize=shape[0] * shape[1])
        except (OSError, KeyError, ValueError, deflate.error) as error:
            raise self._damaged(index, image_id, error) from None
        return np.frombuffer(labels, np.uint8).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        for fd, _ in self._raw.values():
            os.close(fd)
        self._handles, self._raw = {}, {}


def open_shards(directory: str | Path, verify: bool = True) -> ShardSet:
    """Open (and, unless ``verify=False``, verify) every shard of a stage-one output directory."""
    return ShardSet(directory, verify)
