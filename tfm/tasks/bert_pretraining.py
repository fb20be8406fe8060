"""BertPretraining: masked LM + next-sentence prediction (Devlin et al. 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection

from ..errors import UserError
from ..nn.bert import BertForPretraining, create_bert, masked_positions, pretraining_loss
from ..nn.convert import load_hf_bert
from ..pretrained import Pretrained
from .bert import BertTask

Batch = dict[str, Tensor]


class BertPretraining(BertTask):
    """BERT pretraining: loss = masked-LM cross-entropy (at the masked positions only) + NSP.

    Logs per stage: ``loss``, ``mlm_loss``, ``mlm_acc``, ``perplexity`` (exp of the mean MLM loss
    over the epoch), ``nsp_loss``, ``nsp_acc``. The paper's optimiser is the default: AdamW
    (weight decay 0.01, not on biases and LayerNorms), linear warmup, then linear decay.

    Args:
        **kwargs: the backbone and ``init_from`` (:class:`~tfm.tasks.bert.BertTask`: a Hugging Face BERT folder brings
            its MLM and NSP heads too), optimisation settings of :class:`~tfm.tasks.base.TaskModule`.
    """

    monitor = ("val/loss", "min")

    def __init__(
        self,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        schedule: str = "linear",
        warmup_steps: int | float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, schedule=schedule, warmup_steps=warmup_steps, **kwargs)
        a, init_from = self.bert_args, self.init_from
        src = Pretrained(init_from, "a tfm .ckpt or a Hugging Face BERT folder", folders=True) if init_from else None
        if src is not None and not src.is_file:
            self.net = src.hf(load_hf_bert, BertForPretraining, dropout=a["dropout"], attn_dropout=a["attn_dropout"])
            if self.net.bert.vocab_size != a["vocab_size"]:
                raise UserError(
                    f"--model.init_from {init_from} has a vocabulary of {self.net.bert.vocab_size} tokens but the data's tokenizer has "
                    f"{a['vocab_size']}: pass its vocabulary with --data.tokenizer={init_from}"
                )
        else:
            self.net = BertForPretraining(create_bert(**a))
            if src is not None:
                src.load(self.net, src.weights("net."))

    def build_metrics(self, stage: str) -> MetricCollection:
        return MetricCollection({k: MeanMetric() for k in ("mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc")}, prefix=f"{stage}/")

    def forward(self, batch: Batch, net: torch.nn.Module | None = None) -> tuple[Tensor, dict[str, tuple[Tensor, int]]]:
        """The loss and, per metric, a (value, weight) pair: MLM ones weigh by masked tokens."""
        net = net or self.net
        pos = masked_positions(batch["labels"])
        out = net(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], pos)
        targets = batch["labels"].flatten()[pos]
        loss, mlm, nsp = pretraining_loss(out.mlm_logits, targets, out.nsp_logits, batch["next_sentence_label"])
        with torch.no_grad():
            n, b = max(int(targets.numel()), 1), len(batch["next_sentence_label"])
            mlm_acc = (out.mlm_logits.argmax(-1) == targets).float().mean() if targets.numel() else mlm.new_zeros(())
            nsp_acc = (out.nsp_logits.argmax(-1) == batch["next_sentence_label"]).float().mean()
        return loss, {"mlm_loss": (mlm.detach(), n), "mlm_acc": (mlm_acc, n), "nsp_loss": (nsp.detach(), b), "nsp_acc": (nsp_acc, b)}

    def _update(self, metrics: MetricCollection, values: dict[str, tuple[Tensor, int]], stage: str) -> None:
        for k, (v, w) in values.items():
            metrics[f"{stage}/{k}"].update(v, w)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, values = self(batch)
        self._update(self.train_metrics, values, "train")
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/mlm_acc", values["mlm_acc"][0], sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_epoch(self.train_metrics, "train")

    def _eval_step(self, batch: Batch, stage: str) -> None:
        loss, values = self(batch, self.eval_net)
        self._update(self.metrics(stage), values, stage)

    def _log_epoch(self, metrics: MetricCollection, stage: str) -> None:
        values = {k: v for k, v in metrics.compute().items()}  # MeanMetric syncs over DDP ranks itself
        values[f"{stage}/perplexity"] = torch.exp(values[f"{stage}/mlm_loss"].clamp(max=50.0))
        if stage != "train":  # the loss over the whole set: MLM per masked token + NSP per sequence
            values[f"{stage}/loss"] = values[f"{stage}/mlm_loss"] + values[f"{stage}/nsp_loss"]
        self.log_dict(values, prog_bar=stage == "val")
        metrics.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, "test")

    def count_batch(self, batch: Batch) -> tuple[int, int]:
        """(sequences, real tokens) of a batch, for throughput."""
        return len(batch["input_ids"]), int(batch["attention_mask"].sum())
