"""DDP on CPU (gloo, 2 processes) through the CLI: the same numbers as one process.

DDP runs in a subprocess of the CLI (under pytest, Lightning's ``ddp`` would relaunch pytest).
Each task joins with one line in TASKS."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DDP, TINY_VIT, run_cli

from tfm.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

TASKS = {
    "vit_tiny_fashion": ("configs/vit_tiny_fashion.yaml", [*TINY_VIT, "--data.batch_size=64"]),
    "bert_tiny": ("configs/bert_tiny.yaml", ["--data.max_documents=60", "--data.batch_size=32"]),
    "bert_mini_topics": ("configs/bert_mini_topics.yaml", ["--model.arch=bert_tiny", "--data.batch_size=64"]),
    "translation_small_bible": ("configs/translation_small_bible.yaml", ["--model.arch=transformer_tiny", "--model.dim=32", "--model.ffn_dim=64",
                                "--model.num_heads=2", "--data.vocab_size=400", "--data.max_tokens=2048", "--model.beam_size=2",
                                "--model.max_len_b=5", "--model.max_len_a=0.2", "--model.bleu_every_n_epochs=1"]),
    "vit_tiny_seg_scenes": ("configs/vit_tiny_seg_scenes.yaml", [*TINY_VIT, "--model.decoder_channels=[16,16,16]", "--data.batch_size=16",
                            "--data.num_val_scenes=64"]),
    "vit_tiny_det_scenes": ("configs/vit_tiny_det_scenes.yaml", [*TINY_VIT, "--model.fpn_channels=16", "--model.head_channels=16",
                            "--data.batch_size=16", "--data.num_val_scenes=64"]),
}


@pytest.mark.parametrize("task", TASKS)
def test_ddp_fit_trains_and_checkpoints_and_validation_equals_one_process(task, tmp_path):
    """A 2-process fit trains, validates its final weights and checkpoints them; validating that checkpoint in one
    process (this one, which shares nothing with the DDP run but the checkpoint) gives the same numbers."""
    config, args = TASKS[task]
    common = ["--config", config, f"--run.root={tmp_path / 'runs'}", "--run.wandb=false", "--run.media_images=0",
              "--trainer.enable_progress_bar=false", *args]
    run_cli("fit", *common, "--trainer.max_steps=3", "--trainer.check_val_every_n_epoch=null", "--trainer.val_check_interval=3",
            "--trainer.num_sanity_val_steps=0", "--run.test_after_fit=false", *DDP)
    (ckpt,) = (tmp_path / "runs").glob("*/*/checkpoints/last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 3
    (last,) = [json.loads(line) for line in (ckpt.parent.parent / "metrics.jsonl").read_text().splitlines()]
    assert last["step"] == 3
    two = {k: v for k, v in last.items() if k.startswith("val/")}

    metrics = main(["validate", *common, f"--ckpt_path={ckpt}"]).trainer.callback_metrics
    one = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}
    assert one.keys() == two.keys() and any(k.startswith("val/") and any(m in k for m in ("acc", "bleu", "miou", "map")) for k in one)
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-6), k  # sums in another order
