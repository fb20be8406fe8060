"""``python -m tfm sweep sweeps/<name>.yaml --count N [-- overrides]``: a W&B sweep without a W&B server.

The sweep YAML is the one ``wandb sweep`` takes (``method``, ``metric``, ``parameters``,
``early_terminate``, ``command``). W&B's own sweep engine (the ``sweeps`` package behind the W&B
server) proposes each trial's parameters (grid, random or bayes) from the trials so far; each
trial runs as ``tfm fit`` in a subprocess exactly as ``wandb agent`` would start it (the
``command`` with ``${env}``, ``${interpreter}`` and ``${args}`` expanded); its metric is read
back from the run folder's ``metrics.jsonl``; early-termination rules (hyperband) are checked
after each validation and stop a trial that falls behind. At the end: a ranked table, and the
best trial's config written as a YAML ready for ``tfm fit --config``.

Every parameter is checked against the CLI before the first trial: a key ``tfm fit`` does not
know (a typo) fails at once, naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cli import main as tfm_main
from .cli import parse_only
from .errors import UserError

ARGS_MACROS = ("${args}", "${args_no_hyphens}", "${args_no_boolean_flags}")


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    run_dir: Path
    state: str = "pending"
    history: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def metric(self, name: str) -> float | None:
        value = self.summary.get(name)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def sweeps_module() -> Any:
    """W&B's sweep engine (``sweeps``), imported without the pydantic-1 warnings it raises under
    pydantic 2 (three lines before every message otherwise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps  # optional and noisy: imported only when a sweep runs
    return sweeps


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep YAML, checked: W&B's schema, and a ``command`` that runs ``tfm fit --config``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"sweep file {path} does not exist (see sweeps/ for examples)")
    try:
        config = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]} (write command as a block list: `- ${{env}}`)") from None
    if not isinstance(config, dict) or "parameters" not in config:
        raise UserError(f"{path} is not a W&B sweep config: it needs method, metric, parameters and command")
    parameters = config["parameters"]
    if not isinstance(parameters, dict) or not parameters:
        raise UserError(f"{path}: parameters is empty: name at least one CLI key to sweep, e.g. `model.lr: {{values: [1e-3, 3e-3]}}`")
    for name, spec in parameters.items():
        if not isinstance(spec, dict):
            raise UserError(f"{path}: parameter {name} is {spec!r}: give it value, values, or min and max (a mapping)")
        if "values" in spec and not spec["values"]:
            raise UserError(f"{path}: parameter {name} has an empty values list: give it at least one value")
    violations = sweeps_module().schema_violations_from_proposed_config(config)
    if violations:
        named = [m.group(1) for v in violations if (m := re.search(r"invalid hyperparameter configuration: (\S+)", v))]
        if named:
            raise UserError(f"{path}: parameter {named[0]} is {parameters.get(named[0])!r}, not a W&B parameter spec: "
                            "give value, values, or min and max (with a distribution)")
        raise UserError(f"{path} is not a valid W&B sweep config: {violations[0]}")
    command = [str(c) for c in config.get("command", [])]
    if "--config" not in command or not any(m in command for m in ARGS_MACROS):
        raise UserError(f"{path}: command must run `tfm fit --config configs/X.yaml ${{args}}`, got {command}")
    if command.index("--config") > min(command.index(m) for m in ARGS_MACROS if m in command):
        raise UserError(f"{path}: put ${{args}} after --config in command (later arguments override the config's values)")
    if config.get("method") != "grid" and "metric" not in config:
        raise UserError(f"{path}: method {config.get('method')} needs a metric (name and goal)")
    return config


def experiment_config(sweep: dict[str, Any]) -> str:
    command = [str(c) for c in sweep["command"]]
    return command[command.index("--config") + 1]


