"""A real Slurm on localhost (two slurmd nodes): 2-node DDP fit, and a pre-empted job that
requeues itself, resumes from its checkpoint and ends at the step count of an uninterrupted run.

Needs root and Debian's slurm-wlm + munge (``make test`` installs them when it runs as root on
Debian); skipped elsewhere with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_VIT

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("slurmctld") is None or shutil.which("munged") is None,
    reason="needs root and Debian's slurm-wlm + munge (make test installs them when run as root on Debian)",
)]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Starts munged (if needed), slurmctld and slurmd n1 + n2; stops them by their pids."""
    state = tmp_path_factory.mktemp("slurm")
    port = _free_port() % 20000 + 30000  # slurmctld's (the nodes take + 10 and + 11)
    up = subprocess.run(["bash", str(REPO / "slurm" / "localhost-up.sh"), str(state)], capture_output=True, text=True, timeout=120,
                        env=os.environ | {"TFM_SLURM_PORT": str(port)})
    env = os.environ | {"SLURM_CONF": str(state / "slurm.conf")}
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        yield env
    finally:
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=env).stdout.split()
        if jobs:
            subprocess.run(["scancel", *jobs], env=env)
            time.sleep(6)  # KillWait=5
        subprocess.run(["bash", str(REPO / "slurm" / "localhost-down.sh"), str(state)], timeout=60)
        for pid_file in state.glob("*.pid"):
            pid = int(pid_file.read_text())
            assert not _alive(pid), f"{pid_file.name} still running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbatch(env: dict, tmp_path: Path, args: list[str]) -> str:
    job_env = {k: v for k, v in env.items() if not k.startswith("WANDB_SERVICE")} | {
        "PY": sys.executable, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", f"--chdir={REPO}",
         f"--output={tmp_path}/slurm-%j.out", str(REPO / "slurm" / "tfm.sbatch"), "configs/vit_tiny_fashion.yaml",
         "--trainer.accelerator=cpu", *TINY_VIT, "--data.batch_size=16", "--trainer.limit_val_batches=2",
         "--trainer.max_epochs=1000", "--run.test_after_fit=false", "--run.media_images=0",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", f"--run.root={tmp_path}/runs", *args],
        capture_output=True, text=True, env=job_env, check=True)
    return out.stdout.strip().split(";")[0]


def _job(env: dict, job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _wait(env: dict, job: str, timeout: float, log: Path) -> dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = _job(env, job)
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            return info
        time.sleep(1)
    subprocess.run(["scancel", job], env=env)
    raise AssertionError(f"job {job} did not finish in {timeout} s:\n{_tail(log)}")


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text()[-n:] if path.exists() else "(no output)"


def _last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_two_node_ddp_fit_agrees_on_every_rank(slurm, tmp_path):
    job = _sbatch(slurm, tmp_path, ["--trainer.max_steps=6", "--trainer.limit_train_batches=3", "--trainer.val_check_interval=3",
                                    "--trainer.callbacks+=tests.slurm_helper.RankMetrics"])
    log = tmp_path / f"slurm-{job}.out"
    info = _wait(slurm, job, 240, log)
    assert info["JobState"] == "COMPLETED", _tail(log)
    assert info["NumNodes"] == "2" and info["NodeList"] == "n[1-2]"
    run = tmp_path / "runs" / "vit_tiny_fashion" / job  # SLURM job id = run version
    assert _last(run)["global_step"] == 6
    # every rank ran in its own node with world size 2 and logged the same synced validation metrics
    ranks = sorted(run.glob("rank-*.json"))
    assert [p.name for p in ranks] == ["rank-0.json", "rank-1.json"], _tail(log)
    import json

    seen = [json.loads(p.read_text()) for p in ranks]
    assert {s["node"] for s in seen} == {"n1", "n2"} and {s["world_size"] for s in seen} == {2}
    assert seen[0]["metrics"] == seen[1]["metrics"] and "val/acc1" in seen[0]["metrics"]


def test_preempted_job_requeues_and_resumes_to_the_full_step_count(slurm, tmp_path):
    steps = 80  # enough to be pre-empted mid-run (USR1 follows the first step-10 checkpoint)
    job = _sbatch(slurm, tmp_path, [f"--trainer.max_steps={steps}", "--trainer.limit_train_batches=100",
                                    "--run.save_every_n_steps=10"])
    log = tmp_path / f"slurm-{job}.out"
    run = tmp_path / "runs" / "vit_tiny_fashion" / job
    deadline = time.time() + 180
    while not list(run.glob("checkpoints/step-*.ckpt")):  # training has started
        assert _job(slurm, job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), _tail(log)
        assert time.time() < deadline, _tail(log)
        time.sleep(0.5)
    # pre-emption as Slurm does it before the time limit: USR1 to the job's tasks (--signal=USR1@120)
    subprocess.run(["scancel", "--signal=USR1", job], env=slurm, check=True)
    info = _wait(slurm, job, 300, log)
    out = _tail(log, 20000)
    assert info["JobState"] == "COMPLETED", out
    assert info["Restarts"] == "1", out  # Lightning saved an HPC checkpoint and requeued the job
    hpc = list(run.glob("hpc_ckpt_*.ckpt"))
    assert hpc, out
    interrupted_at = torch.load(hpc[0], map_location="cpu", weights_only=True)["global_step"]
    assert 0 < interrupted_at < steps
    final = _last(run)
    assert final["global_step"] == steps  # the step count of an uninterrupted run
    assert (run / "config.yaml").exists() and (run / "config.resume1.yaml").exists()  # same run folder
    wandb_id = (run / "wandb_id").read_text().strip()
    assert final["tfm_run"]["wandb_id"] == wandb_id
    assert len(list(run.glob(f"wandb/offline-run-*-{wandb_id}"))) == 2  # both attempts logged into the same W&B run id
