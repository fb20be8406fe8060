"""The BERT tasks' base: the backbone's settings declared once (a preset and overrides, or ``init_from``), and
what the fine-tuning tasks share (a backbone under a fresh head)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from ..nn.bert import BERT_PRESETS, Bert, create_bert
from ..nn.convert import load_hf_bert
from ..pretrained import Pretrained
from .base import TaskModule


def load_bert_backbone(init_from: str, vocab_size: int, dropout: float, attn_dropout: float) -> Bert:
    """The encoder (and pooler) of a tfm checkpoint (any BERT task's) or of an HF BERT folder,
    with this run's dropout; its vocabulary must be the data's tokenizer's."""
    src = Pretrained(init_from, "a tfm .ckpt or a Hugging Face BERT folder", folders=True)
    if src.is_file:
        hp, state = src.hparams, src.weights("net.bert.")
        if not state or hp.get("arch") not in BERT_PRESETS:
            raise src.error("is not a checkpoint of a tfm BERT task (it has no net.bert weights)")
        bert = create_bert(hp["arch"], vocab_size=hp["vocab_size"], pad_token_id=hp.get("pad_token_id"), max_positions=hp.get("max_positions"),
                           dim=hp.get("dim"), depth=hp.get("depth"), num_heads=hp.get("num_heads"), ffn_dim=hp.get("ffn_dim"),
                           dropout=dropout, attn_dropout=attn_dropout, add_pooler="pooler.weight" in state)
        src.load(bert, state)
    else:
        bert = src.hf(load_hf_bert, Bert, dropout=dropout, attn_dropout=attn_dropout)
    if bert.vocab_size != vocab_size:
        raise UserError(
            f"--model.init_from {init_from} has a vocabulary of {bert.vocab_size} tokens but the data's tokenizer has {vocab_size}: "
            "fine-tune with the tokenizer it was trained with (the CLI picks it when --data.tokenizer is not set)"
        )
    return bert


class BertTask(TaskModule):
    """A task on a BERT encoder; ``self.bert_args`` are :func:`~tfm.nn.bert.create_bert`'s keyword arguments.

    Args:
        arch: a BERT preset (``bert_tiny``, ``bert_mini``, ``bert_small``, ``bert_base``, ``bert_large``) for a model
            from scratch; the fields below that are set override it.
        vocab_size: linked from the DataModule's tokenizer by the CLI.
        pad_token_id: linked from the DataModule's tokenizer by the CLI.
        max_positions: learned position embeddings (at least the data's ``max_seq_length``).
        dim: width (default: the preset's).
        depth: number of layers (default: the preset's).
        num_heads: attention heads (default: the preset's).
        ffn_dim: feed-forward width (default: the preset's).
        dropout: of the embeddings and residual branches.
        attn_dropout: of the attention weights.
        init_from: a tfm checkpoint of any BERT task (e.g. pretraining) or a Hugging Face BERT folder
            (``config.json`` + weights); its architecture replaces the preset.
        **kwargs: optimisation settings of :class:`~tfm.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        arch: str = "bert_base",
        vocab_size: int = 30522,
        pad_token_id: int = 0,
        max_positions: int = 512,
        dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        init_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if arch not in BERT_PRESETS:
            raise UserError(f"arch={arch!r} is not a BERT preset: use one of {', '.join(BERT_PRESETS)}")
        self.save_hyperparameters()  # this task's arguments and its subclasses' (Lightning reads every frame)
        self.bert_args = dict(arch=arch, vocab_size=vocab_size, pad_token_id=pad_token_id, max_positions=max_positions,
                              dim=dim, depth=depth, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout,
                              attn_dropout=attn_dropout)
        self.init_from = init_from


class BertFinetuneTask(BertTask):
    """Base of the fine-tuning tasks: ``self.build_bert()`` gives the backbone for a head; the head always starts
    fresh.

    Args:
        head_dropout: before the head (default: ``dropout``).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        eps: AdamW epsilon.
        schedule: LR schedule after warmup.
        warmup_steps: warmup length in optimizer steps, or a fraction (< 1) of all steps.
        **kwargs: the backbone (:class:`BertTask`), other settings of :class:`~tfm.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        head_dropout: float | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        eps: float = 1e-6,
        schedule: str = "linear",
        warmup_steps: int | float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, eps=eps, schedule=schedule, warmup_steps=warmup_steps, **kwargs)
        self.head_dropout = self.bert_args["dropout"] if head_dropout is None else head_dropout

    def build_bert(self) -> Bert:
        """The backbone: from ``init_from`` when given, else a fresh ``arch``."""
        a = self.bert_args
        if self.init_from:
            return load_bert_backbone(self.init_from, a["vocab_size"], a["dropout"], a["attn_dropout"])
        return create_bert(**a)

    @staticmethod
    def batch_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        return batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask")

    def count_batch(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(sequences, real tokens) of a batch, for throughput."""
        return len(batch["input_ids"]), int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
