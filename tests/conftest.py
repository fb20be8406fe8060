"""Shared fixtures. Tests run offline: W&B offline, no hub downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
