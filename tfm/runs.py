"""Run folders and their checkpoints, without Lightning: where a command writes (``runs/<name>/<version>/``), which
checkpoint it resumes or evaluates, and undoing what a failed command made.

:func:`resolve_run` is a function of the command, its options and the environment (and of what is on disk): the
SLURM job id and restart count, the DDP rank and the run folder rank 0 chose.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .pretrained import read_checkpoint


@dataclass
class RunOptions:
    """Where a run writes and what it logs.

    Args:
        name: experiment name; default: the config file's stem.
        version: run version; default: ``$SLURM_JOB_ID`` or the start time.
        root: folder holding all runs.
        project: W&B project.
        wandb: log to W&B (offline when no credentials are set); False logs nothing.
        test_after_fit: after ``fit``, test the best checkpoint and print the test metrics.
        save_every_n_steps: also checkpoint every N optimizer steps (``last.ckpt`` is refreshed).
        media_images: validation images whose attention maps are drawn each validation (0: none).
        tf32: on GPUs with TF32 tensor cores (Ampere and later), fp32 matmuls and convolutions in
            TF32 (``torch.set_float32_matmul_precision("high")``); False for full fp32.
    """

    name: str | None = None
    version: str | None = None
    root: str = "runs"
    project: str = "tfm"
    wandb: bool = True
    test_after_fit: bool = False
    save_every_n_steps: int | None = None
    media_images: int = 4
    tf32: bool = True


def is_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    """Rank 0 of a run, before the Trainer knows its rank (DDP launchers and srun set these)."""
    env = os.environ if env is None else env
    return int(env.get("RANK", env.get("SLURM_PROCID", 0)) or 0) == 0


def warn(message: str) -> None:
    """A warning from rank 0 only (every rank resolves its run)."""
    if is_rank_zero():
        warnings.warn(message, stacklevel=3)


def new_version(parent: Path, suffix: str = "", env: Mapping[str, str] | None = None) -> str:
    """The SLURM job id (every task of the job the same), or the start time made unique."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if job:
        if int(env.get("SLURM_PROCID", "0") or 0) == 0 and (parent / (job + suffix)).exists():
            raise UserError(f"run folder {parent / (job + suffix)} already exists for SLURM job {job}: pass --run.version or --ckpt_path last")
        return job + suffix
    base = time.strftime("%Y%m%d-%H%M%S")
    version, k = base + suffix, 2
    while (parent / version).exists():
        version, k = f"{base}{suffix}-{k}", k + 1
    return version


def check_writable(run_dir: Path) -> None:
    """The run folder can be made: its nearest existing parent is a writable folder (one line, not
    three chained tracebacks, on a read-only or misnamed run root)."""
    parent = run_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"run folder {run_dir} cannot be made: {parent} is a file: pass --run.root=<a folder>")
    try:  # the one sure test (root may write where the permission bits say no; /proc, read-only mounts)
        os.rmdir(tempfile.mkdtemp(prefix=".tfm-write-test-", dir=parent))
    except OSError as e:
        raise UserError(f"run folder {run_dir} cannot be made: {parent} is not writable ({e.strerror}): "
                        "pass --run.root=<a writable folder>") from None


