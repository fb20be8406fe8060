"""Metrics that torchmetrics lacks: entity-level precision, recall and F1 for BIO tagging, and the
official SQuAD 2.0 scores (:func:`squad_v2_metrics`, :class:`SQuADv2`; SQuAD 1.1: :func:`squad_v1_metrics`).

:func:`entity_f1` scores lists of tag sequences as seqeval does in its default mode (conlleval
semantics): an entity is a maximal chunk of one type; ``I-X`` after ``O`` or after another type
starts a new entity as ``B-X`` would; an entity counts as found only when its type, first and
last word all match. :func:`get_entities` is seqeval's ``get_entities`` (IOB1/IOB2, and IOBES
prefixes ``E-``/``S-``), written here so that tfm needs no extra dependency.

:class:`EntityF1` is the torchmetrics form for a task: it takes ``(preds, labels)`` batches of
tag ids, keeps only the positions where ``labels != -100`` (the first sub-token of each word, see
:mod:`tfm.data.tagging`), and syncs over DDP by concatenation.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import sacrebleu
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.text import rouge_score, squad
from torchmetrics.utilities import dim_zero_cat

Entity = tuple[str, int, int]  # type, first position, last position (inclusive)


def _split(tag: str) -> tuple[str, str]:
    """``(prefix, type)`` of a tag: ``B-PER`` -> ``("B", "PER")``, ``O`` -> ``("O", "")``."""
    return tag[:1], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def get_entities(seq: Sequence[str] | Sequence[Sequence[str]]) -> list[Entity]:
    """The entities of a tag sequence as ``(type, first, last)`` (positions inclusive); a list of
    sequences is joined with an ``O`` between them, so positions run over the whole list.

    >>> get_entities(["B-PER", "I-PER", "O", "B-LOC"])
    [('PER', 0, 1), ('LOC', 3, 3)]
    """
    if any(isinstance(s, (list, tuple)) for s in seq):
        seq = [tag for sentence in seq for tag in [*sentence, "O"]]  # type: ignore[union-attr]
    prev_tag, prev_type, begin = "O", "", 0
    chunks: list[Entity] = []
    for i, chunk in enumerate([*seq, "O"]):  # type: ignore[misc]
        tag, type_ = _split(chunk)  # type: ignore[arg-type]
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _scores(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_f1(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity ``precision``, ``recall`` and ``f1`` over all sentences, as seqeval's
    ``precision_score`` / ``recall_score`` / ``f1_score`` in their default mode (0 where a ratio
    has no denominator). Each predicted sentence must be as long as its true one."""
    if len(true_seqs) != len(pred_seqs):
        raise ValueError(f"{len(true_seqs)} true sequences but {len(pred_seqs)} predicted ones")
    for i, (t, p) in enumerate(zip(true_seqs, pred_seqs)):
        if len(t) != len(p):
            raise ValueError(f"sequence {i}: {len(t)} true tags but {len(p)} predicted ones")
    true = set(get_entities([list(s) for s in true_seqs]))
    pred = set(get_entities([list(s) for s in pred_seqs]))
    return _scores(len(true & pred), len(pred), len(true))


