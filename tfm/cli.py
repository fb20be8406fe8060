"""``python -m tfm fit|validate|test|predict --config configs/<experiment>.yaml``.

The only place that wires tasks, DataModules, the Trainer, the run folder and the logger:

* the model and the data are chosen by ``class_path`` in the YAML; data-dependent arguments
  (number of classes, image size, ...) are linked from the DataModule to the model;
* every run writes into ``runs/<name>/<version>/`` (``config.yaml``, ``checkpoints/``,
  ``wandb/``, ``media/``, ``predictions.jsonl``), where ``name`` defaults to the config file's
  stem and ``version`` to the SLURM job id or the start time; ``--ckpt_path last`` resumes the
  newest run of that name in its own folder, and nothing of an earlier run is overwritten;
* the logger is W&B, offline unless W&B credentials are present (``WANDB_API_KEY``);
* user mistakes end with one line ``tfm: error: ...`` and exit status 2.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn

from .callbacks import AttentionMapLogger, MetricsFile, PredictionWriter, RunIdentity, StopSignals, ThroughputMonitor
from .checkpointing import AtomicCheckpointIO, remove_partial_checkpoints
from .errors import UserError
from .hardware import check_accelerator, check_precision, default_precision, enable_tf32, uses_cuda
from .nn.config import ConfigError
from .nn.convert import ConversionError
from .pretrained import read_checkpoint
from .tasks import TaskModule
from .validation import check_config
from . import data as _data  # noqa: F401  (registers DataModules for short class paths)


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


def is_rank_zero() -> bool:
    """Rank 0 of a run, before the Trainer knows its rank (DDP launchers and srun set these)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)) or 0) == 0


def wandb_online() -> bool:
    """True when W&B can log online: an API key in the environment or in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def new_version(parent: Path, suffix: str = "") -> str:
    """The SLURM job id (every task of the job the same), or the start time made unique."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        if int(os.environ.get("SLURM_PROCID", "0") or 0) == 0 and (parent / (job + suffix)).exists():
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
            rank_zero_warn(f"{e if isinstance(e, UserError) else f'checkpoint {path} has no global_step'}: skipped")
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


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config into the run folder (``config.yaml``; a resumed run adds
    ``config.resume1.yaml``, ... and never overwrites) and attaches it, with the git commit, to
    the W&B run."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if not self.already_saved and trainer.log_dir:
            d, k = Path(trainer.log_dir), 1
            self.config_filename = "config.yaml"
            while (d / self.config_filename).exists():
                self.config_filename, k = f"config.resume{k}.yaml", k + 1
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import yaml

                cfg = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
                logger.experiment.config.update({"tfm_config": cfg, "git_commit": git_commit()}, allow_val_change=True)
                run_dir = Path(trainer.default_root_dir)
                for name in ("config.yaml", "tokenizer.json", "target_tokenizer.json", "vocab.txt"):
                    if (run_dir / name).is_file():
                        logger.experiment.save(str(run_dir / name), base_path=str(run_dir), policy="now")


