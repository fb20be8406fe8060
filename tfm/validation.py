"""Value ranges of the arguments every task and DataModule shares, declared once and checked on
the parsed config before anything is built or written.

A rule is keyed by the argument's name, wherever it appears (``--model.lr``, ``--data.batch_size``,
``--trainer.max_steps``): the tasks and DataModules keep plain ``int`` / ``float`` signatures (usable
from Python), and the CLI refuses a value out of range with one line naming it and the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import UserError


@dataclass(frozen=True)
class Range:
    """``low <(=) value <(=) high``; ``note``: why, when the range is not obvious."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    note: str = ""

    def check(self, key: str, value: Any) -> None:
        if value is None or isinstance(value, bool):
            return
        if not isinstance(value, (int, float)) or (self.integer and not float(value).is_integer()):
            return  # a type error is the parser's to report
        bad = math.isnan(value)
        if self.low is not None:
            bad |= value <= self.low if self.low_open else value < self.low
        if self.high is not None:
            bad |= value >= self.high if self.high_open else value > self.high
        if bad:
            raise UserError(f"--{key}={value}: must be {self.describe()}" + (f" ({self.note})" if self.note else ""))

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"


POSITIVE_INT = Range(0, low_open=True, integer=True)
PROBABILITY = Range(0, 1, high_open=True)  # a rate that must leave something: dropout, smoothing, held-out share

#: model and data arguments, by name
ARGUMENTS: dict[str, Range] = {
    "batch_size": POSITIVE_INT,
    "eval_batch_size": POSITIVE_INT,
    "num_workers": Range(0, integer=True, note="0 loads in the training process"),
    "num_proc": Range(1, integer=True, note="processes preparing the data; unset: one per CPU for large corpora"),
    "tokenizer_sample_bytes": POSITIVE_INT,
    "stream_block_size": POSITIVE_INT,
    "max_tokens": POSITIVE_INT,
    "max_seq_length": POSITIVE_INT,
    "max_source_length": POSITIVE_INT,
    "max_target_length": POSITIVE_INT,
    "lr": Range(0, low_open=True, note="lr=0 trains nothing"),
    "weight_decay": Range(0),
    "warmup_steps": Range(0),
    "min_lr_ratio": Range(0, 1),
    "layer_decay": Range(0, 1, low_open=True),
    "ema_decay": Range(0, 1, low_open=True, high_open=True),
    "eps": Range(0, low_open=True),
    "label_smoothing": PROBABILITY,
    "dropout": PROBABILITY,
    "attn_dropout": PROBABILITY,
    "head_dropout": PROBABILITY,
    "activation_dropout": PROBABILITY,
    "drop_path_rate": PROBABILITY,
    "val_fraction": PROBABILITY,
    "test_fraction": PROBABILITY,
    "mlm_probability": Range(0, 1, low_open=True),
    "hflip": Range(0, 1),
    "random_erasing": Range(0, 1),
    "dim": POSITIVE_INT,
    "depth": POSITIVE_INT,
    "num_heads": POSITIVE_INT,
    "patch_size": POSITIVE_INT,
    "image_size": POSITIVE_INT,
    "vocab_size": POSITIVE_INT,
    "beam_size": POSITIVE_INT,
}

#: Trainer arguments (Lightning's own checks come later, as tracebacks)
TRAINER: dict[str, Range] = {
    "max_epochs": Range(-1, integer=True, note="-1 for no limit"),
    "accumulate_grad_batches": POSITIVE_INT,
    "gradient_clip_val": Range(0),
    "log_every_n_steps": POSITIVE_INT,
    "check_val_every_n_epoch": POSITIVE_INT,
}


def check_config(cfg: Any, subcommand: str) -> None:
    """Every model, data and Trainer value of a parsed config that is out of its range: one line."""
    for group in ("model", "data"):
        args = getattr(cfg.get(group), "init_args", None)  # a class_path + init_args namespace
        for key, value in (vars(args) if args is not None else {}).items():
            if key in ARGUMENTS:
                ARGUMENTS[key].check(f"{group}.{key}", value)
    trainer = cfg.get("trainer")
    if trainer is None:
        return
    for key, rule in TRAINER.items():
        rule.check(f"trainer.{key}", trainer.get(key))
    max_steps = trainer.get("max_steps")
    if subcommand == "fit" and max_steps is not None and max_steps != -1 and max_steps <= 0:
        note = "trains nothing: test an untrained model with `tfm test` instead" if max_steps == 0 else "-1 for no limit"
        raise UserError(f"--trainer.max_steps={max_steps}: must be a positive integer or -1 ({note})")
