"""W&B sweeps: every sweeps/*.yaml is a valid W&B sweep whose parameters the CLI accepts, and
``python -m tfm sweep`` runs one without a server (W&B's own engine proposes the trials)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_VIT

from tfm.cli import main
from tfm.errors import UserError
from tfm.sweep import Trial, _sweep_run, check_parameters, command_for, load_sweep

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
TRIAL_ARGS = [*TINY_VIT, "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.max_epochs=1",
              "--data.batch_size=16", "--run.test_after_fit=false", "--run.media_images=0", "--trainer.enable_progress_bar=false"]


def test_there_is_a_grid_a_random_and_a_bayes_sweep():
    assert {yaml.safe_load(p.read_text())["method"] for p in SWEEPS} >= {"grid", "random", "bayes"}


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_sweep_is_valid_and_its_parameters_are_cli_keys(path):
    sweep = load_sweep(path)  # W&B's schema, command shape
    assert sweep["command"][:2] == ["${env}", "${interpreter}"] and sweep["command"][-1] == "${args}"
    check_parameters(sweep, [])  # each parameter parsed by the real CLI
    cmd = command_for(sweep, {"model.lr": 0.001})
    assert cmd[:6] == ["/usr/bin/env", sys.executable, "-m", "tfm", "fit", "--config"] and cmd[-1] == "--model.lr=0.001"


def test_bayes_sees_the_metrics_of_earlier_trials():
    # sweeps 0.2 is written for pydantic 1: under pydantic 2 only the aliases fill the metrics
    run = _sweep_run(Trial(1, {"model.lr": 0.001}, Path("x"), "finished", [{"val/acc1": 0.5}], {"val/acc1": 0.5}))
    assert run.summary_metrics == {"val/acc1": 0.5} and run.history == [{"val/acc1": 0.5}]
    from sweeps import next_run

    sweep = {"method": "bayes", "metric": {"name": "val/acc1", "goal": "maximize"},
             "parameters": {"model.lr": {"min": 0.0001, "max": 0.01}}}
    proposal = next_run(sweep, [run])
    assert proposal.search_info is not None and 0.0001 <= proposal.config["model.lr"]["value"] <= 0.01


def _write_sweep(tmp_path: Path, parameters: dict) -> Path:
    sweep = {"method": "grid", "metric": {"name": "val/acc1", "goal": "maximize"}, "parameters": parameters,
             "command": ["${env}", "${interpreter}", "-m", "tfm", "fit", "--config", "configs/vit_tiny_fashion.yaml", "${args}"]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _sweep(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tfm", "sweep", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_serverless_grid_sweep_ranks_trials_and_writes_the_best_config(tmp_path):
    path = _write_sweep(tmp_path, {"model.lr": {"values": [0.003, 0.0001]}})
    root = tmp_path / "runs"
    out = _sweep([str(path), "--count", "5", "--root", str(root), "--", *TRIAL_ARGS])
    assert out.returncode == 0, out.stderr[-3000:]
    trials = sorted(p.name for p in (root / "grid").glob("trial-*") if p.is_dir())
    assert trials == ["trial-1", "trial-2"]  # the grid has two points: --count 5 stops there
    lines = out.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("rank"))
    ranked = [ln.split() for ln in lines[header + 1 : header + 3]]
    accs = [float(r[3]) for r in ranked]
    assert accs == sorted(accs, reverse=True) and all(r[4] == "finished" for r in ranked)
    best_lr = float(ranked[0][2])
    best = yaml.safe_load((root / "grid" / "best.yaml").read_text())
    assert best["model"]["init_args"]["lr"] == pytest.approx(best_lr)
    assert best["run"]["version"] is None
    # the best config is ready to train
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(root / "grid" / "best.yaml"), "--print_config"])
    assert e.value.code == 0


@pytest.mark.slow
def test_unknown_sweep_parameter_fails_before_any_trial(tmp_path):
    path = _write_sweep(tmp_path, {"model.lr": {"values": [0.001]}, "model.lrr": {"values": [0.1, 0.2]}})
    out = _sweep([str(path), "--root", str(tmp_path / "runs"), "--", *TRIAL_ARGS])
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert err[-1].startswith("tfm: error: sweep parameter 'model.lrr'") and "lrr" in err[-1], out.stderr[-2000:]
    assert not (tmp_path / "runs").exists()  # no trial started


def test_sweep_command_must_take_args_after_config(tmp_path):
    sweep = {"method": "grid", "parameters": {"model.lr": {"values": [0.001]}},
             "command": ["${env}", "${interpreter}", "-m", "tfm", "fit", "${args}", "--config", "configs/vit_tiny_fashion.yaml"]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(sweep))
    with pytest.raises(UserError, match="after --config"):
        load_sweep(path)
