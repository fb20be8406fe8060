"""Runs ``python -m tfm`` with a fault at a chosen moment, for tests/test_checkpointing.py.

    python tests/fault_helper.py kill-during-save N fit --config ...

``kill-during-save N``: SIGKILL this process inside the N-th checkpoint write, after the bytes
are written and before the file is committed (the moment a crash would truncate a naive write).
"""

from __future__ import annotations

import os
import signal
import sys

from tfm.cli import main

fault, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
assert fault == "kill-during-save", fault
calls = 0
real_fsync = os.fsync


def fsync_then_die(fd: int) -> None:
    global calls
    calls += 1
    if calls == n:
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)


os.fsync = fsync_then_die  # only tfm.checkpointing calls fsync in a tfm run
main(args)
