"""Run folders (tfm.runs): where a command writes and which checkpoint it starts from, as a function of its options and
the environment, tested without Lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO

from tfm.errors import UserError
from tfm.runs import RunOptions, resolve_run


def ckpt(path, step=5, best=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    callbacks = {"ModelCheckpoint{}": {"best_model_path": str(best)}} if best else {}
    torch.save({"global_step": step, "callbacks": callbacks}, path)
    return path


def plan(tmp_path, sub="fit", ckpt_path=None, env=None, **opts):
    return resolve_run(sub, RunOptions(root=str(tmp_path / "runs"), **opts), ["configs/vit_tiny_fashion.yaml"],
                       "tfm.tasks.ImageClassification", ckpt_path, env or {})


def test_runs_are_resolved_without_lightning():
    code = "import sys, tfm.runs; print(sorted(m for m in sys.modules if m.split('.')[0] == 'lightning'))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True).stdout.strip() == "[]"


def test_a_new_fit_gets_a_fresh_folder_named_after_its_config(tmp_path):
    p = plan(tmp_path)
    assert p.name == "vit_tiny_fashion" and p.ckpt is None and p.run_dir.parent == tmp_path / "runs" / "vit_tiny_fashion"
    assert plan(tmp_path, version="v1").run_dir == tmp_path / "runs" / "vit_tiny_fashion" / "v1"
    assert plan(tmp_path, env={"SLURM_JOB_ID": "77"}).run_dir.name == "77"  # a SLURM job: its id
    assert plan(tmp_path, sub="test").run_dir.name.endswith("-test")
    (tmp_path / "runs" / "vit_tiny_fashion" / "v1").mkdir(parents=True)
    with pytest.raises(UserError, match="run folder .*v1 already exists: resume it with --ckpt_path last"):
        plan(tmp_path, version="v1")


def test_resuming_goes_on_in_the_runs_own_folder(tmp_path):
    exp = tmp_path / "runs" / "vit_tiny_fashion"
    with pytest.raises(UserError, match="--ckpt_path last: no checkpoint under"):
        plan(tmp_path, sub="test", ckpt_path="last")
    with pytest.warns(UserWarning, match="starting a fresh run"):
        assert plan(tmp_path, ckpt_path="last").ckpt is None
    best = ckpt(exp / "a" / "checkpoints" / "best-epoch=0-step=3.ckpt", step=3)
    last = ckpt(exp / "a" / "checkpoints" / "last.ckpt", step=5, best=best)
    p = plan(tmp_path, ckpt_path="last")
    assert (p.run_dir, p.ckpt) == (exp / "a", str(last))
    p = plan(tmp_path, sub="test", ckpt_path="best")
    assert p.ckpt == str(best) and p.run_dir.parent == exp and p.run_dir.name.endswith("-test")
    # a run's own config (its version) evaluated: beside it, <run>/test/<time>, with its best weights
    p = plan(tmp_path, sub="test", version="a")
    assert p.ckpt == str(best) and p.run_dir.parent == exp / "a" / "test"
    # a requeued SLURM job goes on with its own run; another DDP rank writes into rank 0's folder
    ckpt(exp / "77" / "checkpoints" / "last.ckpt", step=9)
    p = plan(tmp_path, env={"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "1"})
    assert (p.run_dir, p.ckpt, p.version) == (exp / "77", str(exp / "77" / "checkpoints" / "last.ckpt"), "77")
    assert plan(tmp_path, env={"LOCAL_RANK": "1", "TFM_RUN_DIR": str(exp / "a")}).run_dir == exp / "a"