def run_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint of a run: ``checkpoints/*.ckpt`` and the HPC checkpoints that Lightning's
    SLURM auto-requeue writes into the run folder (``hpc_ckpt_<n>.ckpt``)."""
    return sorted([*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")])


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resumed run continues from: the one written at the highest step (an HPC
    checkpoint or ``last.ckpt``, whichever is newer); unreadable files (a corrupted ``last.ckpt``)
    are skipped with a warning, so a run falls back to its newest intact checkpoint."""
    best: tuple[int, bool, float] | None = None
    chosen = None
    for path in run_checkpoints(run_dir):
        try:
            step = int(read_checkpoint(path)["global_step"])
        except (UserError, KeyError) as e:  # truncated, corrupted, crafted, not a Lightning checkpoint
            warn(f"{e if isinstance(e, UserError) else f'checkpoint {path} has no global_step'}: skipped")
            continue
        # at one step, a step checkpoint first: written at the batch end, it resumes bitwise exactly,
        # where a last.ckpt rewritten after an epoch-end validation does not (Lightning's restart there)
        key = (step, path.name.startswith("step-"), path.stat().st_mtime)
        if best is None or key > best:
            best, chosen = key, path
    return chosen


def find_last_checkpoint(exp_dir: Path, version: str | None = None) -> Path | None:
    """The newest intact checkpoint of the newest run of an experiment (of ``version`` if given)."""
    runs = [exp_dir / version] if version else [p for p in exp_dir.glob("*") if p.is_dir()]
    runs = [r for r in runs if run_checkpoints(r)]
    for run in sorted(runs, key=lambda r: max(p.stat().st_mtime for p in run_checkpoints(r)), reverse=True):
        found = newest_checkpoint(run)
        if found is not None:
            return found
    return None


def check_checkpoint_fits(path: Path, model: torch.nn.Module) -> None:
    """Fail with one line when a checkpoint was written by another model than the configured one."""
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} has no state_dict: it is not a Lightning checkpoint")
    own = model.state_dict()
    hp = ckpt.get("hyper_parameters", {}) or {}
    written_by = hp.get("_class_path", "another model")
    if hp.get("arch"):
        written_by += f" (arch={hp['arch']})"
    for k, v in own.items():
        if k not in state:
            raise UserError(f"checkpoint {path} does not fit the configured {type(model).__name__}: it lacks {k}; it was written by {written_by}. Use the config that trained it (its run folder has config.yaml)")
        if tuple(state[k].shape) != tuple(v.shape) and k.endswith(("embeddings.tokens.weight", "embed.tokens.weight")):
            raise UserError(
                f"checkpoint {path} has a vocabulary of {state[k].shape[0]} tokens but the tokenizer has {v.shape[0]}: use the "
                "tokenizer it was trained with (its run folder's tokenizer.json, --data.tokenizer=...)"
            )
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(
                f"checkpoint {path} does not fit the configured {type(model).__name__}: {k} is {tuple(state[k].shape)} there but "
                f"{tuple(v.shape)} here; it was written by {written_by}. Use the config that trained it (its run folder has config.yaml)"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise UserError(f"checkpoint {path} does not fit the configured {type(model).__name__}: it has {extra[0]} the model lacks; it was written by {written_by}")


def best_checkpoint(last: Path) -> Path:
    """The best checkpoint the run's ModelCheckpoint recorded (``last.ckpt`` when none)."""
    state = read_checkpoint(last).get("callbacks", {})
    for key, value in state.items():
        if key.startswith("ModelCheckpoint") and value.get("best_model_path"):
            best = Path(value["best_model_path"])
            if best.is_file():
                return best
            run_dir = last.parent.parent if last.parent.name == "checkpoints" else last.parent
            candidate = run_dir / "checkpoints" / best.name
            if candidate.is_file():
                return candidate
    return last


@dataclass
class RunPlan:
    """Where a command writes (``run_dir``), the checkpoint it starts from (``ckpt``), and the experiment name."""

    run_dir: Path
    ckpt: str | None
    name: str
    version: str | None  # the run's version as the options will record it


def resolve_run(sub: str, opts: RunOptions, config_files: list[str], model_class: str, ckpt: str | None,
                env: Mapping[str, str] | None = None) -> RunPlan:
    """The run folder and checkpoint of a command (``fit``, ``validate``, ``test``, ``predict``).

    ``fit`` writes a new ``<root>/<name>/<version>``, or, resuming (``--ckpt_path last`` or a run's checkpoint), goes
    on in the run's own folder; a requeued SLURM job goes on with its own run. Evaluating a run writes beside it
    (``<run>/<sub>/<time>``). Another DDP rank uses rank 0's folder (``TFM_RUN_DIR``).
    """
    env = os.environ if env is None else env
    name = opts.name or (Path(str(config_files[-1])).stem if config_files else model_class.rsplit(".", 1)[-1].lower())
    exp_dir, version = Path(opts.root) / name, opts.version
    run_dir = None
    job = env.get("SLURM_JOB_ID")
    requeued = bool(sub == "fit" and job and int(env.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and (exp_dir / job).is_dir())
    if requeued:
        # a requeued SLURM job (pre-empted, or its time ran out): go on with its own run, from
        # its newest checkpoint (HPC or last.ckpt), or from the start if it wrote none
        ckpt, version = ckpt or "last", version or job
    if ckpt in ("last", "best"):
        last = find_last_checkpoint(exp_dir, version)
        if last is None:
            if sub != "fit":
                raise UserError(f"--ckpt_path {ckpt}: no checkpoint under {exp_dir}/*/checkpoints/: train first or pass a "
                                "checkpoint file")
            if version and not requeued:  # a named run (e.g. its own config.yaml): resuming it must not start afresh
                run = exp_dir / version
                state = "has no checkpoint yet" if run.is_dir() else "does not exist"
                raise UserError(f"--ckpt_path last: run {run} {state}, so there is nothing to resume: "
                                "start a new run without --ckpt_path and --run.version")
            warn(f"--ckpt_path last: no checkpoint under {exp_dir}/*/checkpoints/, starting a fresh run")
            ckpt = None
        else:
            ckpt = str(best_checkpoint(last) if ckpt == "best" else last)
            if sub == "fit":
                run_dir = last.parent.parent if last.parent.name == "checkpoints" else last.parent
    elif not ckpt and sub != "fit" and version and (exp_dir / version).is_dir():
        # validate / test / predict with a run's own config.yaml: that run's best weights
        last = find_last_checkpoint(exp_dir, version)
        if last is None:
            raise UserError(f"run {exp_dir / version} has no checkpoint to {sub}: train it first (--ckpt_path last "
                            "resumes it)")
        ckpt = str(best_checkpoint(last))
    elif ckpt:
        p = Path(ckpt)
        if not p.is_file():
            raise UserError(f"--ckpt_path {ckpt} does not exist (use a .ckpt file, 'last' or 'best')")
        if sub == "fit" and p.parent.name == "checkpoints" and (p.parent.parent / "config.yaml").exists():
            run_dir = p.parent.parent  # resume the run the checkpoint belongs to, in its folder
    if run_dir is None and requeued:
        run_dir = exp_dir / str(version)
    shared = env.get("TFM_RUN_DIR") if int(env.get("LOCAL_RANK", "0") or 0) > 0 else None
    if shared:  # a process Lightning started for another DDP rank: rank 0's run folder
        run_dir = Path(shared)
    elif run_dir is None and version and int(env.get("SLURM_PROCID", "0") or 0) > 0:
        run_dir = exp_dir / version  # rank 0 of the job checks and creates it
    if run_dir is None:
        named = exp_dir / version if version else None
        if named is not None and named.exists() and sub == "fit":
            raise UserError(f"run folder {named} already exists: resume it with --ckpt_path last, or choose another "
                            "--run.version")
        if named is not None and named.exists():  # evaluating a run: beside it, <run>/<sub>/<time>
            run_dir = named / sub / new_version(named / sub, env=env)
        else:
            run_dir = exp_dir / (version or new_version(exp_dir, "" if sub == "fit" else f"-{sub}", env=env))
        check_writable(run_dir)
    return RunPlan(run_dir, ckpt, name, version)