def example_value(spec: dict[str, Any]) -> Any:
    """One value a parameter can take (to check its name and type against the CLI)."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][0]
    if "min" in spec:
        return spec["min"]
    if "mu" in spec:
        return spec["mu"]
    raise UserError(f"sweep parameter spec {spec} has no value, values or min/max")


def check_parameters(sweep: dict[str, Any], extra: list[str]) -> None:
    """Parse ``tfm fit --config <config> --<param>=<value> ...`` for every parameter, with the real
    CLI parser and nothing instantiated; an unknown key fails naming the parameter."""
    config = experiment_config(sweep)
    if not Path(config).is_file():
        raise UserError(f"the sweep's command names {config}, which does not exist (run from the repository root)")
    for name, spec in sweep["parameters"].items():
        if "parameters" in spec:
            raise UserError(f"sweep parameter {name}: nested parameters are not CLI keys; use dotted names like model.lr")
        try:
            parse_only(["fit", "--config", config, *extra, f"--{name}={example_value(spec)}"])
        except UserError as e:
            raise UserError(f"sweep parameter {name!r} is not accepted by `tfm fit --config {config}`: {e}") from None


def check_metric(sweep: dict[str, Any], metric: str, extra: list[str]) -> None:
    """The sweep's metric is one the experiment logs at validation (what ``metrics.jsonl``, which
    the sweep reads, holds): found by one validation batch of the config in this process, before
    the first trial, rather than after all of them."""
    config = experiment_config(sweep)
    with tempfile.TemporaryDirectory(prefix="tfm-sweep-probe-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        cli = tfm_main(["validate", "--config", config, *extra, f"--run.root={tmp}", "--run.wandb=false", "--run.media_images=0",
                        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
        logged = sorted(k for k in cli.trainer.callback_metrics if k.startswith("val/"))
    if metric not in logged:
        raise UserError(f"sweep metric {metric!r} is not logged by `tfm fit --config {config}` (its validation logs "
                        f"{', '.join(logged)}): set metric.name to one of them")


def command_for(sweep: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The trial's command line, expanded exactly as ``wandb agent`` expands it."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args  # wandb is slow to import: only for sweeps

    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    macros = {"env": ["/usr/bin/env"], "interpreter": [sys.executable], "program": [str(sweep.get("program", ""))],
              "args": args["args"], "args_no_hyphens": args["args_no_hyphens"],
              "args_no_boolean_flags": args["args_no_boolean_flags"]}
    out: list[str] = []
    for chunk in (str(c) for c in sweep["command"]):
        out += macros[chunk[2:-1]] if chunk.startswith("${") and chunk.endswith("}") and chunk[2:-1] in macros else [chunk]
    return out


def read_metrics(run_dir: Path) -> tuple[list[dict[str, float]], dict[str, float]]:
    history: list[dict[str, float]] = []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                pass
    summary = {}
    for row in history:
        summary.update(row)
    return history, summary


def _sweep_run(trial: Trial, running: bool = False) -> Any:
    SweepRun = sweeps_module().SweepRun
    state = "running" if running else trial.state
    # the aliases: sweeps 0.2 declares pydantic-1 field names, under pydantic 2 only the aliases populate
    return SweepRun(name=f"trial-{trial.number}", state=state, config={k: {"value": v} for k, v in trial.params.items()},
                    summaryMetrics=trial.summary, sampledHistory=trial.history)


def run_trial(sweep: dict[str, Any], trial: Trial, trials: list[Trial], extra: list[str], name: str, root: str) -> None:
    stop_runs = sweeps_module().stop_runs
    cmd = command_for(sweep, trial.params) + [*extra, f"--run.root={root}", f"--run.name={name}", f"--run.version=trial-{trial.number}"]
    print(f"[sweep {name}] trial {trial.number}: {' '.join(f'{k}={v}' for k, v in trial.params.items())}", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")}
    start = time.time()
    log = (Path(root) / name / f"trial-{trial.number}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        trial.state, seen = "running", 0
        while proc.poll() is None:
            time.sleep(0.5)
            trial.history, trial.summary = read_metrics(trial.run_dir)
            if "early_terminate" in sweep and len(trial.history) > seen:
                seen = len(trial.history)
                runs = [_sweep_run(t) for t in trials if t is not trial] + [_sweep_run(trial, running=True)]
                if any(r.name == f"trial-{trial.number}" for r in stop_runs(sweep, runs)):
                    print(f"[sweep {name}] trial {trial.number}: stopped early ({sweep['early_terminate'].get('type')})", flush=True)
                    proc.send_signal(signal.SIGTERM)
                    proc.wait()
                    trial.state = "killed"
    trial.seconds = time.time() - start
    trial.history, trial.summary = read_metrics(trial.run_dir)
    if trial.state != "killed":
        trial.state = "finished" if proc.returncode == 0 else "failed"
    if trial.state == "failed":
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        print(f"[sweep {name}] trial {trial.number} failed (exit {proc.returncode}): {tail[0][:300]} (log: {log})", flush=True)


def ranked(trials: list[Trial], metric: str, goal: str) -> list[Trial]:
    sign = -1.0 if goal == "maximize" else 1.0
    return sorted(trials, key=lambda t: (t.metric(metric) is None, sign * (t.metric(metric) or 0.0)))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_table(trials: list[Trial], metric: str, goal: str) -> None:
    keys = sorted({k for t in trials for k in t.params})
    header = ["rank", "trial", *keys, metric, "state", "seconds"]
    rows = []
    for rank, t in enumerate(ranked(trials, metric, goal), 1):
        value = t.metric(metric)
        rows.append([str(rank), str(t.number), *[_short(t.params.get(k)) for k in keys],
                     "-" if value is None else f"{value:.6g}", t.state, f"{t.seconds:.1f}"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), flush=True)


def write_best(best: Trial, path: Path) -> None:
    """The best trial's resolved config, as a YAML for ``tfm fit --config`` (run name and version cleared)."""
    config = yaml.safe_load((best.run_dir / "config.yaml").read_text())
    config.get("run", {}).update({"name": None, "version": None})
    config["ckpt_path"] = None
    config.get("trainer", {}).pop("default_root_dir", None)
    head = f"# best trial ({best.number}) of a tfm sweep: {', '.join(f'{k}={v}' for k, v in best.params.items())}\n"
    path.write_text(head + yaml.safe_dump(config, sort_keys=False))


