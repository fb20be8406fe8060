"""Checkpoint files that are either whole or absent.

Lightning's own writer stages a checkpoint in the system temp folder and moves it into place;
when that folder is on another file system (``/tmp`` on tmpfs, a cluster's scratch disk) the move
is a copy, and a kill or a full disk during the copy leaves a truncated ``last.ckpt``. Here the
bytes go to ``<name>.partial-<pid>`` beside the target, are flushed to disk, and replace the
target in one ``os.replace``; on any failure the partial file is removed and the previous
checkpoint is untouched. A full disk ends the run with one clear line.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import UserError

PARTIAL = ".partial-"


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        fs = get_filesystem(path)
        if type(fs).__name__ != "LocalFileSystem":  # object stores: uploads are atomic already
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            write_atomic(target, buffer.getbuffer())
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise UserError(
                    f"cannot write checkpoint {target}: {os.strerror(e.errno).lower()}; the earlier checkpoints are intact: "
                    "free space, then resume with --ckpt_path last"
                ) from None
            raise


def write_atomic(path: Path, data: str | bytes | memoryview) -> Path:
    """``data`` into ``path`` whole or not at all: written to ``<name>.partial-<pid>`` beside it, flushed to disk, then
    moved over it in one ``os.replace``; on a failure the partial file is removed and ``path`` is as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}{PARTIAL}{os.getpid()}")
    try:
        with open(partial, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def remove_partial_checkpoints(folder: Path) -> list[Path]:
    """Deletes what a write killed part-way left behind (``*.partial-<pid>``)."""
    found = [p for p in folder.glob(f"*{PARTIAL}*") if p.is_file()]
    for p in found:
        p.unlink(missing_ok=True)
    return found
