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
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from . import data as _data  # noqa: F401  (registers DataModules for short class paths)
from .callbacks import StopSignals, default_callbacks
from .checkpointing import AtomicCheckpointIO, remove_partial_checkpoints
from .errors import UserError, check_yaml_files, concise_parse_error, lightning_user_error, one_line
from .hardware import check_accelerator, check_precision, default_precision, enable_tf32, uses_cuda
from .nn.config import ConfigError
from .nn.convert import ConversionError
from .pretrained import read_checkpoint
from .runs import RunGuard, RunOptions, check_checkpoint_fits, is_rank_zero, resolve_run, run_tokenizer, with_run_config
from .tasks import TaskModule
from .tracking import RunConfigSaver, finish_wandb, wandb_logger
from .validation import check_config

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class TFMCLI(LightningCLI):
    """LightningCLI with tfm's run folders, default logger and callbacks."""

    def __init__(self, args: Any = None, run: bool = True) -> None:
        self.run_dir: Path | None = None
        self.run_guard: RunGuard | None = None
        no_exit = {"exit_on_error": False}  # parse errors raise, and become one line (parse_arguments)
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
            parser_kwargs={**no_exit, **{sub: no_exit for sub in SUBCOMMANDS}},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunOptions, "run", fail_untyped=True)
        for attr in ("num_classes", "class_names", "image_size", "in_chans", "num_labels", "label_names", "problem_type",
                     "tag_scheme"):
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
        args = with_run_config(list(args if args is not None else sys.argv[1:]))
        check_yaml_files(args)
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            raise UserError(concise_parse_error(str(e))) from None

    def _parse_ckpt_path(self) -> None:
        """A Lightning private, overridden on purpose: since Lightning PR #21116 (issues #20310, #20801) LightningCLI
        replaces the configured model's arguments with a checkpoint's. In tfm the config decides the model, and a
        checkpoint that does not fit it is refused with one line (``check_checkpoint_fits``); pinned by
        ``tests/test_cli.py::test_bad_input_is_one_clear_line_and_overwrites_nothing``."""

    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        cfg = self.config[sub]
        check_config(cfg, sub)  # value ranges: one line, before anything is built or written
        opts = cfg.run
        plan = resolve_run(sub, opts, [str(c) for c in cfg.get("config") or []], cfg.model.class_path, cfg.get("ckpt_path"))
        run_dir = plan.run_dir
        data_args = cfg.data.get("init_args") if hasattr(cfg.data, "get") else None
        source = plan.ckpt or (cfg.model.get("init_args") or {}).get("init_from")
        if source and data_args is not None and "tokenizer" in data_args and data_args.tokenizer is None:
            # a checkpoint goes on (or is fine-tuned) with the vocabulary it was trained with (retraining could
            # shift the ids), unless --data.tokenizer names one
            data_args.tokenizer = run_tokenizer(Path(source))
        for folder in (run_dir, run_dir / "checkpoints"):
            for partial in remove_partial_checkpoints(folder):
                rank_zero_warn(f"removed {partial}: a checkpoint write that was interrupted")
        self.run_guard = RunGuard(run_dir)
        if sub == "fit":  # the saved config.yaml names its run: `fit --config <run>/config.yaml --ckpt_path last` resumes it
            opts.root, opts.name, opts.version = str(run_dir.parent.parent), run_dir.parent.name, run_dir.name
        else:
            opts.version = plan.version
        cfg.ckpt_path = plan.ckpt
        cfg.trainer.default_root_dir = str(run_dir)
        os.environ["TFM_RUN_DIR"] = str(run_dir)  # inherited by the processes of the other DDP ranks
        self.run_name, self.run_dir = plan.name, run_dir

    def _check_lengths(self) -> None:
        max_pos = getattr(self.model, "hparams", {}).get("max_positions")
        for attr in ("max_seq_length", "max_source_length", "max_target_length"):
            max_len = getattr(self.datamodule, attr, None)
            if max_len and max_pos and max_len > max_pos:
                raise UserError(f"--data.{attr} {max_len} exceeds the model's {max_pos} positions: raise "
                                "--model.max_positions or shorten the data")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self.config_init[self.subcommand]
        opts, run_dir = cfg.run, self.run_dir
        accelerator, precision = cfg.trainer.get("accelerator"), cfg.trainer.get("precision")
        check_accelerator(accelerator)
        on_cuda = uses_cuda(accelerator)
        check_precision(precision, on_cuda, device_name=torch.cuda.get_device_name() if on_cuda else "")
        enable_tf32(on_cuda, opts.tf32)
        ckpt = cfg.get("ckpt_path")
        if ckpt:
            check_checkpoint_fits(Path(ckpt), self.model)
        self._check_lengths()
        if self.subcommand == "fit" and hasattr(self.datamodule, "save_tokenizer") and not (run_dir / "tokenizer.json").exists():
            if is_rank_zero():
                self.datamodule.save_tokenizer(run_dir)  # the checkpoint travels with its vocabulary
        callbacks = default_callbacks(self.subcommand, run_dir, getattr(self.model, "monitor", ("val/loss", "min")),
                                      cfg.trainer.get("callbacks") or [], opts.media_images, opts.save_every_n_steps,
                                      cfg.trainer.get("enable_progress_bar") is not False,
                                      cfg.trainer.get("log_every_n_steps"))
        logger = cfg.trainer.get("logger")
        if logger is None or logger is True:
            logger = False
            if opts.wandb:
                logger = wandb_logger(opts, self.run_name, run_dir, ckpt if self.subcommand == "fit" else None)
                callbacks.append(LearningRateMonitor("step"))
        plugins = cfg.trainer.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # a checkpoint file is whole or absent
        return super().instantiate_trainer(callbacks=callbacks, logger=logger, plugins=plugins, **kwargs)

    def after_fit(self) -> None:
        stop = next((c for c in self.trainer.callbacks if isinstance(c, StopSignals)), None)
        if stop is not None and stop.stopped_by:
            if is_rank_zero():
                config = Path(self.trainer.default_root_dir) / "config.yaml"
                print(f"tfm: stopped by {signal.Signals(stop.stopped_by).name} at step {self.trainer.global_step}, checkpoint "
                      f"{stop.checkpoint}; resume with: python -m tfm fit --config {config} --ckpt_path last", file=sys.stderr)
            finish_wandb()
            raise SystemExit(128 + stop.stopped_by)
        # last.ckpt holds the final state even when max_steps ended training mid-epoch (Lightning then writes it only
        # if no last.ckpt was written earlier in the same run)
        cb, step = self.trainer.checkpoint_callback, self.trainer.global_step
        last = Path(cb.dirpath) / "last.ckpt" if cb is not None and cb.dirpath else None
        if last is not None and step > 0 and (not last.is_file() or read_checkpoint(last).get("global_step") != step):
            self.trainer.save_checkpoint(last)
        if self.config[self.subcommand].run.test_after_fit:
            has_best = cb is not None and cb.best_model_path
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)