def run_tokenizer(source: Path) -> str | None:
    """The vocabulary a checkpoint (or a Hugging Face folder) was trained with: the folder's tokenizer files, or its
    run folder's ``tokenizer.json``; None when there is none."""
    if source.is_dir():
        return str(source) if (source / "tokenizer.json").is_file() or (source / "vocab.txt").is_file() else None
    run = source.parent.parent if source.parent.name == "checkpoints" else source.parent
    return str(run / "tokenizer.json") if (run / "tokenizer.json").is_file() else None


class RunGuard:
    """What one command adds to its run folder, taken back when it fails before its first training
    step: a bad value found only once the data is loaded leaves no half-made run (a ``config.yaml``
    and ``wandb/`` with no checkpoint) that a later ``--ckpt_path last`` or a reader could take for
    a run. Once a step has trained, everything stays (its logs tell what happened)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.top = run_dir  # the outermost folder this command makes (runs/<name> on a first run)
        while not self.top.parent.exists() and self.top.parent != self.top:
            self.top = self.top.parent
        self.before = {p for p in run_dir.rglob("*")} if run_dir.exists() else None

    def undo(self, trained_steps: int) -> None:
        if not is_rank_zero() or trained_steps > 0:
            return
        if self.before is None:  # a new run: all of it, and the folders made for it
            shutil.rmtree(self.top, ignore_errors=True)
            return
        for p in sorted(set(self.run_dir.rglob("*")) - self.before, key=lambda p: len(p.parts), reverse=True):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def with_run_config(args: list[str]) -> list[str]:
    """``validate|test|predict --ckpt_path <run>/checkpoints/<x>.ckpt`` without ``--config``: the run's own
    ``config.yaml`` is read first, so a checkpoint is enough; an explicit ``--config`` wins."""
    if not args or args[0] not in ("validate", "test", "predict") or any(
            a in ("--config", "-c") or a.startswith("--config=") for a in args):
        return args
    given = [a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")]
    given += [b for a, b in zip(args, args[1:]) if a == "--ckpt_path"]
    if not given or given[-1] in ("last", "best") or not Path(given[-1]).is_file():
        return args  # no checkpoint file: the usual errors
    path = Path(given[-1])
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not (run / "config.yaml").is_file():
        raise UserError(f"--ckpt_path {path} has no config.yaml in its run folder {run}: pass --config with the config "
                        "it was trained with")
    return [args[0], "--config", str(run / "config.yaml"), *args[1:]]
