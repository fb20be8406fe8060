"""Faults a long run meets, each tried for real: the process killed while writing a checkpoint,
a full disk under the checkpoint folder, a corrupted last.ckpt. Nothing is lost beyond the
steps since the last checkpoint. (SIGKILL mid-step: test_resume.py; SLURM requeue and USR1:
test_slurm.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FEW_STEPS, REPO, TINY_VIT

from tfm.cli import main

pytestmark = [pytest.mark.slow]

ARGS = ["--config", "configs/vit_tiny_fashion.yaml", *TINY_VIT, *FEW_STEPS, "--trainer.limit_train_batches=4",
        "--trainer.max_epochs=100", "--run.save_every_n_steps=1", "--run.test_after_fit=false", "--run.media_images=0",
        "--trainer.enable_progress_bar=false", "--run.version=v"]


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _run(run_root: Path) -> Path:
    return run_root / "vit_tiny_fashion" / "v"


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    straight = tmp_path / "straight"
    main(["fit", *ARGS, "--trainer.max_steps=6", f"--run.root={straight}"])
    expected = _ckpt(_run(straight) / "checkpoints" / "last.ckpt")["state_dict"]

    root = tmp_path / "broken"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")} | {"PYTHONPATH": str(REPO)}
    # two writes per step (step-N.ckpt, last.ckpt): the 7th is step 4's, cut before it is committed
    proc = subprocess.run([sys.executable, "tests/fault_helper.py", "kill-during-save", "7", "fit", *ARGS,
                           "--trainer.max_steps=6", f"--run.root={root}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckpts = _run(root) / "checkpoints"
    partial = list(ckpts.glob("*.partial-*"))
    assert len(partial) == 1  # the write that was cut
    last = _ckpt(ckpts / "last.ckpt")  # intact: the one before
    assert 0 < last["global_step"] < 6

    with pytest.warns(UserWarning, match="interrupted"):
        main(["fit", *ARGS, "--trainer.max_steps=6", f"--run.root={root}", "--ckpt_path=last"])
    assert not list(ckpts.glob("*.partial-*"))
    final = _ckpt(ckpts / "last.ckpt")
    assert final["global_step"] == 6
    assert all(torch.equal(final["state_dict"][k], v) for k, v in expected.items())


needs_mount = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a small tmpfs needs root")


@needs_mount
def test_full_disk_fails_with_one_line_and_keeps_last_ckpt(tmp_path, capsys):
    root = tmp_path / "runs"
    main(["fit", *ARGS, "--trainer.max_steps=2", f"--run.root={root}"])
    ckpts = _run(root) / "checkpoints"
    saved = tmp_path / "saved"
    shutil.copytree(ckpts, saved)
    used = sum(p.stat().st_size for p in saved.iterdir())
    # the checkpoint folder on a tmpfs with room for what is there and 100 kB more (a checkpoint is ~370 kB)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={used + 100_000}", "tmpfs", str(ckpts)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        for p in saved.iterdir():
            shutil.copy2(p, ckpts / p.name)
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *ARGS, "--trainer.max_steps=4", f"--run.root={root}", "--ckpt_path=last"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("tfm: error: cannot write checkpoint") and "no space left on device" in err, err
        assert "--ckpt_path last" in err
        assert _ckpt(ckpts / "last.ckpt")["global_step"] == 2  # intact
        assert not list(ckpts.glob("*.partial-*"))
        shutil.rmtree(saved)
        shutil.copytree(ckpts, saved)
    finally:
        subprocess.run(["umount", str(ckpts)], check=True)
    for p in saved.iterdir():  # space freed: resume
        shutil.copy2(p, ckpts / p.name)
    main(["fit", *ARGS, "--trainer.max_steps=4", f"--run.root={root}", "--ckpt_path=last"])
    assert _ckpt(ckpts / "last.ckpt")["global_step"] == 4


def test_corrupted_last_ckpt_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    root = tmp_path / "runs"
    main(["fit", *ARGS, "--trainer.max_steps=3", f"--run.root={root}"])
    ckpts = _run(root) / "checkpoints"
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated, as by a crash of a naive writer
    # an explicit corrupted file: one clear line
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", *ARGS[:-1], f"--run.root={root}", f"--ckpt_path={last}"])
    assert exit_info.value.code == 2
    assert "cannot be read" in capsys.readouterr().err
    # --ckpt_path last: the newest intact checkpoint of the run (step-3.ckpt), with a warning
    with pytest.warns(UserWarning, match="last.ckpt cannot be read"):
        cli = main(["fit", *ARGS, "--trainer.max_steps=5", f"--run.root={root}", "--ckpt_path=last"])
    assert Path(cli.config["fit"]["ckpt_path"]).name == "step-step=3.ckpt"
    assert _ckpt(last)["global_step"] == 5
