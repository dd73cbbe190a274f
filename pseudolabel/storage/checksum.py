"""Self-checking shards: a SHA-256 of the whole file in its HDF5 user block, and HDF5's Fletcher-32 of single chunks.

Two checks, because HDF5 checksums only part of a file. Every dataset carries HDF5's Fletcher-32 filter, so any read
of damaged label or map bytes fails (HDF5 verifies it itself; the raw label reader in
:mod:`pseudolabel.storage.shards` verifies it with :func:`fletcher32_payload`). But attribute values and the
file's structure carry no checksum there, so the writer also stores the SHA-256 of everything after the user block
(the file's first :data:`USERBLOCK_SIZE` bytes, which HDF5 reserves for the application and every HDF5 tool skips)
in that user block: :func:`verify_file` rechecks the whole file in one sequential read. Standard library and numpy.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pseudolabel.storage.format import USERBLOCK_SIZE

DIGEST_TAG = b"cep-pseudolabel-shard sha256 "
FLETCHER_BLOCK = 360  # 16-bit words summed between two folds, as HDF5 does (H5checksum.c)


def seal(data: bytes) -> bytes:
    """``data`` (a complete HDF5 file written with a user block) with the SHA-256 of its body in the user block."""
    digest = hashlib.sha256(memoryview(data)[USERBLOCK_SIZE:]).hexdigest().encode()
    header = (DIGEST_TAG + digest + b"\n").ljust(USERBLOCK_SIZE, b"\0")
    return header + data[USERBLOCK_SIZE:]


def verify_file(path: str | Path, chunk: int = 1 << 22) -> str | None:
    """Why the file does not match the digest in its user block (truncated, bytes changed), or None when it matches.

    A file without a digest (written before shards carried one) is not checkable here and gives None.
    """
    with open(path, "rb") as handle:
        header = handle.read(USERBLOCK_SIZE)
        if not header.startswith(DIGEST_TAG):
            return None
        expected = header[len(DIGEST_TAG): len(DIGEST_TAG) + 64].decode("ascii", "replace")
        digest = hashlib.sha256()
        while block := handle.read(chunk):
            digest.update(block)
    if digest.hexdigest() != expected:
        return "its SHA-256 does not match the one recorded when it was written (bytes changed or file truncated)"
    return None


def _fold(value: int) -> int:
    return (value & 0xFFFF) + (value >> 16)


def fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 (``H5_checksum_fletcher32``): big-endian 16-bit words, sums folded every 360 words.

    Hand-written (vectorised per block of 360 words) because no installed library exposes HDF5's variant, and the raw
    label reader must check a chunk without HDF5's slower read machinery.
    """
    words = np.frombuffer(data, ">u2", count=len(data) // 2).astype(np.int64)
    sum1 = sum2 = 0
    for start in range(0, len(words), FLETCHER_BLOCK):
        block = words[start: start + FLETCHER_BLOCK]
        n = len(block)
        # n steps of (sum1 += w_i; sum2 += sum1) from (sum1, sum2): sum2 gains n * sum1 + sum_i (n - i) * w_i
        sum2 += n * sum1 + int(block @ np.arange(n, 0, -1))
        sum1 += int(block.sum())
        sum1, sum2 = _fold(sum1), _fold(sum2)
    if len(data) % 2:
        sum1 += data[-1] << 8
        sum2 += sum1
        sum1, sum2 = _fold(sum1), _fold(sum2)
    sum1, sum2 = _fold(sum1), _fold(sum2)
    return (sum2 << 16) | sum1


def fletcher32_payload(chunk: bytes) -> bytes | None:
    """The filtered bytes of a raw chunk stored with HDF5's Fletcher-32 filter last (its checksum is the last 4
    bytes, little-endian), or None when the checksum does not match."""
    payload = chunk[:-4]
    return payload if fletcher32(payload) == int.from_bytes(chunk[-4:], "little") else None
