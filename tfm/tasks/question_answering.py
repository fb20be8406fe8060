"""QuestionAnswering: extractive QA (SQuAD v1.1 / v2.0) with start/end logits per token."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.bert import BertForQuestionAnswering
from .bert import BertFinetuneTask

Batch = dict[str, Tensor]


class QuestionAnswering(BertFinetuneTask):
    """BERT for extractive QA: start and end logits over the tokens of each window of a context.

    Training: the mean of the start and end cross-entropies (an answer outside the window, or
    none, points at [CLS]). Evaluation: the logits of every window are gathered (over DDP ranks
    too) and the DataModule's ``postprocess`` turns them into one answer per question (n-best
    spans across windows, no-answer score for v2), then ``evaluate`` gives exact match and F1
    (and the has-answer / no-answer split for v2).

    Args:
        **kwargs: the backbone and optimisation settings of
            :class:`~tfm.tasks.bert.BertFinetuneTask` (``arch``, ``init_from``, ``lr`` ...).
    """

    monitor = ("val/f1", "max")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = BertForQuestionAnswering(self.build_bert())
        self._outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self.predictions: dict[str, str] = {}

    def forward(self, batch: Batch, net: torch.nn.Module | None = None) -> tuple[Tensor, Tensor]:
        return (net or self.net)(*self.batch_inputs(batch))

    @staticmethod
    def loss(start: Tensor, end: Tensor, batch: Batch) -> Tensor:
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        start, end = self(batch)
        loss = self.loss(start, end, batch)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    # --- evaluation: logits per window, answers per question at the end ---------------------------
    def _collect(self, batch: Batch) -> tuple[Tensor, Tensor]:
        start, end = self(batch, self.eval_net)
        width = self.net.bert.embeddings.positions.num_embeddings  # the longest window the model takes
        pad = width - start.shape[1]  # windows padded to one width, so that ranks can be gathered
        start, end = F.pad(start, (0, pad), value=-1e4), F.pad(end, (0, pad), value=-1e4)
        self._outputs.append((batch["feature_index"], start.float(), end.float()))
        return start, end

    def _eval_step(self, batch: Batch, stage: str) -> None:
        start, end = self._collect(batch)
        if "start_positions" in batch:
            n = start.shape[1]
            targets = {k: batch[k].clamp(max=n - 1) for k in ("start_positions", "end_positions")}
            self.log(f"{stage}/loss", self.loss(start, end, targets), sync_dist=True, batch_size=len(start))

    def _answers(self, split: str) -> dict[str, str]:
        if not self._outputs:
            return {}
        index = torch.cat([o[0] for o in self._outputs])
        start = torch.cat([o[1] for o in self._outputs])
        end = torch.cat([o[2] for o in self._outputs])
        self._outputs = []
        if self.trainer.world_size > 1:  # every rank holds its shard (padded with repeats): gather all
            index, start, end = (self.all_gather(t).flatten(0, 1) for t in (index, start, end))
        # the DataModule holds the examples, windows and offsets; the task hands it the logits
        return self.trainer.datamodule.postprocess(index.cpu(), start.cpu(), end.cpu(), split)

    def _evaluate(self, split: str, stage: str) -> None:
        answers = self._answers(split)
        # with --trainer.limit_{val,test}_batches only the questions seen are scored
        limit = self.trainer.limit_val_batches if stage == "val" else self.trainer.limit_test_batches
        metrics = self.trainer.datamodule.evaluate(answers, split, only_predicted=limit not in (1.0, None))
        self.log_dict({f"{stage}/{k}": float(v) for k, v in metrics.items()}, prog_bar=stage == "val", rank_zero_only=False)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._evaluate("validation", "val")
        self._outputs = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._evaluate("test", "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> None:
        self._collect(batch)

    def on_predict_epoch_end(self) -> None:
        self.predictions = self._answers("predict")
        self.trainer.datamodule.write_predictions(self.predictions, self.trainer.log_dir)
