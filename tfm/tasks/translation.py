"""Translation: an encoder-decoder Transformer trained with teacher forcing and label smoothing,
evaluated with beam search, detokenised sacreBLEU / chrF and ROUGE-L."""

from __future__ import annotations

import math
from itertools import takewhile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ..checkpointing import write_atomic
from ..errors import UserError
from ..metrics import translation_scores
from ..nn.convert import load_hf_marian
from ..nn.generation import GenerationConfig, generate
from ..nn.seq2seq import (
    TRANSFORMER_PRESETS,
    Seq2SeqTransformer,
    create_transformer,
    label_smoothed_cross_entropy,
    token_losses,
)
from ..pretrained import Pretrained
from ..tracking import log_table
from .base import Schedule, TaskModule

Batch = dict[str, Any]


def load_translation_weights(init_from: str, vocab_size: int, tgt_vocab_size: int | None, dropout: float) -> Seq2SeqTransformer:
    """A whole model from a tfm translation checkpoint or a Hugging Face Marian folder; its
    vocabulary must be the data's tokenizer's."""
    src = Pretrained(init_from, "a tfm .ckpt or a Hugging Face Marian folder", folders=True)
    if src.is_file:
        state = src.weights("net.")
        if not state or src.hparams.get("arch") not in TRANSFORMER_PRESETS:
            raise src.error("is not a checkpoint of a tfm translation task")
        model = src.load(Translation.build(src.hparams | {"dropout": dropout}), state)
    else:
        model = src.hf(load_hf_marian, dropout=dropout)
    theirs = (model.vocab_size, model.tgt_vocab_size)
    ours = (vocab_size, tgt_vocab_size or vocab_size)
    if theirs != ours:
        raise UserError(
            f"--model.init_from {init_from} has vocabularies of {theirs[0]}/{theirs[1]} (source/target) tokens but the data's tokenizer has "
            f"{ours[0]}/{ours[1]}: use the tokenizer it was trained with (--data.tokenizer=<its run folder>)"
        )
    return model


