"""Crash-safe, resumable storage of a stage-one run.

Each finished image is first staged atomically as a small ``.npz`` (temp file, fsync, rename) under
``<out>/.staging/r<rank>/``; every ``shard_size`` staged images are packed into a shard written under a temp name and
renamed into place, then the staged files are removed. After a crash (even ``kill -9``) a rerun finds every finished
image either in a shard or staged; before any rank starts, rank 0 deletes the temp files and packs what every rank
had staged (so the number of ranks may change between runs). Only images that were in flight are computed again, and
no half-written file is ever read. Rank 0 also verifies every shard's checksum first: a damaged shard is moved to
``<out>/damaged/``, noted in ``damaged.json`` (and the manifest), and its images are labelled again.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from pseudolabel.classes import ClassSet
from pseudolabel.cli_options import config_differences
from pseudolabel.exits import guard_write, prepare_output_dir
from pseudolabel.storage.atomic import atomic_write
from pseudolabel.storage.format import CONFIG_FILE, MANIFEST, RUN_FORMAT, SHARD_GLOB
from pseudolabel.storage.shards import (LabelRecord, ShardWriter, read_identity, shard_identity, shard_image_ids,
                                        shard_problem)

LOG = logging.getLogger(__name__)
DAMAGED_DIR, DAMAGED_FILE = "damaged", "damaged.json"


STAGED_IDENTITY = "identity.json"   # in each .staging/r<rank>/: the run identity its records were made under


def _write_json(path: Path, data) -> None:
    guard_write(lambda: atomic_write(path, lambda h: h.write(json.dumps(data, indent=1).encode())), path)


class RunStore:
    """The output directory of one rank."""

    def __init__(self, out: Path, rank: int, class_set: ClassSet, attrs: dict, shard_size: int = 200):
        self.out, self.rank, self.class_set, self.attrs, self.shard_size = Path(out), rank, class_set, attrs, shard_size
        self.staging = self.out / ".staging" / f"r{rank:03d}"
        self.identity: dict | None = None

    # -- set-up -------------------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        prepare_output_dir(self.out)

    def clear(self) -> None:
        """Remove a previous run's outputs (``--overwrite``; rank 0 only)."""
        for path in list(self.out.glob(SHARD_GLOB)) + list(self.out.glob("*-r*.json")):
            path.unlink()
        for name in (MANIFEST, CONFIG_FILE, DAMAGED_FILE):
            (self.out / name).unlink(missing_ok=True)
        for folder in (".staging", DAMAGED_DIR):
            shutil.rmtree(self.out / folder, ignore_errors=True)

    def check_config(self, identity: dict, overwrite: bool) -> None:
        """Refuse to mix with labels of another run identity (:func:`~pseudolabel.storage.shards.run_identity`),
        unless ``overwrite``: ``config.json``, every shard and every rank's staged records are compared with
        ``identity``, which is then recorded in ``config.json`` (rank 0) and with the records this rank stages."""
        path = self.out / CONFIG_FILE
        if not overwrite:
            if path.is_file():
                self._refuse_other_identity(config_differences(read_identity(path), identity), self.out)
            for shard in sorted(self.out.glob(SHARD_GLOB)):
                try:
                    made_under = shard_identity(shard)
                except (OSError, KeyError, ValueError):
                    continue  # unreadable: set aside as damaged by recover() and labelled again
                self._refuse_other_identity(config_differences(made_under, identity), shard)
            for staged in sorted(self.out.glob(f".staging/r*/{STAGED_IDENTITY}")):
                self._refuse_other_identity(config_differences(read_identity(staged), identity), staged.parent)
        self.identity = identity
        if self.rank == 0:
            _write_json(path, identity)

    def _refuse_other_identity(self, changed: list[str], where: Path) -> None:
        if changed:
            raise ValueError(f"'{where}' holds labels made with another configuration ({'; '.join(changed)}). "
                             "Use another --out, or --overwrite to delete them and start again")

    def set_aside_damaged(self) -> list[dict]:
        """Move every shard whose checksum fails to ``damaged/`` and note it in ``damaged.json``; its images are then
        no longer finished, so the run labels them again. Returns the notes of this call."""
        notes = []
        for shard in sorted(self.out.glob(SHARD_GLOB)):
            problem = shard_problem(shard)
            if problem is None:
                continue
            target = self.out / DAMAGED_DIR / shard.name
            while target.exists():
                target = target.with_name(target.name + ".again")

            def move(shard=shard, target=target) -> None:
                target.parent.mkdir(exist_ok=True)
                shard.replace(target)
            guard_write(move, target)
            notes.append({"shard": shard.name, "moved_to": str(target.relative_to(self.out)), "reason": problem,
                          "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
            LOG.warning("shard %s is damaged (%s): moved to %s; its images are labelled again", shard.name, problem,
                        notes[-1]["moved_to"])
        if notes:
            _write_json(self.out / DAMAGED_FILE, self.damaged() + notes)
        return notes

    def damaged(self) -> list[dict]:
        """Every note of ``damaged.json``: the shards this directory has set aside."""
        path = self.out / DAMAGED_FILE
        return json.loads(path.read_text()) if path.is_file() else []

    def recover(self) -> int:
        """Rank 0, while the other ranks wait at a barrier: finish what an interrupted run left. Every temp file is
        removed, damaged shards are set aside (:meth:`set_aside_damaged`) and the records staged by every rank are
        packed into shards, whatever the number of ranks was then (records already in a shard, packed just before a
        crash, are dropped). Returns the number of records packed."""
        temps = [*self.out.glob("*.tmp"), *self.out.glob(".staging/r*/*.tmp")]
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        self.set_aside_damaged()
        in_shards = self.finished()
        staged: dict[str, Path] = {}
        for path in sorted(self.out.glob(".staging/r*/*.npz")):
            with np.load(path, allow_pickle=False) as arrays:
                image_id = str(arrays["image_id"])
            if image_id in in_shards or image_id in staged:
                path.unlink()
            else:
                staged[image_id] = path
        paths = list(staged.values())
        for start in range(0, len(paths), self.shard_size):
            self.pack(paths[start: start + self.shard_size])
        return len(paths)

    def finished(self) -> set[str]:
        """Ids of the images in this directory's shards."""
        return {image_id for shard in sorted(self.out.glob(SHARD_GLOB)) for image_id in shard_image_ids(shard)}

    # -- writing ------------------------------------------------------------------------------------------------
    def stage(self, record: LabelRecord) -> None:
        """Persist one finished image atomically; pack a shard when enough are staged."""
        name = hashlib.sha1(record.image_id.encode()).hexdigest()[:20] + ".npz"

        def write():
            self.staging.mkdir(parents=True, exist_ok=True)
            atomic_write(self.staging / name, lambda h: np.savez(h, **record.to_arrays()))
        if self.identity is not None and not (self.staging / STAGED_IDENTITY).is_file():
            guard_write(lambda: self.staging.mkdir(parents=True, exist_ok=True), self.staging)
            _write_json(self.staging / STAGED_IDENTITY, self.identity)
        guard_write(write, self.staging)
        if len(list(self.staging.glob("*.npz"))) >= self.shard_size:
            self.pack()

    def pack(self, staged: list[Path] | None = None) -> Path | None:
        """Move staged records (default: all of this rank's) into a new shard (built in memory, written to a temp
        name, then renamed into place)."""
        staged = sorted(self.staging.glob("*.npz")) if staged is None else staged
        if not staged:
            return None
        existing = [int(p.stem.split("-")[-1]) for p in self.out.glob(f"shard-r{self.rank:03d}-*.h5")]
        path = self.out / f"shard-r{self.rank:03d}-{max(existing, default=-1) + 1:05d}.h5"

        def write():
            with ShardWriter(path, self.class_set, dict(self.attrs, rank=self.rank)) as writer:
                for file in staged:
                    with np.load(file, allow_pickle=False) as arrays:
                        writer.write(LabelRecord.from_arrays(arrays))
        guard_write(write, path)
        for file in staged:
            file.unlink()
        return path

    def write_json(self, name: str, data) -> None:
        _write_json(self.out / name, data)

    def write_manifest(self, world_size: int) -> dict:
        """List every shard with its images, every failure and each rank's summary (rank 0, after all ranks)."""
        shards = {p.name: shard_image_ids(p) for p in sorted(self.out.glob(SHARD_GLOB))}
        failures, summaries = [], []
        for rank in range(world_size):
            for name, target in ((f"failures-r{rank:03d}.json", failures), (f"summary-r{rank:03d}.json", summaries)):
                path = self.out / name
                if path.is_file():
                    loaded = json.loads(path.read_text())
                    target.extend(loaded if isinstance(loaded, list) else [loaded])
        manifest = {"format": RUN_FORMAT, "config": json.loads((self.out / CONFIG_FILE).read_text()),
                    "num_images": sum(len(v) for v in shards.values()), "shards": shards, "failures": failures,
                    "damaged": self.damaged(), "summaries": summaries}
        self.write_json(MANIFEST, manifest)
        return manifest
