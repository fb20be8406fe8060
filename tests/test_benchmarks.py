"""The benchmark scripts that no other test runs stay runnable: the GPU suite at tiny sizes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [pytest.mark.slow]


def test_make_bench_gpu_quick_runs_every_case_under_bf16():
    """``make bench-gpu QUICK=1``: every task's GPU-size config a few steps through the CLI under
    bf16-mixed with its clipping, then each side-by-side benchmark in smoke mode, all on the CPU."""
    venv = Path(sys.prefix)  # the Makefile's .venv (or whichever Python runs the tests)
    proc = subprocess.run(["make", "-s", "bench-gpu", "QUICK=1", f"VENV={venv}"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith('{"bench"')]
    train = {ln["config"]["case"]: ln for ln in lines if ln["bench"] == "gpu_train"}
    assert set(train) == {"bert_base", "vit_base", "translation_base", "bert_base_topics", "vit_base_seg_scenes", "vit_base_det_scenes"}
    for case, ln in train.items():
        assert ln["global_step"] == 4 and ln["ours"] > 0 and ln["config"]["precision"] == "bf16-mixed", case
        assert 0 < ln["mfu"] < 1.5 and ln["samples_per_s"] > 0, case
        assert ln["config"]["gradient_clip_val"] == (None if case == "translation_base" else 1.0), case
    side = [ln for ln in lines if ln["bench"] != "gpu_train"]
    assert {ln["bench"] for ln in side} == {"bert_pretrain_throughput", "vit_throughput", "translation_train_throughput",
                                            "translation_decode_speed"}
    assert all(ln["ratio"] > 0 and ln["config"]["precision"] == "bf16-mixed" for ln in side)
    # the JSON lines are the last lines printed
    assert proc.stdout.strip().splitlines()[-len(lines):] == [json.dumps(ln) for ln in lines]