class Translation(TaskModule):
    """Sequence-to-sequence translation (Vaswani et al. 2017; fairseq's ``transformer`` recipe).

    Training: teacher forcing (the decoder reads ``[START] y``, predicts ``y [END]``), label-smoothed cross-entropy.
    Validation: loss and perplexity; every ``bleu_every_n_epochs`` epochs also beam search, detokenised sacreBLEU,
    chrF, ROUGE-L (:func:`~tfm.metrics.translation_scores`) and a W&B table of samples. ``test`` always decodes;
    ``predict`` writes one translation per input line to ``<run>/translations.txt`` (or ``predict_output``).

    Args:
        arch: a preset (``transformer_tiny`` ... ``transformer_big``); ``dim`` ... ``norm_first`` override its fields.
        vocab_size: the source (or joint) vocabulary, linked from the DataModule's tokenizer by the CLI.
        tgt_vocab_size: the target vocabulary, linked by the CLI; None: one joint vocabulary, embeddings shared by
            encoder, decoder and output projection.
        pad_token_id: linked from the DataModule's tokenizer by the CLI.
        bos_token_id: the decoder's first input, linked from the DataModule's tokenizer by the CLI.
        eos_token_id: ends sources and targets, linked from the DataModule's tokenizer by the CLI.
        label_smoothing: epsilon of the smoothed cross-entropy.
        beam_size: beams of the search (1: greedy).
        length_penalty: scores are divided by ``length ** length_penalty``.
        max_len_a: the output is at most ``max_len_a * source_length + max_len_b`` tokens.
        max_len_b: see ``max_len_a``.
        min_len: tokens generated before ``[END]`` may be.
        bleu_every_n_epochs: decode the validation set every N epochs (0: never during fit).
        num_samples: rows of the source / reference / hypothesis table logged each validation.
        init_from: a tfm translation checkpoint or a Hugging Face ``MarianMTModel`` folder.
        **kwargs: optimisation settings of :class:`~tfm.tasks.base.TaskModule`; the defaults are
            fairseq's: Adam(0.9, 0.98), inverse-square-root schedule after 4,000 warmup steps.
    """

    monitor = ("val/loss", "min")

    def __init__(
        self,
        arch: str = "transformer_base",
        vocab_size: int = 8000,
        tgt_vocab_size: int | None = None,
        pad_token_id: int = 0,
        bos_token_id: int = 2,
        eos_token_id: int = 3,
        max_positions: int = 1024,
        dim: int | None = None,
        encoder_layers: int | None = None,
        decoder_layers: int | None = None,
        num_heads: int | None = None,
        ffn_dim: int | None = None,
        activation: str | None = None,
        norm_first: bool | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        label_smoothing: float = 0.1,
        beam_size: int = 4,
        length_penalty: float = 1.0,
        max_len_a: float = 1.2,
        max_len_b: int = 10,
        min_len: int = 1,
        bleu_every_n_epochs: int = 1,
        num_samples: int = 8,
        predict_output: str | None = None,
        init_from: str | None = None,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-8,
        schedule: Schedule = "inverse_sqrt",
        warmup_steps: int | float = 4000,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, schedule=schedule, warmup_steps=warmup_steps, **kwargs)
        if arch not in TRANSFORMER_PRESETS:
            raise UserError(f"arch={arch!r} is not a translation preset: use one of {', '.join(TRANSFORMER_PRESETS)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        if beam_size < 1:
            raise UserError(f"beam_size={beam_size} must be at least 1")
        self.save_hyperparameters()
        if init_from:
            self.net = load_translation_weights(init_from, vocab_size, tgt_vocab_size, dropout)
        else:
            self.net = self.build(dict(self.hparams))
        self.label_smoothing = label_smoothing
        self.pad_token_id, self.bos_token_id, self.eos_token_id = pad_token_id, bos_token_id, eos_token_id
        self.decoding = GenerationConfig(num_beams=beam_size, length_penalty=length_penalty, max_len_a=max_len_a, max_len_b=max_len_b,
                                         min_length=min_len, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        self.bleu_every_n_epochs, self.num_samples, self.predict_output = bleu_every_n_epochs, num_samples, predict_output
        self._decoded: list[tuple[int, str, str, str]] = []  # (index, source, reference, hypothesis)
        self._sums: list[tuple[int, float, float, int]] = []  # (index, smoothed loss, nll, target tokens) per sentence
        self.translations: list[str] = []
        self.decoded: list[tuple[int, str, str, str]] = []

    #: the hyper-parameters that build the network (the others configure training and decoding)
    NET_ARGS = ("vocab_size", "tgt_vocab_size", "pad_token_id", "max_positions", "dim", "encoder_layers", "decoder_layers",
                "num_heads", "ffn_dim", "activation", "norm_first", "dropout", "attn_dropout", "activation_dropout")

    @classmethod
    def build(cls, hp: dict[str, Any]) -> Seq2SeqTransformer:
        """The model of the hyper-parameters ``hp``: its preset with the fields that ``hp`` sets."""
        return create_transformer(hp["arch"], **{k: hp.get(k) for k in cls.NET_ARGS})

    def forward(self, batch: Batch, net: torch.nn.Module | None = None) -> Tensor:
        src = batch["src_ids"]
        return (net or self.net)(src, batch["tgt_in"], src == self.pad_token_id)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        # the output projection and the loss run only at the real (non-pad) target tokens
        target = batch["tgt_out"].flatten()
        positions = (target != self.pad_token_id).nonzero().squeeze(1)
        logits = self.net(batch["src_ids"], batch["tgt_in"], batch["src_ids"] == self.pad_token_id, positions=positions)
        loss = label_smoothed_cross_entropy(logits, target.index_select(0, positions), self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(positions))
        return loss

    def count_batch(self, batch: Batch) -> tuple[int, int]:
        """(sentences, target tokens) of a batch, for throughput."""
        return len(batch["src_ids"]), int((batch["tgt_out"] != self.pad_token_id).sum())

    @torch.no_grad()
    def translate(self, src_ids: Tensor, net: torch.nn.Module | None = None, **overrides: Any) -> list[list[int]]:
        """Beam search (or greedy with ``num_beams=1``): the best hypothesis of each source, as
        token ids without [START] and [END]."""
        model = net or self.eval_net
        out = generate(model, src_ids, src_ids == self.pad_token_id, self.decoding, **overrides)
        kept = ([t for t in seq if t not in (self.bos_token_id, self.pad_token_id)] for seq in out.sequences.tolist())
        return [list(takewhile(lambda t: t != self.eos_token_id, seq)) for seq in kept]  # up to the first [END]

    def _decode_batch(self, batch: Batch) -> list[str]:
        detok = self.trainer.datamodule.decode  # the DataModule owns the tokenizer
        return [detok(h) for h in self.translate(batch["src_ids"])]

    def _decodes(self, stage: str) -> bool:
        n = self.bleu_every_n_epochs
        return stage != "val" or (not self.trainer.sanity_checking and n > 0 and (self.current_epoch + 1) % n == 0)

    def _eval_step(self, batch: Batch, stage: str) -> None:
        loss, nll, keep = token_losses(self(batch, self.eval_net), batch["tgt_out"], self.label_smoothing, self.pad_token_id)
        self._sums += list(zip(batch["index"].tolist(), loss.sum(1).tolist(), nll.sum(1).tolist(), keep.sum(1).tolist()))
        if self._decodes(stage):
            hyps = self._decode_batch(batch)
            self._decoded += list(zip(batch["index"].tolist(), batch["src_text"], batch["tgt_text"], hyps))

    def _log_losses(self, stage: str) -> None:
        rows, self._sums = self.gather_rows(self._sums), []
        ntok = sum(r[3] for r in rows)
        if not ntok:
            return
        loss, nll = sum(r[1] for r in rows) / ntok, sum(r[2] for r in rows) / ntok
        self.log_dict({f"{stage}/loss": loss, f"{stage}/nll": nll, f"{stage}/perplexity": math.exp(min(nll, 50.0))},
                      prog_bar=stage == "val", rank_zero_only=False)

    def _score(self, stage: str) -> None:
        """Corpus-level scores of the whole split (every rank's sentences, each once)."""
        rows, self._decoded = self.gather_rows(self._decoded), []
        self.decoded = rows  # (index, source, reference, hypothesis) of the last evaluation
        if not rows:
            return
        scores = translation_scores([r[3] for r in rows], [r[2] for r in rows])
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()}, prog_bar=stage == "val", rank_zero_only=False)
        self._log_samples(stage, rows)

    def _log_samples(self, stage: str, rows: list[tuple[int, str, str, str]]) -> None:
        if self.num_samples and self.trainer.global_rank == 0:
            picks = rows[:: max(1, len(rows) // self.num_samples)][: self.num_samples]
            log_table(self.loggers, f"{stage}/translations", ["source", "reference", "hypothesis"],
                      [[s, r, h] for _, s, r, h in picks], self.global_step)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_losses("val")
        if self._decodes("val"):
            self._score("val")
        self._decoded = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_losses("test")
        self._score("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> list[str]:
        hyps = self._decode_batch(batch)
        self._decoded += [(i, s, "", h) for i, s, h in zip(batch["index"].tolist(), batch["src_text"], hyps)]
        return hyps

    def on_predict_epoch_end(self) -> None:
        rows, self._decoded = self.gather_rows(self._decoded), []
        self.translations = [r[3] for r in rows]
        lines = self.trainer.datamodule.predict_lines(self.translations)  # blank input lines stay blank
        if self.trainer.global_rank != 0:
            return
        path = Path(self.predict_output or Path(self.trainer.log_dir or ".") / "translations.txt")
        write_atomic(path, "".join(t + "\n" for t in lines))

        rank_zero_info(f"tfm: wrote {len(self.translations)} translations to {path}")
