"""The one downloader (pseudolabel/download.py) against local HTTP endpoints: content, checksums, timeout, and
nothing left under the target name when a download fails."""
import hashlib
import threading
import time

import pytest

from pseudolabel.download import DownloadError, download_file, file_sha256
from tests.fixtures.file_server import serving, stalled

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one read chunk


def test_file_sha256_matches_hashlib_over_the_bytes(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD)
    assert file_sha256(path) == hashlib.sha256(PAYLOAD).hexdigest()


def test_downloads_the_file_and_checks_the_full_digest_or_a_prefix(tmp_path):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    with serving({"w.pth": PAYLOAD}) as base:
        for name, expected in (("full", digest), ("prefix", digest[:8]), ("unchecked", None)):
            target = tmp_path / name / "w.pth"
            assert download_file(base + "w.pth", target, expected) == target
            assert target.read_bytes() == PAYLOAD
            assert [p.name for p in target.parent.iterdir()] == ["w.pth"]   # no temp file left


@pytest.mark.parametrize("expected", ["0" * 64, "deadbeef"])
def test_a_checksum_mismatch_leaves_nothing(tmp_path, expected):
    with serving({"w.pth": PAYLOAD}) as base, pytest.raises(DownloadError, match="checksum mismatch.*w.pth"):
        download_file(base + "w.pth", tmp_path / "w.pth", expected)
    assert not any(tmp_path.iterdir())


def test_a_missing_file_names_the_url(tmp_path):
    with serving({}) as base, pytest.raises(DownloadError, match="absent.pth.*404"):
        download_file(base + "absent.pth", tmp_path / "w.pth")
    assert not any(tmp_path.iterdir())


def test_a_stalled_server_fails_after_the_timeout(tmp_path):
    outcome = {}

    def attempt():
        start = time.perf_counter()
        try:
            download_file(url, tmp_path / "w.pth", timeout=0.5)
        except DownloadError as error:
            outcome["error"] = str(error)
        outcome["seconds"] = time.perf_counter() - start

    with stalled() as url:
        worker = threading.Thread(target=attempt, daemon=True)  # a download without a timeout would hang: the test
        worker.start()                                          # fails instead of waiting with it
        worker.join(20)
    assert not worker.is_alive(), "the download did not time out"
    assert "timed out" in outcome["error"] and outcome["seconds"] < 10
    assert not any(tmp_path.iterdir())