def main(argv: list[str]) -> None:
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(prog="python -m tfm sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="a W&B sweep YAML (sweeps/*.yaml)")
    parser.add_argument("--count", type=int, default=10, help="number of trials (a grid stops when exhausted)")
    parser.add_argument("--name", help="sweep name (run folder runs/<name>/trial-<n>); default: the YAML's stem")
    parser.add_argument("--root", default="runs", help="folder holding all runs")
    parser.add_argument("overrides", nargs="*", help="after --: arguments added to every trial, e.g. -- --trainer.max_epochs=2")
    ns = parser.parse_args(argv)
    extra = [*ns.overrides, *extra]
    sweep = load_sweep(ns.sweep)
    name = ns.name or Path(ns.sweep).stem
    if (Path(ns.root) / name).exists():
        raise UserError(f"sweep folder {Path(ns.root) / name} already exists: choose another --name")
    check_parameters(sweep, extra)
    next_run = sweeps_module().next_run
    metric = (sweep.get("metric") or {}).get("name", "val/loss")
    if "metric" in sweep:
        check_metric(sweep, metric, extra)
    goal = (sweep.get("metric") or {}).get("goal", "minimize")
    trials: list[Trial] = []
    for number in range(1, ns.count + 1):
        proposal = next_run(sweep, [_sweep_run(t) for t in trials])
        if proposal is None:  # a grid is exhausted
            break
        params = {k: v["value"] for k, v in proposal.config.items()}
        trial = Trial(number, params, Path(ns.root) / name / f"trial-{number}")
        trials.append(trial)
        run_trial(sweep, trial, trials, extra, name, ns.root)
    print_table(trials, metric, goal)
    done = [t for t in ranked(trials, metric, goal) if t.metric(metric) is not None and (t.run_dir / "config.yaml").is_file()]
    if not done:
        raise UserError(f"no trial reported {metric}: see the logs in {Path(ns.root) / name}")
    best = Path(ns.root) / name / "best.yaml"
    write_best(done[0], best)
    print(f"best: trial {done[0].number}, {metric}={done[0].metric(metric):.6g}; config: {best}\n"
          f"train it: python -m tfm fit --config {best}", flush=True)
