"""TokenClassification: a linear tagger on every token (NER, POS)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ..metrics import EntityF1
from ..nn.bert import BertForTokenClassification
from .bert import BertFinetuneTask

Batch = dict[str, Tensor]


class TokenClassification(BertFinetuneTask):
    """BERT token classification: one label per word, predicted at its first sub-token (the
    DataModule puts -100 on the other sub-tokens and on specials).

    Metrics per stage: token accuracy (POS), and with a BIO/IOB2 tag set entity-level precision,
    recall and F1 (seqeval's semantics: an entity counts when its type and both ends match).

    Args:
        num_labels: linked from the DataModule by the CLI.
        label_names: linked from the DataModule by the CLI.
        tag_scheme: ``bio`` (entity F1 scored) or ``plain``, linked from the DataModule by the CLI.
        **kwargs: the backbone and optimisation settings of
            :class:`~tfm.tasks.bert.BertFinetuneTask` (``arch``, ``init_from``, ``lr`` ...).
    """

    def __init__(
        self,
        num_labels: int = 9,
        label_names: list[str] | None = None,
        tag_scheme: Literal["bio", "plain"] = "plain",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.label_names = label_names or [str(i) for i in range(num_labels)]
        self.tag_scheme = tag_scheme
        self.net = BertForTokenClassification(self.build_bert(), num_labels, self.head_dropout)
        self.monitor = ("val/f1", "max") if tag_scheme == "bio" else ("val/acc", "max")

    def build_metrics(self, stage: str) -> MetricCollection:
        metrics: dict[str, Any] = {"acc": MulticlassAccuracy(self.hparams.num_labels, average="micro", ignore_index=-100)}
        if self.tag_scheme == "bio":
            metrics["entity"] = EntityF1(self.label_names)
        return MetricCollection(metrics, prefix=f"{stage}/")

    def forward(self, batch: Batch, net: torch.nn.Module | None = None) -> Tensor:
        return (net or self.net)(*self.batch_inputs(batch))

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    def _log_metrics(self, metrics: MetricCollection, stage: str) -> None:
        values: dict[str, Tensor] = {}
        for name, value in metrics.compute().items():
            if isinstance(value, dict):  # EntityF1: precision, recall, f1
                values.update({f"{stage}/{k}": v for k, v in value.items()})
            else:
                values[name] = value
        self.log_dict(values, prog_bar=stage == "val")
        metrics.reset()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = self.loss(logits, batch["labels"])
        self.train_metrics.update(logits.detach().argmax(-1), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_metrics(self.train_metrics, "train")

    def _eval_step(self, batch: Batch, stage: str) -> None:
        logits = self(batch, self.eval_net)
        self.metrics(stage).update(logits.argmax(-1), batch["labels"])
        scored = int((batch["labels"] != -100).sum())
        self.log(f"{stage}/loss", self.loss(logits, batch["labels"]), sync_dist=True, batch_size=max(scored, 1))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch, self.eval_net)
        return {"pred": logits.argmax(-1), "scored": batch["labels"] != -100}

    def prediction_rows(self, output: dict[str, Tensor]) -> list[dict[str, Any]]:
        """One row per sentence: the tag of each word (at its first sub-token)."""
        return [{"tags": [self.label_names[int(t)] for t in pred[keep]]} for pred, keep in zip(output["pred"], output["scored"])]