class EntityF1(Metric):
    """Entity-level precision, recall and F1 (:func:`entity_f1`) of a token-tagging model.

    ``update(preds, labels)``: ``preds`` are tag ids ``(B, T)`` or logits ``(B, T, C)``;
    ``labels`` are ``(B, T)`` tag ids with -100 where not scored. The scored positions of each
    row, in order, form that sentence's word sequence. ``compute()`` returns a dict of
    ``precision``, ``recall`` and ``f1`` tensors. The states (tag ids and sequence lengths) are
    concatenated over DDP ranks, so the score is that of the whole evaluation set.

    Args:
        label_names: the tag of each id (``B-PER``, ``I-PER``, ``O``, ...).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, label_names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        self.add_state("pred_ids", default=[], dist_reduce_fx="cat")
        self.add_state("true_ids", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, labels: Tensor) -> None:
        if preds.dim() == labels.dim() + 1:
            preds = preds.argmax(-1)
        if preds.shape != labels.shape:
            raise ValueError(f"preds of shape {tuple(preds.shape)} do not match labels of shape {tuple(labels.shape)}")
        scored = labels != -100
        self.pred_ids.append(preds[scored].detach().to(torch.int32))
        self.true_ids.append(labels[scored].detach().to(torch.int32))
        self.lengths.append(scored.sum(-1).reshape(-1).to(torch.int32))

    def sequences(self) -> tuple[list[list[str]], list[list[str]]]:
        """The accumulated ``(true, predicted)`` tag sequences, one per sentence."""
        if isinstance(self.lengths, list) and not self.lengths:  # nothing seen (synced states are tensors)
            return [], []
        lengths = dim_zero_cat(self.lengths).tolist()
        names = self.label_names

        def split(ids: Tensor) -> list[list[str]]:
            flat = [names[i] for i in ids.tolist()]
            out, start = [], 0
            for n in lengths:
                out.append(flat[start : start + n])
                start += n
            return out

        return split(dim_zero_cat(self.true_ids)), split(dim_zero_cat(self.pred_ids))

    def compute(self) -> dict[str, Tensor]:
        true, pred = self.sequences()
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in entity_f1(true, pred).items()}


# --- SQuAD ------------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace (official SQuAD)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _f1(gold: str, pred: str) -> float:
    g, p = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not g or not p:
        return float(g == p)
    same = sum((collections.Counter(g) & collections.Counter(p)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _gold_texts(answers: Any) -> list[str]:
    """Answer texts from ``{"text": [...]}``, ``[{"text": ...}]``, ``(text, start)`` pairs or strings."""
    if isinstance(answers, Mapping):
        answers = answers.get("text", [])
    return [a["text"] if isinstance(a, Mapping) else a[0] if isinstance(a, tuple) else a for a in answers]


def _as_dict(predictions: Any) -> dict[str, str]:
    if isinstance(predictions, Mapping):
        return {str(k): v for k, v in predictions.items()}
    return {str(p["id"]): p["prediction_text"] for p in predictions}


Scores = tuple[list[float], list[float], list[bool]]


def squad_v2_scores(predictions: Any, references: Sequence[Mapping[str, Any]]) -> Scores:
    """Per reference: exact match, F1 (in [0, 1]) and whether it has an answer, as the official
    ``evaluate-v2.0.py`` (gold answers that normalise to nothing are dropped, none left: ``[""]``; the best gold
    answer counts); a missing prediction scores 0."""
    preds = _as_dict(predictions)
    exact, f1, has = [], [], []
    for ref in references:
        gold = [a for a in _gold_texts(ref["answers"]) if normalize_answer(a)] or [""]
        has.append(gold != [""])
        pred = preds.get(str(ref["id"]))
        exact.append(0.0 if pred is None else float(max(normalize_answer(a) == normalize_answer(pred) for a in gold)))
        f1.append(0.0 if pred is None else max(_f1(a, pred) for a in gold))
    return exact, f1, has


def squad_v2_metrics(predictions: Any, references: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """SQuAD 2.0 ``exact``, ``f1``, ``total`` and their ``HasAns_``/``NoAns_`` forms, in percent (a group
    without questions left out, as the official script). ``predictions``: ``{id: text}`` or
    ``[{"id", "prediction_text"}]``; ``references``: ``[{"id", "answers"}]`` (no answer: empty)."""
    exact, f1, has = squad_v2_scores(predictions, references)
    out: dict[str, float] = {}
    for prefix, keep in (("", [True] * len(exact)), ("HasAns_", has), ("NoAns_", [not h for h in has])):
        if n := sum(keep):
            out[f"{prefix}exact"] = 100.0 * sum(x for x, k in zip(exact, keep) if k) / n
            out[f"{prefix}f1"] = 100.0 * sum(x for x, k in zip(f1, keep) if k) / n
            out[f"{prefix}total"] = float(n)
    return out


def squad_v1_metrics(predictions: Any, references: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """SQuAD 1.1 ``exact_match`` and ``f1`` in percent, by torchmetrics' ``SQuAD`` (the official v1.1
    script); a missing prediction scores 0."""
    preds = _as_dict(predictions)
    present = [r for r in references if str(r["id"]) in preds]
    if not present:
        return {"exact_match": 0.0, "f1": 0.0}
    target = [{"id": str(r["id"]), "answers": {"text": _gold_texts(r["answers"])}} for r in present]
    scores = squad([{"id": t["id"], "prediction_text": preds[t["id"]]} for t in target], target)
    share = len(present) / len(references)
    return {k: float(v) * share for k, v in scores.items()}


class SQuADv2(Metric):
    """torchmetrics' ``SQuAD`` for SQuAD 2.0: the same inputs, summed states (DDP-safe), and the official v2
    scores of :func:`squad_v2_metrics` (percent)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("exact", "f1", "total", "has_exact", "has_f1", "has_total"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Any, target: Any) -> None:
        target = [target] if isinstance(target, Mapping) else target
        preds = [preds] if isinstance(preds, Mapping) and "prediction_text" in preds else preds
        exact, f1, has = squad_v2_scores(preds, target)
        self.exact += sum(exact)
        self.f1 += sum(f1)
        self.total += len(exact)
        self.has_exact += sum(x for x, h in zip(exact, has) if h)
        self.has_f1 += sum(x for x, h in zip(f1, has) if h)
        self.has_total += sum(has)

    def compute(self) -> dict[str, Tensor]:
        no_total = self.total - self.has_total
        out = {"exact": 100 * self.exact / self.total, "f1": 100 * self.f1 / self.total}
        if self.has_total > 0:
            out.update(HasAns_exact=100 * self.has_exact / self.has_total, HasAns_f1=100 * self.has_f1 / self.has_total)
        if no_total > 0:
            out.update(NoAns_exact=100 * (self.exact - self.has_exact) / no_total,
                       NoAns_f1=100 * (self.f1 - self.has_f1) / no_total)
        return {k: v.float() for k, v in out.items()}


def translation_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus-level scores of detokenised translations: sacreBLEU (``13a``), chrF and ROUGE-L (F-measure)."""
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a")
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    rouge = rouge_score(hypotheses, references, rouge_keys="rougeL")["rougeL_fmeasure"]
    return {"bleu": bleu.score, "chrf": chrf.score, "rougeL": float(rouge)}
