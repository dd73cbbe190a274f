"""OutputLock: one holder at a time, the holder named in the refusal, released on exit and by the OS when the holder
dies (a kill -9 leaves no stale lock)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from pseudolabel.storage.lock import OutputLock, OutputLockedError


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with OutputLock(tmp_path / "out"):
        info = json.loads((tmp_path / "out" / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["started"]
        with pytest.raises(OutputLockedError) as error:
            OutputLock(tmp_path / "out", what="--work-dir").acquire()
        message = str(error.value)
        assert f"'{tmp_path / 'out'}' is in use by another run (PID {os.getpid()} on {socket.gethostname()}" in message
        assert "another --work-dir" in message and "\n" not in message
        with OutputLock(tmp_path / "out", part="r001"):   # another part of the folder is free
            pass
    with OutputLock(tmp_path / "out"):                     # released on leaving the block
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; from pseudolabel.storage.lock import OutputLock; "
                               f"OutputLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputLockedError, match=f"PID {holder.pid} "):
        OutputLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with OutputLock(tmp_path):   # the lock file is still there; the lock is not
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
