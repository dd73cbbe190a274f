"""Downloading a file once, safely, and the SHA-256 of a file.

The one downloader of the project (SAM checkpoints, stage two's pretrained backbones): a timeout on every network
operation, so an offline machine fails in seconds instead of waiting forever; the file is streamed to ``<name>.tmp``
and renamed into place only when complete and its checksum matches, so a cached file is never partial. Written with
urllib because torch's ``download_url_to_file`` takes no timeout.
"""
from __future__ import annotations

import hashlib
import http.client
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from pseudolabel.storage.atomic import atomic_write

DOWNLOAD_TIMEOUT_S = 30   # per network operation (connect, each read), not for the whole file
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed (network, timeout, checksum); nothing is left under the target name."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content, hex (weights identities and checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, target: str | Path, sha256: str | None = None,
                  timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``url`` to ``target`` with a progress bar; ``sha256``: the file's SHA-256, or a prefix of it (the
    ``name-<prefix>.pth`` convention of torch hub and OpenMMLab), checked before the file gets its name.

    Raises :class:`DownloadError` naming the URL and the reason.
    """
    target = Path(target)

    def fetch(handle: BinaryIO) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=target.name, disable=None) as progress:
                while block := response.read(CHUNK):
                    digest.update(block)
                    handle.write(block)
                    progress.update(len(block))
        if sha256 and not digest.hexdigest().startswith(sha256.lower()):
            raise DownloadError(f"checksum mismatch for {url}: got SHA-256 {digest.hexdigest()}, expected {sha256}")

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(target, fetch)
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts and a full disk are OSErrors
        raise DownloadError(f"cannot download {url} ({error})") from None
    return target
