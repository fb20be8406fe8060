"""One helper for every task: a run SIGKILLed at a random step and resumed ends bitwise equal
to the same run never interrupted. A task joins with one test calling :func:`assert_exact_resume`."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tfm.cli import main

REPO = Path(__file__).resolve().parents[1]


def _weights(run_root: Path) -> dict[str, torch.Tensor]:
    (last,) = run_root.glob("*/*/checkpoints/last.ckpt")
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    return ckpt["state_dict"], ckpt["global_step"]


def _step_of(run_root: Path) -> int:
    steps = [int(p.stem.split("=")[-1]) for p in run_root.glob("*/*/checkpoints/step-step=*.ckpt")]
    return max(steps, default=0)


def assert_exact_resume(config: str, args: list[str], tmp_path: Path, steps: int = 12, seed: int | None = None,
                        sig: int = signal.SIGKILL, with_run_config: bool = False, wandb: bool = False) -> int:
    """Train ``steps`` steps uninterrupted; train again, send ``sig`` at a random step (SIGKILL, or
    Ctrl-C's SIGINT, which stops with a checkpoint at the next batch end), resume with
    ``--ckpt_path last`` (with ``with_run_config``: from the run's own ``config.yaml`` and nothing
    else); the final weights must be bitwise equal (``wandb``: the runs log to W&B offline, a killed one included).
    Returns the step the run stopped after."""
    common = ["--config", config, f"--trainer.max_steps={steps}", "--trainer.max_epochs=1000", f"--run.wandb={wandb}",
              "--run.save_every_n_steps=1", "--run.test_after_fit=false", "--run.media_images=0",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *args]
    straight = tmp_path / "straight"
    main(["fit", *common, f"--run.root={straight}"])
    expected, step = _weights(straight)
    assert step == steps

    broken = tmp_path / "broken"
    kill_at = random.Random(seed).randint(2, steps - 2)
    # a fresh W&B service for the child (as a separate job has): a killed child must not leave
    # its run open in this process's service
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tfm", "fit", *common, f"--run.root={broken}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _step_of(broken) < kill_at:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step {kill_at}: {proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the run did not reach the step to kill it at")
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    killed_after = _weights(broken)[1]
    assert 0 < killed_after < steps, killed_after
    (run,) = broken.glob("*/*/config.yaml")
    if sig == signal.SIGKILL:
        assert proc.returncode == -9
    else:  # stopped at the next batch end with a checkpoint there, and told how to resume
        err = proc.stderr.read().decode().strip().splitlines()
        assert proc.returncode == 128 + sig, err[-20:]
        assert any(ln.startswith(f"tfm: stopped by {signal.Signals(sig).name} at step {killed_after}, checkpoint ")
                   and ln.endswith(f"resume with: python -m tfm fit --config {run} --ckpt_path last") for ln in err), err[-20:]
        assert killed_after >= kill_at

    main(["fit", "--config", str(run), "--ckpt_path=last"] if with_run_config else ["fit", *common, f"--run.root={broken}", "--ckpt_path=last"])
    resumed, step = _weights(broken)
    assert step == steps
    assert resumed.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(expected[k], resumed[k])]
    assert not different, f"killed after step {killed_after}: {len(different)} tensors differ, e.g. {different[:3]}"
    if wandb:  # the resumed run logs into the W&B run of the stopped one
        (last,) = broken.glob("*/*/checkpoints/last.ckpt")
        wandb_id = (run.parent / "wandb_id").read_text().strip()
        assert torch.load(last, map_location="cpu", weights_only=True)["tfm_run"]["wandb_id"] == wandb_id
    return killed_after
