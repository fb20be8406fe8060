"""Shared fixtures. Tests run offline: W&B offline, no hub downloads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.pop("WANDB_API_KEY", None)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
FASHION = REPO / "data" / "fashion_mnist"

# a ViT small enough that a CLI run takes a few seconds
TINY_VIT = ["--model.dim=32", "--model.depth=2", "--model.num_heads=2", "--model.mlp_ratio=2"]
FEW_STEPS = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
             "--trainer.max_epochs=1", "--data.batch_size=16", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    """Configs name bundled data by paths relative to the repository."""
    monkeypatch.chdir(REPO)


@pytest.fixture
def run_root(tmp_path) -> Path:
    return tmp_path / "runs"


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=6, size=32, mode="RGB") -> Path:
    """A small ImageFolder-layout tree of PNGs with class-dependent content."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            arr[..., ci % 3] = 255 - 40 * ci
            img = Image.fromarray(arr)
            (img.convert("L") if mode == "L" else img).save(d / f"{i}.png")
    return root


class RunsCode:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): the stand-in for any code a crafted file runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted(folder, name="crafted.ckpt"):
    """A checkpoint-shaped file (state dict, step, hyper-parameters) with a payload, and the payload's marker."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{name}.ran"
    torch.save({"state_dict": {"net.x": torch.zeros(1)}, "global_step": 3, "hyper_parameters": {"arch": "vit_tiny"},
                "payload": RunsCode(str(marker))}, folder / name)
    return folder / name, marker


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the runs under ``root`` and its hash; W&B's own service log (debug-core.log,
    appended by W&B's background process after a run ends) is not part of a run."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "debug-core.log"}


def settled_snapshot(root: Path, timeout: float = 60.0) -> dict[str, str]:
    """:func:`snapshot` once the files stop changing: on a loaded machine W&B's service still
    appends to a finished run's ``.wandb`` file and ``debug-internal.log`` for a while."""
    deadline, last = time.time() + timeout, snapshot(root)
    while time.time() < deadline:
        time.sleep(1.0)
        now = snapshot(root)
        if now == last:
            return now
        last = now
    return last


def write_mask_folder(root: Path, n: int = 6, top: int = 2, palette: bool = True) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((24, 32, 3), 20 * i, dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        m = np.zeros((24, 32), dtype=np.uint8)
        m[4:12, 4:20] = 1 + i % top
        m[0, :] = 255  # VOC's ignore colour
        im = Image.fromarray(m, mode="P" if palette else "L")
        if palette:
            im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255, 255, 255] * 253)
        im.save(root / "masks" / f"{i}.png")
    return root


def run_cli(*args: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")} | {"PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "tfm", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return {k: float(v) for k, v in re.findall(r"│\s*((?:val|test)/\w+)\s*│\s*([-0-9.e]+)\s*│", out.stdout)}


DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]


def write_coco(root: Path, images=((40, 30), (40, 30), (20, 20)), annotations=None, name="train.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    ims = []
    for i, (w, h) in enumerate(images, start=1):
        Image.fromarray(np.full((h, w, 3), 60 * i, dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        ims.append({"id": i, "file_name": f"im{i}.png", "width": w, "height": h})
    if annotations is None:
        annotations = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5]},
                       {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 10, 20, 20]},
                       {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 40, 30]}]
    data = {"images": ims, "annotations": annotations, "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]}
    path = root / name
    path.write_text(json.dumps(data))
    return path
