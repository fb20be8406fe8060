"""SequenceClassification: [CLS] -> pooler -> dropout -> linear, for single-label, multi-label
and regression problems, on single texts or text pairs."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanSquaredError, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
    MultilabelAccuracy,
    MultilabelF1Score,
)

from ..nn.bert import BertForSequenceClassification
from .bert import BertFinetuneTask

Batch = dict[str, Tensor]
ProblemType = Literal["single_label", "multi_label", "regression"]


class SequenceClassification(BertFinetuneTask):
    """BERT sequence classification (Devlin et al. 2019, GLUE-style).

    Losses: cross-entropy (single-label), binary cross-entropy per label (multi-label), MSE
    (regression). Metrics per stage: accuracy, macro F1 and Matthews correlation (single-label);
    micro/macro F1 and exact-match accuracy (multi-label); Pearson, Spearman and MSE (regression).

    Args:
        num_labels: linked from the DataModule by the CLI.
        label_names: linked from the DataModule by the CLI.
        problem_type: ``single_label``, ``multi_label`` or ``regression``, linked from the DataModule by the CLI.
        **kwargs: the backbone and optimisation settings of
            :class:`~tfm.tasks.bert.BertFinetuneTask` (``arch``, ``init_from``, ``lr`` ...).
    """

    def __init__(
        self,
        num_labels: int = 2,
        label_names: list[str] | None = None,
        problem_type: ProblemType = "single_label",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.problem_type = problem_type
        self.label_names = label_names or [str(i) for i in range(num_labels)]
        out = 1 if problem_type == "regression" else num_labels
        self.net = BertForSequenceClassification(self.build_bert(), out, self.head_dropout)
        self.monitor = {"single_label": ("val/acc", "max"), "multi_label": ("val/f1_micro", "max")}.get(
            problem_type, ("val/pearson", "max"))

    def build_metrics(self, stage: str) -> MetricCollection:
        n = self.hparams.num_labels
        if self.problem_type == "single_label":
            metrics = {"acc": MulticlassAccuracy(n, average="micro"), "f1": MulticlassF1Score(n, average="macro"),
                       "mcc": MulticlassMatthewsCorrCoef(n)}
        elif self.problem_type == "multi_label":
            metrics = {"f1_micro": MultilabelF1Score(n, average="micro"), "f1_macro": MultilabelF1Score(n, average="macro"),
                       "exact_match": MultilabelAccuracy(n, average="micro", multidim_average="global")}
        else:
            metrics = {"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef(), "mse": MeanSquaredError()}
        return MetricCollection(metrics, prefix=f"{stage}/")

    def forward(self, batch: Batch, net: torch.nn.Module | None = None) -> Tensor:
        logits = (net or self.net)(*self.batch_inputs(batch))
        return logits.squeeze(-1) if self.problem_type == "regression" else logits

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.problem_type == "single_label":
            return F.cross_entropy(logits, labels)
        if self.problem_type == "multi_label":
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        return F.mse_loss(logits, labels.float())

    def _targets(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if self.problem_type == "multi_label":
            return logits.detach(), labels.long()
        return logits.detach(), labels

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = self.loss(logits, batch["labels"])
        self.train_metrics.update(*self._targets(logits, batch["labels"]))
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def _eval_step(self, batch: Batch, stage: str) -> None:
        logits = self(batch, self.eval_net)
        metrics = self.metrics(stage)
        metrics.update(*self._targets(logits, batch["labels"]))
        self.log(f"{stage}/loss", self.loss(logits, batch["labels"]), sync_dist=True, batch_size=len(logits))
        self.log_dict(metrics, prog_bar=stage == "val", sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch, self.eval_net)
        if self.problem_type == "single_label":
            probs = logits.softmax(-1)
            conf, pred = probs.max(-1)
            return {"pred": pred, "confidence": conf}
        if self.problem_type == "multi_label":
            return {"pred": (logits > 0).long(), "confidence": logits.sigmoid()}
        return {"pred": logits, "confidence": torch.ones_like(logits)}

    def prediction_rows(self, output: dict[str, Tensor]) -> list[dict[str, Any]]:
        """One row per text for the prediction file."""
        rows = []
        for pred, conf in zip(output["pred"], output["confidence"]):
            if self.problem_type == "single_label":
                rows.append({"pred": int(pred), "label": self.label_names[int(pred)], "confidence": round(float(conf), 6)})
            elif self.problem_type == "multi_label":
                rows.append({"labels": [n for n, on in zip(self.label_names, pred.tolist()) if on],
                             "scores": [round(float(c), 6) for c in conf]})
            else:
                rows.append({"pred": round(float(pred), 6)})
        return rows
