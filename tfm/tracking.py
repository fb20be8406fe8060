"""Weights & Biases for a run: online when credentials exist, else offline; the run's id kept in its folder so a
resumed run logs into the same W&B run; the resolved config, git commit and tokenizer files attached."""

from __future__ import annotations

import netrc
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from .pretrained import read_checkpoint
from .runs import RunOptions, is_rank_zero


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
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                cfg = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
                logger.experiment.config.update({"tfm_config": cfg, "git_commit": git_commit()}, allow_val_change=True)
                run_dir = Path(trainer.default_root_dir)
                for name in ("config.yaml", "tokenizer.json", "target_tokenizer.json", "vocab.txt"):
                    if (run_dir / name).is_file():
                        logger.experiment.save(str(run_dir / name), base_path=str(run_dir), policy="now")


def wandb_logger(opts: RunOptions, name: str, run_dir: Path, resumed_from: str | None) -> WandbLogger:
    """The run's logger: its id is read from ``<run>/wandb_id`` (a resumed run), else from the checkpoint it resumes
    (``resumed_from``: a checkpoint moved out of its run folder still carries its run's id), else new."""
    id_file = run_dir / "wandb_id"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = (read_checkpoint(Path(resumed_from)).get("tfm_run") or {}).get("wandb_id") if resumed_from else None
        run_id = run_id or "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        if is_rank_zero():
            run_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
    online = wandb_online() or os.environ.get("WANDB_MODE") == "online"
    return WandbLogger(project=opts.project, name=f"{name}/{run_dir.name}", group=name, save_dir=str(run_dir), id=run_id,
                       offline=not online, resume="allow")


def finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def log_table(loggers: list[Any], key: str, columns: list[str], data: list[list[Any]], step: int) -> None:
    """A table of rows (e.g. sample translations) to the run's W&B logger, if it has one."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key, columns=columns, data=data, step=step)