class _ParseOnlyCLI(TFMCLI):
    """Parses and checks the arguments of one command (``subcommand``), instantiating nothing."""

    def __init__(self, subcommand: str, args: list[str]) -> None:
        self.parsed_subcommand = subcommand
        super().__init__(args=args, run=False)

    def before_instantiate_classes(self) -> None:
        check_config(self.config, self.parsed_subcommand)

    def instantiate_classes(self) -> None:
        pass


def user_error_of(e: BaseException | None) -> BaseException | None:
    """The user mistake behind an exception (jsonargparse wraps errors raised in constructors)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (UserError, ConversionError, ConfigError)):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def parse_only(args: list[str]) -> None:
    """Parse a command line (``fit --config ...``) as ``tfm`` would, instantiating nothing; a user mistake raises
    UserError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "args and sys.argv both given"
            _ParseOnlyCLI(args[0], args[1:])
    except Exception as e:
        if (user_error := user_error_of(e)) is None:
            raise
        raise user_error from None


def main(args: list[str] | None = None) -> TFMCLI | None:
    """The LightningCLI commands (``python -m tfm`` dispatches here); returns the CLI (for tests)."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # tfm's DataModules carry the position in the epoch in the checkpoint (ResumableDataModule),
    # and a resumed run writes into its own checkpoint folder on purpose
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    cli = None

    class _Tracked(TFMCLI):  # the CLI of this command, known before its __init__ ends (its run folder is undone)
        def before_instantiate_classes(self) -> None:
            nonlocal cli
            cli = self
            super().before_instantiate_classes()

    try:
        return _Tracked(args=args)
    except Exception as e:
        user_error = user_error_of(e) or lightning_user_error(e)
        finish_wandb()
        if cli is not None and cli.run_guard is not None:
            cli.run_guard.undo(cli.trainer.global_step if hasattr(cli, "trainer") else 0)
        if user_error is None:
            raise
        print(f"tfm: error: {one_line(user_error)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        finish_wandb()
