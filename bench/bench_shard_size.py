#!/usr/bin/env python
"""Shard bytes per image and the share of the colour renderings (the ``*_rgb`` views silx and h5web show), for the
current writer and, with ``--rev``, the writer of another git revision (e.g. the format-2 one), on the same records
in the same run. One command, prints a table:

    .venv/bin/python bench/bench_shard_size.py [--images 40] [--shards outputs/demo] [--rev REV]

Record sets: "VOC-sized", synthetic 375x500 maps (bench/bench_export.py's blob_record: 1-3 smooth blobs, a 5-pixel
ignore band on their borders; Y0 the same map with the band set to background, shifted 3 pixels; smoothed
localization maps), and with ``--shards`` the records of a stage-one output (e.g. ``tools/gen_pseudo.sh demo``),
repeated up to ``--images``. Bytes per image are marginal: (a shard of N images - a shard of none) / N; "labels" are
the two label maps' stored chunks, "renderings" the two colour renderings' chunks and object headers (what they add,
but for the group's four NXdata attributes and the link to the row axis); ``write ms`` is ShardWriter's time per
image.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# --source DIR (the child of --rev): import the pseudolabel package extracted there instead of this checkout's
SOURCE = sys.argv[sys.argv.index("--source") + 1] if "--source" in sys.argv else None
sys.path.insert(0, SOURCE or str(REPO))
if SOURCE is None:
    import tools._venv  # noqa: F401  (re-runs inside the project venv with tools/_env.sh settings)
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402
from pseudolabel.classes import get_class_set  # noqa: E402
from pseudolabel.storage.shards import LabelRecord, ShardWriter, open_shards  # noqa: E402

VOC = get_class_set("voc")
ATTRS = {"dataset": "voc", "split": "train", "config": {}, "random_weights": True, "versions": {}, "weights": {},
         "rank": 0}


def voc_sized_records(count: int) -> list[LabelRecord]:
    from bench.bench_export import blob_record

    rng = np.random.default_rng(0)
    records = []
    for index in range(count):
        record = blob_record(rng, f"voc{index:05d}")
        initial = np.roll(np.where(record.refined == 255, 0, record.refined), 3, axis=1).astype(np.uint8)
        maps = ndi.gaussian_filter(record.loc_maps_lowres, (0, 2, 2))
        maps = (maps - maps.min()) / max(float(np.ptp(maps)), 1e-6)
        records.append(LabelRecord(image_id=record.image_id, refined=record.refined, initial=initial,
                                   loc_maps_lowres=maps.astype(np.float32), loc_class_ids=record.loc_class_ids,
                                   class_ids=record.class_ids, size=record.size))
    return records


def output_records(folder: Path, count: int) -> list[LabelRecord]:
    shards = open_shards(folder)
    found = [shards[image_id] for image_id in sorted(shards)]
    return [LabelRecord(image_id=f"{record.image_id}-{index}", refined=record.refined, initial=record.initial,
                        loc_maps_lowres=record.loc_maps_lowres, loc_class_ids=record.loc_class_ids,
                        class_ids=record.class_ids, size=record.size)
            for index, record in ((i, found[i % len(found)]) for i in range(max(count, len(found))))]


def measure(records: list[LabelRecord], work: Path) -> dict:
    """Marginal bytes per image, the label maps' and the renderings' bytes per image, the writer's ms per image."""
    empty, full = work / "empty.h5", work / "full.h5"
    with ShardWriter(empty, VOC, ATTRS):
        pass
    start = time.perf_counter()
    with ShardWriter(full, VOC, ATTRS) as writer:
        for record in records:
            writer.write(record)
    seconds = time.perf_counter() - start
    with h5py.File(full, "r") as handle:
        version = int(handle.attrs["format_version"])
        rendering = sum(group[name].id.get_storage_size() + h5py.h5o.get_info(group[name].id).hdr.space.total
                        for group in handle["images"].values() for name in ("refined_rgb", "initial_rgb")
                        if name in group)
        labels = sum(group[name].id.get_storage_size() for group in handle["images"].values()
                     for name in ("refined", "initial"))
    count = len(records)
    return {"format": version, "bytes": (full.stat().st_size - empty.stat().st_size) / count,
            "label_chunks": labels / count, "renderings": rendering / count, "write_ms": 1000 * seconds / count}


def measure_staged(staged: dict[str, Path], work: Path) -> dict[str, dict]:
    """:func:`measure` for each set of records staged as npz files (LabelRecord.to_arrays)."""
    results = {}
    for name, folder in staged.items():
        records = []
        for path in sorted(folder.glob("*.npz")):
            with np.load(path, allow_pickle=False) as arrays:
                records.append(LabelRecord.from_arrays(arrays))
        (work / name).mkdir()
        results[name] = measure(records, work / name)
    return results


def at_revision(rev: str, staged: dict[str, Path], work: Path) -> dict[str, dict]:
    """The same measurement with the ``pseudolabel`` package of git revision ``rev``, in a subprocess."""
    source = work / "source"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "pseudolabel"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(source, filter="data")
    result = subprocess.run([sys.executable, __file__, "--source", str(source), "--work", str(work),
                             "--staged", json.dumps({name: str(folder) for name, folder in staged.items()})],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="images per record set (default 40)")
    parser.add_argument("--shards", type=Path, help="also the records of this stage-one output (e.g. outputs/demo)")
    parser.add_argument("--rev", help="also measure the writer of this git revision (e.g. the format-2 commit)")
    parser.add_argument("--staged", help=argparse.SUPPRESS)   # child mode of --rev: JSON {set: npz folder}
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.staged:
        import pseudolabel

        assert Path(pseudolabel.__file__).is_relative_to(args.source), pseudolabel.__file__
        staged = {name: Path(folder) for name, folder in json.loads(args.staged).items()}
        with tempfile.TemporaryDirectory(dir=args.work) as work:
            print(json.dumps(measure_staged(staged, Path(work))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = {"VOC-sized 375x500": voc_sized_records(args.images)}
        if args.shards:
            sets[f"{args.shards.name} (stage one)"] = output_records(args.shards, args.images)
        staged = {}
        for index, (name, records) in enumerate(sets.items()):
            staged[name] = work / f"staged{index}"
            staged[name].mkdir()
            for number, record in enumerate(records):
                np.savez(staged[name] / f"{number:05d}.npz", **record.to_arrays())
        (work / "current").mkdir()
        rows = {"this checkout": measure_staged(staged, work / "current")}
        if args.rev:
            (work / "rev").mkdir()
            rows[args.rev] = at_revision(args.rev, staged, work / "rev")
    print(f"{'records':<24}{'writer':<16}{'format':>7}{'B/image':>10}{'labels B':>10}{'renderings B':>14}"
          f"{'write ms':>10}")
    for name in sets:
        for writer, results in rows.items():
            r = results[name]
            print(f"{name:<24}{writer:<16}{r['format']:>7}{r['bytes']:>10.0f}{r['label_chunks']:>10.0f}"
                  f"{r['renderings']:>14.0f}{r['write_ms']:>10.1f}")


if __name__ == "__main__":
    main()
