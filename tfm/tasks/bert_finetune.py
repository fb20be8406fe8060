"""What the BERT fine-tuning tasks share: the backbone, built from a preset, a tfm pretraining
checkpoint or a Hugging Face BERT folder (``--model.init_from``), under a fresh head."""

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


class BertFinetuneTask(TaskModule):
    """Base of the fine-tuning tasks: ``self.bert`` is ready for a head after ``__init__``.

    Args:
        arch: a BERT preset for a model trained from scratch (``bert_mini`` ...); ignored with
            ``init_from``, which brings its own architecture.
        vocab_size, pad_token_id: linked from the DataModule's tokenizer by the CLI.
        max_positions, dim, depth, num_heads, ffn_dim: architecture of a model from scratch.
        dropout, attn_dropout: of the backbone (and ``head_dropout`` of the head, default: dropout).
        init_from: a tfm checkpoint of any BERT task (e.g. pretraining) or a Hugging Face BERT
            folder (``config.json`` + weights); the head always starts fresh.
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
        head_dropout: float | None = None,
        init_from: str | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        eps: float = 1e-6,
        schedule: str = "linear",
        warmup_steps: int | float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, eps=eps, schedule=schedule, warmup_steps=warmup_steps, **kwargs)
        if arch not in BERT_PRESETS:
            raise UserError(f"arch={arch!r} is not a BERT preset: use one of {', '.join(BERT_PRESETS)}")
        self._bert_args = dict(arch=arch, vocab_size=vocab_size, pad_token_id=pad_token_id, max_positions=max_positions, dim=dim,
                               depth=depth, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout, attn_dropout=attn_dropout)
        self.init_from = init_from
        self.head_dropout = dropout if head_dropout is None else head_dropout

    def build_bert(self) -> Bert:
        """The backbone: from ``init_from`` when given, else a fresh ``arch``."""
        a = self._bert_args
        if self.init_from:
            return load_bert_backbone(self.init_from, a["vocab_size"], a["dropout"], a["attn_dropout"])
        return create_bert(**a)

    @staticmethod
    def batch_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        return batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask")

    def count_batch(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(sequences, real tokens) of a batch, for throughput."""
        return len(batch["input_ids"]), int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