class TFMCLI(LightningCLI):
    """LightningCLI with tfm's run folders, default logger and callbacks."""

    def __init__(self, args: Any = None, run: bool = True) -> None:
        self.run_dir: Path | None = None
        self.run_guard: RunGuard | None = None
        super().__init__(
            model_class=TaskModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfigSaver,
            # tfm DataModules shard over DDP ranks themselves (ResumableSampler)
            trainer_defaults={"precision": default_precision(), "use_distributed_sampler": False},
            seed_everything_default=0,
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunOptions, "run", fail_untyped=True)
        for attr in ("num_classes", "class_names", "image_size", "in_chans", "num_labels", "label_names", "problem_type", "tag_scheme"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", apply_on="instantiate")
        # text tasks: the vocabulary comes from the DataModule's tokenizer
        parser.link_arguments("data.tokenizer_vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.pad_token_id", "model.init_args.pad_token_id", apply_on="instantiate")
        # translation: a separate target vocabulary and the decoder's start / end tokens
        parser.link_arguments("data.target_vocab_size", "model.init_args.tgt_vocab_size", apply_on="instantiate")
        for attr in ("bos_token_id", "eos_token_id"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse errors (an unknown key, a bad value) become one line instead of a usage dump."""
        from jsonargparse import ArgumentError

        for p in [parser, *getattr(self, "_subcommand_parsers", {}).values()]:
            p.exit_on_error = False
        check_yaml_files(args if args is not None else sys.argv[1:])
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            raise UserError(concise_parse_error(str(e))) from None

    def _parse_ckpt_path(self) -> None:
        """The config decides the model; a checkpoint must fit it (checked before training) rather
        than silently replace the configured architecture with its own."""

    # --- the run folder ---------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        cfg = self.config[sub]
        check_config(cfg, sub)  # value ranges: one line, before anything is built or written
        opts = cfg.run
        configs = cfg.get("config") or []
        name = opts.name or (Path(str(configs[-1])).stem if configs else cfg.model.class_path.rsplit(".", 1)[-1].lower())
        exp_dir = Path(opts.root) / name
        ckpt = cfg.get("ckpt_path")
        run_dir = None
        job = os.environ.get("SLURM_JOB_ID")
        requeued = sub == "fit" and job and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and (exp_dir / job).is_dir()
        if requeued:
            # a requeued SLURM job (pre-empted, or its time ran out): go on with its own run, from
            # its newest checkpoint (HPC or last.ckpt), or from the start if it wrote none
            if not ckpt:
                ckpt = "last"
            opts.version = opts.version or job
        if ckpt in ("last", "best"):
            last = find_last_checkpoint(exp_dir, opts.version)
            if last is None:
                if sub != "fit":
                    raise UserError(f"--ckpt_path {ckpt}: no checkpoint under {exp_dir}/*/checkpoints/: train first or pass a checkpoint file")
                if opts.version and not requeued:  # a named run (e.g. its own config.yaml): resuming it must not start afresh
                    run = exp_dir / opts.version
                    state = "has no checkpoint yet" if run.is_dir() else "does not exist"
                    raise UserError(f"--ckpt_path last: run {run} {state}, so there is nothing to resume: "
                                    "start a new run without --ckpt_path and --run.version")
                rank_zero_warn(f"--ckpt_path last: no checkpoint under {exp_dir}/*/checkpoints/, starting a fresh run")
                ckpt = None
            else:
                ckpt = str(best_checkpoint(last) if ckpt == "best" else last)
                if sub == "fit":
                    run_dir = last.parent.parent if last.parent.name == "checkpoints" else last.parent
        elif not ckpt and sub != "fit" and opts.version and (exp_dir / opts.version).is_dir():
            # validate / test / predict with a run's own config.yaml: that run's best weights
            last = find_last_checkpoint(exp_dir, opts.version)
            if last is None:
                raise UserError(f"run {exp_dir / opts.version} has no checkpoint to {sub}: train it first (--ckpt_path last resumes it)")
            ckpt = str(best_checkpoint(last))
        elif ckpt:
            p = Path(ckpt)
            if not p.is_file():
                raise UserError(f"--ckpt_path {ckpt} does not exist (use a .ckpt file, 'last' or 'best')")
            if sub == "fit" and p.parent.name == "checkpoints" and (p.parent.parent / "config.yaml").exists():
                run_dir = p.parent.parent  # resume the run the checkpoint belongs to, in its folder
        if run_dir is None and requeued:
            run_dir = exp_dir / str(opts.version)
        shared = os.environ.get("TFM_RUN_DIR") if int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 else None
        if shared:  # a process Lightning started for another DDP rank: rank 0's run folder
            run_dir = Path(shared)
        elif run_dir is None and opts.version and int(os.environ.get("SLURM_PROCID", "0") or 0) > 0:
            run_dir = exp_dir / opts.version  # rank 0 of the job checks and creates it
        if run_dir is None:
            named = exp_dir / opts.version if opts.version else None
            if named is not None and named.exists() and sub == "fit":
                raise UserError(f"run folder {named} already exists: resume it with --ckpt_path last, or choose another --run.version")
            if named is not None and named.exists():  # evaluating a run: beside it, <run>/<sub>/<time>
                run_dir = named / sub / new_version(named / sub)
            else:
                run_dir = exp_dir / (opts.version or new_version(exp_dir, "" if sub == "fit" else f"-{sub}"))
            check_writable(run_dir)
        if ckpt:
            self._reuse_tokenizer(cfg, Path(ckpt))
        elif (cfg.model.get("init_args") or {}).get("init_from"):
            self._reuse_tokenizer(cfg, Path(cfg.model.init_args.init_from))
        for folder in (run_dir, run_dir / "checkpoints"):
            for partial in remove_partial_checkpoints(folder):
                rank_zero_warn(f"removed {partial}: a checkpoint write that was interrupted")
        global _current
        _current, self.run_guard = self, RunGuard(run_dir)
        if sub == "fit":  # the saved config.yaml names its run: `fit --config <run>/config.yaml --ckpt_path last` resumes it
            opts.root, opts.name, opts.version = str(run_dir.parent.parent), run_dir.parent.name, run_dir.name
        cfg.ckpt_path = ckpt
        cfg.trainer.default_root_dir = str(run_dir)
        os.environ["TFM_RUN_DIR"] = str(run_dir)  # inherited by the processes of the other DDP ranks
        self.run_name, self.run_dir = name, run_dir

    @staticmethod
    def _reuse_tokenizer(cfg: Any, ckpt: Path) -> None:
        """A checkpoint goes on (or is fine-tuned, ``--model.init_from``) with the vocabulary it was
        trained with: its run folder's tokenizer.json (an HF folder: its own tokenizer files),
        unless --data.tokenizer names one (retraining could shift the ids)."""
        args = cfg.data.get("init_args") if hasattr(cfg.data, "get") else None
        if args is None or "tokenizer" not in args or args.tokenizer is not None:
            return
        if ckpt.is_dir():  # a Hugging Face model folder: its tokenizer.json or vocab.txt
            if (ckpt / "tokenizer.json").is_file() or (ckpt / "vocab.txt").is_file():
                args.tokenizer = str(ckpt)
            return
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        if (run / "tokenizer.json").is_file():
            args.tokenizer = str(run / "tokenizer.json")

    def _check_lengths(self) -> None:
        max_pos = getattr(self.model, "hparams", {}).get("max_positions")
        for attr in ("max_seq_length", "max_source_length", "max_target_length"):
            max_len = getattr(self.datamodule, attr, None)
            if max_len and max_pos and max_len > max_pos:
                raise UserError(f"--data.{attr} {max_len} exceeds the model's {max_pos} positions: raise --model.max_positions or shorten the data")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self.config_init[self.subcommand]
        opts = cfg.run
        accelerator, precision = cfg.trainer.get("accelerator"), cfg.trainer.get("precision")
        check_accelerator(accelerator)
        on_cuda = uses_cuda(accelerator)
        check_precision(precision, on_cuda, device_name=torch.cuda.get_device_name() if on_cuda else "")
        enable_tf32(on_cuda, opts.tf32)
        ckpt = cfg.get("ckpt_path")
        if ckpt:
            check_checkpoint_fits(Path(ckpt), self.model)
        run_dir = self.run_dir
        self._check_lengths()
        if self.subcommand == "fit" and hasattr(self.datamodule, "save_tokenizer") and not (run_dir / "tokenizer.json").exists():
            if is_rank_zero():
                self.datamodule.save_tokenizer(run_dir)  # the checkpoint travels with its vocabulary
        callbacks = list(cfg.trainer.get("callbacks") or [])
        if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            metric, mode = getattr(self.model, "monitor", ("val/loss", "min"))
            every = opts.save_every_n_steps
            # the best checkpoint by the task's validation metric and last.ckpt after every epoch;
            # with --run.save_every_n_steps also step-N.ckpt and last.ckpt every N steps
            callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-{epoch}-{step}", monitor=metric,
                                             mode=mode, save_top_k=1, save_last=True, enable_version_counter=False))
            if every:
                callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step-{step}", every_n_train_steps=every,
                                                 save_top_k=1, save_last=True, enable_version_counter=False))
        if not any(isinstance(c, ProgressBar) for c in callbacks) and cfg.trainer.get("enable_progress_bar") is not False:
            callbacks.append(RichProgressBar() if sys.stdout.isatty() else TQDMProgressBar(refresh_rate=50))
        callbacks.append(RunIdentity(str(run_dir)))
        callbacks.append(MetricsFile(str(run_dir / "metrics.jsonl")))
        if self.subcommand == "fit":
            callbacks.append(StopSignals(str(run_dir / "checkpoints")))
            callbacks.append(ThroughputMonitor(log_every_n_steps=cfg.trainer.get("log_every_n_steps") or 50))
        if opts.media_images and self.subcommand in ("fit", "validate"):
            callbacks.append(AttentionMapLogger(opts.media_images))
        if self.subcommand == "predict":
            callbacks.append(PredictionWriter(str(run_dir / "predictions.jsonl")))
        logger = cfg.trainer.get("logger")
        if logger is None or logger is True:
            if opts.wandb:
                logger = self._wandb_logger(opts, run_dir)
                callbacks.append(LearningRateMonitor("step"))
            else:
                logger = False
        plugins = cfg.trainer.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # a checkpoint file is whole or absent
        return super().instantiate_trainer(callbacks=callbacks, logger=logger, plugins=plugins, **kwargs)

    def _wandb_logger(self, opts: RunOptions, run_dir: Path) -> Any:
        from lightning.pytorch.loggers import WandbLogger

        id_file = run_dir / "wandb_id"
        if id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            ckpt = self.config[self.subcommand].get("ckpt_path")
            # a checkpoint moved out of its run folder still carries its run's id
            run_id = (read_checkpoint(Path(ckpt)).get("tfm_run") or {}).get("wandb_id") if ckpt and self.subcommand == "fit" else None
            if not run_id:
                import secrets
                import string

                run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            if is_rank_zero():
                run_dir.mkdir(parents=True, exist_ok=True)
                id_file.write_text(run_id + "\n")
        online = wandb_online() or os.environ.get("WANDB_MODE") == "online"
        return WandbLogger(
            project=opts.project,
            name=f"{self.run_name}/{run_dir.name}",
            group=self.run_name,
            save_dir=str(run_dir),
            id=run_id,
            offline=not online,
            resume="allow",
        )

    def after_fit(self) -> None:
        stop = next((c for c in self.trainer.callbacks if isinstance(c, StopSignals)), None)
        if stop is not None and stop.stopped_by:
            if is_rank_zero():
                config = Path(self.trainer.default_root_dir) / "config.yaml"
                print(f"tfm: stopped by {signal.Signals(stop.stopped_by).name} at step {self.trainer.global_step}, checkpoint "
                      f"{stop.checkpoint}; resume with: python -m tfm fit --config {config} --ckpt_path last", file=sys.stderr)
            _finish_wandb()
            raise SystemExit(128 + stop.stopped_by)
        # last.ckpt holds the final state even when max_steps ended training mid-epoch (Lightning
        # then writes it only if no last.ckpt was written earlier in the same run)
        cb = self.trainer.checkpoint_callback
        if cb is not None and cb.dirpath and self.trainer.global_step > 0 and cb._last_global_step_saved != self.trainer.global_step:
            self.trainer.save_checkpoint(Path(cb.dirpath) / "last.ckpt")
        if self.config[self.subcommand].run.test_after_fit:
            has_best = self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.best_model_path
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)


def concise_parse_error(message: str) -> str:
    """The gist of a jsonargparse error: which key is unknown or which value is bad, and the valid
    values where the type is a choice (``Literal``)."""
    where = ".".join(re.findall(r'Parser key "([^"]+)"', message))
    given = re.search(r"(?:Got value|Given value): (.+)", message)
    got = given.group(1).strip() if given else None
    if got and got.startswith("NestedArg("):
        m = re.search(r"val='?([^')]*)'?\)", got)
        got = m.group(1) if m else got
    choices: list[str] = []
    for group in re.findall(r"Literal\[([^\]]*)\]", message):
        choices += [c.strip() for c in group.split(",") if c.strip() and c.strip() not in choices]
    if choices and got is not None:
        strings = [c for c in choices if c.startswith("'")] or choices
        return f"--{where}={got}: expected one of {', '.join(strings)}"
    for pattern, template in (
        (r"Option '([^']+)' is not accepted", "unknown option {where}.{0}"),
        (r'Key "([^"]+)" is not expected', "unknown key {where}.{0}"),
        (r"Unrecognized arguments: (.+)", "unrecognized arguments: {0}"),
        (r"Expected a (<[^>]+>|\S+)\. Got value: (.+)", "{where}: expected {0}, got {1!r}"),
        (r"Expected a (<[^>]+>|\S+)", "{where}: expected {0}"),
    ):
        m = re.search(pattern, message)
        if m:
            text = template.format(*[g.strip() for g in m.groups()], where=where).lstrip(".")
            return f"{text} (valid keys and types: --help, --print_config)"
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return " ".join(lines[:2])[:400] + " (see --help)"


def check_yaml_files(args: list[str]) -> None:
    """Each ``--config`` file exists and is valid YAML: one line naming the file, line and column
    (jsonargparse names neither the file nor, for a file, the line)."""
    import yaml

    paths = [b for a, b in zip(args, args[1:]) if a == "--config"] + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"--config {path} does not exist (the configs are in configs/; a run's own is <run>/config.yaml)")
        try:
            yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise UserError(f"--config {path} is not valid YAML{at}: {problem}") from None


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


def _finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _user_error(e: BaseException | None) -> BaseException | None:
    """The user mistake behind an exception (jsonargparse wraps errors raised in constructors)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (UserError, ConversionError, ConfigError)):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _drop_litlogger_tip(record: logging.LogRecord) -> bool:
    """Lightning advertises its own logger on every run; tfm logs to W&B."""
    return "litlogger" not in record.getMessage()


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

    def undo(self, trainer: Trainer | None) -> None:
        if not is_rank_zero() or (trainer is not None and trainer.global_step > 0):
            return
        if self.before is None:  # a new run: all of it, and the folders made for it
            shutil.rmtree(self.top, ignore_errors=True)
            return
        for p in sorted(set(self.run_dir.rglob("*")) - self.before, key=lambda p: len(p.parts), reverse=True):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


_current: TFMCLI | None = None  # the CLI of the command running now (its run folder is undone on failure)


class _Parsed(Exception):
    pass


class _ParseOnlyCLI(TFMCLI):
    def _set_seed(self) -> None:
        pass

    def before_instantiate_classes(self) -> None:
        check_config(self.config[self.subcommand], self.subcommand)
        raise _Parsed


def parse_only(args: list[str]) -> None:
    """Parse a command line as ``tfm`` would, instantiating nothing; a user mistake raises UserError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "args and sys.argv both given"
            _ParseOnlyCLI(args=args)
    except _Parsed:
        return
    except Exception as e:
        user_error = _user_error(e)
        if user_error is None:
            raise
        raise user_error from None


def main(args: list[str] | None = None) -> TFMCLI | None:
    """Entry point of ``python -m tfm`` and the ``tfm`` script; returns the CLI (for tests)."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["sweep"]:
        from .sweep import main as sweep_main

        try:
            sweep_main(argv[1:])
        except UserError as e:
            print(f"tfm: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        return None
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_litlogger_tip)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # tfm's DataModules carry the position in the epoch in the checkpoint (ResumableDataModule),
    # and a resumed run writes into its own checkpoint folder on purpose
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    global _current
    _current = None
    try:
        return TFMCLI(args=args)
    except Exception as e:
        user_error = _user_error(e) or _lightning_user_error(e)
        _finish_wandb()
        if _current is not None and _current.run_guard is not None:
            _current.run_guard.undo(_current.trainer if hasattr(_current, "trainer") else None)
        if user_error is None:
            raise
        print(f"tfm: error: {_one_line(user_error)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _finish_wandb()


def _one_line(e: BaseException) -> str:
    """The message of a user error; one raised in a DataLoader worker comes back wrapped with the
    worker's traceback, of which only the original message is the user's."""
    text = str(e).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def _lightning_user_error(e: BaseException) -> UserError | None:
    """Lightning's checks of values that depend on the data (known only once it is loaded), as one line."""
    m = re.search(r"`val_check_interval` \((\d+)\) must be less than or equal to the number of the training batches \((\d+)\)", str(e))
    if m:
        every, batches = m.groups()
        return UserError(f"--trainer.val_check_interval={every} is more than the {batches} training batches of an epoch of this data: "
                         f"pass --trainer.val_check_interval={batches} (or fewer, or a fraction such as 0.5), or "
                         "--trainer.check_val_every_n_epoch=null to count the steps across epochs")
    return None
