"""Exact resume after SIGKILL, task by task (each task adds one line to TASKS)."""

from __future__ import annotations

import pytest

from conftest import TINY_VIT
from resume_helper import assert_exact_resume

TASKS = {
    # dropout, stochastic depth, EMA and several epochs: everything that could drift on a resume
    "vit_tiny_fashion": ("configs/vit_tiny_fashion.yaml", [*TINY_VIT, "--model.dropout=0.1", "--model.drop_path_rate=0.2",
                         "--model.ema_decay=0.9", "--data.batch_size=8", "--trainer.limit_train_batches=5",
                         "--trainer.limit_val_batches=1"]),
    # dynamic masking drawn per batch, dropout, two epochs of a small corpus
    "bert_tiny": ("configs/bert_tiny.yaml", ["--data.max_documents=40", "--data.batch_size=8", "--trainer.limit_train_batches=5",
                  "--trainer.limit_val_batches=1", "--model.ema_decay=0.9"]),
    "bert_mini_topics": ("configs/bert_mini_topics.yaml", ["--model.arch=bert_tiny", "--data.batch_size=8", "--trainer.limit_train_batches=5",
                         "--trainer.limit_val_batches=1"]),
    # batches by token count, dropout, label smoothing; within one epoch (a kill at an epoch's last step, then
    # resumed, is not yet bitwise exact for this task: open, see the issue notes)
    "translation_small_bible": ("configs/translation_small_bible.yaml", ["--model.arch=transformer_tiny", "--model.dim=32", "--model.ffn_dim=64",
                                "--model.num_heads=2", "--data.vocab_size=400", "--data.max_tokens=512", "--trainer.limit_train_batches=20",
                                "--trainer.limit_val_batches=1", "--model.bleu_every_n_epochs=1", "--model.max_len_b=4", "--model.max_len_a=0"]),
    # generated scenes, random resized crop + flip moving masks and boxes, dropout, stochastic depth, EMA
    **{f"vit_tiny_{t}_scenes": (f"configs/vit_tiny_{t}_scenes.yaml", [*TINY_VIT, *extra, "--model.dropout=0.1", "--model.drop_path_rate=0.2",
                                "--model.ema_decay=0.9", "--data.batch_size=8", "--data.crop_scale=[0.5,1.0]", "--data.num_val_scenes=8",
                                "--trainer.limit_train_batches=5", "--trainer.val_check_interval=1.0", "--trainer.limit_val_batches=1"])
       for t, extra in (("seg", ["--model.decoder_channels=[16,16,16]"]), ("det", ["--model.fpn_channels=16", "--model.head_channels=16"]))},
}


@pytest.mark.parametrize("task", TASKS)
def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(task, tmp_path):
    config, args = TASKS[task]
    assert_exact_resume(config, args, tmp_path, steps=12)
