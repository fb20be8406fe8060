"""Exact resume after SIGKILL, task by task (each task adds one line to TASKS)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_VIT
from resume_helper import assert_exact_resume

from tfm.cli import main

pytestmark = [pytest.mark.slow]

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
    # batches by token count, dropout, label smoothing, 5-batch epochs each ending in a BLEU validation (a stop
    # exactly at an epoch's last step, and a second one after it: the test below)
    "translation_small_bible": ("configs/translation_small_bible.yaml", ["--model.arch=transformer_tiny", "--model.dim=32", "--model.ffn_dim=64",
                                "--model.num_heads=2", "--data.vocab_size=400", "--data.max_tokens=512", "--trainer.limit_train_batches=5",
                                "--trainer.limit_val_batches=1", "--model.bleu_every_n_epochs=1", "--model.max_len_b=4", "--model.max_len_a=0"]),
    # generated scenes, random resized crop + flip moving masks and boxes, dropout, stochastic depth, EMA
    **{f"vit_tiny_{t}_scenes": (f"configs/vit_tiny_{t}_scenes.yaml", [*TINY_VIT, *extra, "--model.dropout=0.1", "--model.drop_path_rate=0.2",
                                "--model.ema_decay=0.9", "--data.batch_size=8", "--data.crop_scale=[0.5,1.0]", "--data.num_val_scenes=8",
                                "--trainer.limit_train_batches=5", "--trainer.val_check_interval=1.0", "--trainer.limit_val_batches=1"])
       for t, extra in (("seg", ["--model.decoder_channels=[16,16,16]"]), ("det", ["--model.fpn_channels=16", "--model.head_channels=16"]))},
}


def test_ctrl_c_stops_with_a_checkpoint_and_the_runs_own_config_resumes_it_bitwise(tmp_path):
    """Ctrl-C (SIGINT) mid-epoch, a DataLoader worker running: a checkpoint at the next batch end, the resume command printed,
    exit 130; `fit --config <run>/config.yaml --ckpt_path last` (nothing else) continues that run
    in its folder from the interrupt step, bitwise equal to a run never interrupted."""
    import signal

    config, args = TASKS["vit_tiny_fashion"]
    # with a DataLoader worker: Ctrl-C reaches the whole process group, the worker must outlive it;
    # seed 2: the signal comes after step 2, so training stops mid-epoch (3 of 5 batches)
    stopped = assert_exact_resume(config, [*args, "--data.num_workers=1"], tmp_path, steps=12, seed=2, sig=signal.SIGINT,
                                  with_run_config=True, wandb=True)  # W&B on: the stopped run's W&B run goes on too
    assert len(list((tmp_path / "broken").glob("*/*"))) == 1  # the same run folder, no new one
    assert 2 < stopped < 12


@pytest.mark.parametrize("task", TASKS)
def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(task, tmp_path):
    config, args = TASKS[task]
    assert_exact_resume(config, args, tmp_path, steps=12)


@pytest.mark.parametrize("task, workers", [("translation_small_bible", 0), ("vit_tiny_fashion", 1)])
def test_resume_from_an_epochs_last_step_then_again_is_exact(tmp_path, task, workers):
    """A run stopped right after an epoch's last step resumes into the next epoch's batches (not
    the old epoch's again), and its checkpoints there hold the right data position, so a second
    stop and resume is exact too. Token-count batches (a batch sampler), and a sampler feeding a
    DataLoader worker (whose iterator draws its first batches when Lightning makes it on a
    restart, before ``set_epoch``); 5-batch epochs, 12 steps; the weights are compared at the first
    step after each resume and at the end."""
    config, args = TASKS[task]  # 5-batch epochs
    common = ["fit", "--config", config, *args, "--trainer.max_steps=12", "--trainer.max_epochs=1000", "--run.test_after_fit=false",
              "--run.wandb=false", "--run.media_images=0", "--trainer.enable_progress_bar=false", f"--data.num_workers={workers}"]

    def keep_every_step(folder: Path) -> list[str]:
        return ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps=1", "--trainer.callbacks.save_top_k=-1",
                f"--trainer.callbacks.dirpath={folder}", "--trainer.callbacks.filename={step}"]

    def weights(folder: Path, step: int) -> dict[str, torch.Tensor]:
        return torch.load(folder / f"step={step}.ckpt", map_location="cpu", weights_only=True)["state_dict"]

    def resume_from(checkpoint: Path, name: str) -> Path:
        """A run folder holding only ``checkpoint`` as its last.ckpt (as a kill right after that step leaves it), resumed."""
        (run,) = (tmp_path / "straight").glob("*/*/")
        folder = tmp_path / name / run.parent.name / run.name
        shutil.copytree(run, folder)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        (folder / "checkpoints").mkdir()
        shutil.copyfile(checkpoint, folder / "checkpoints" / "last.ckpt")
        main([*common, *keep_every_step(tmp_path / f"{name}-steps"), f"--run.root={tmp_path / name}", "--ckpt_path=last"])
        return tmp_path / f"{name}-steps"

    main([*common, *keep_every_step(tmp_path / "straight-steps"), f"--run.root={tmp_path / 'straight'}"])
    straight = tmp_path / "straight-steps"
    once = resume_from(straight / "step=5.ckpt", "once")  # the last step of epoch 0
    twice = resume_from(once / "step=7.ckpt", "twice")  # two steps into the epoch after that resume
    for resumed, first in ((once, 6), (twice, 8)):
        for step in (first, 12):
            expected, got = weights(straight, step), weights(resumed, step)
            different = [k for k in expected if not torch.equal(expected[k], got[k])]
            assert not different, f"{resumed.name} at step {step}: {len(different)} tensors differ, e.g. {different[:3]}"
