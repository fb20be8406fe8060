"""Extractive question answering (SQuAD v1.1 / v2.0) as Hugging Face's ``run_qa.py``: ``[CLS] q [SEP] c [SEP]``
windows (``only_second``, overlapping by ``doc_stride``) labelled with the answer's token span or ``(0, 0)`` ([CLS]);
an example's answer is its best span over its windows, v2: ``""`` when the null score beats it by the threshold."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..metrics import squad_v1_metrics, squad_v2_metrics
from .loading import PadCollator
from .sources import SPLITS, STAGE_SPLITS, HubSpec, build_cached, json_lines, load_splits, require_columns
from .synthetic.brown_qa import GENERATED_FORMAT, QAExample, generate_brown_qa
from .text import BROWN
from .tokenizers import TextDataModule, wordpiece_tokenizer

_CACHE_FORMAT = 1
_FILE_HINT = "pass a SQuAD JSON file or JSON lines of {id, question, context}"
_SQUAD_FORMAT = ('{"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"id": ..., "question": ..., '
                 '"answers": [{"text": ..., "answer_start": ...}], "is_impossible": false}]}]}]}, or JSON lines of '
                 '{"id", "question", "context"[, "answers"]}')


def _format_error(origin: str, what: str) -> UserError:
    return UserError(f"{origin} is not in SQuAD format ({what}): expected {_SQUAD_FORMAT}")


def _example(row: Any, origin: str, context: Any = None, title: str | None = None) -> QAExample:
    """A SQuAD ``qas`` entry of ``context`` or a flat row (its own ``context``, ``title``); answers as SQuAD's
    ``[{"text", "answer_start"}]`` or Hugging Face's ``{"text": [...], "answer_start": [...]}``."""
    if not isinstance(row, Mapping):
        raise _format_error(origin, f"a question is {type(row).__name__}, not an object")
    qid, question, context = row.get("id"), row.get("question"), row.get("context") if context is None else context
    if not isinstance(qid, (str, int)) or not isinstance(question, str) or not isinstance(context, str):
        raise _format_error(origin, f"a question needs a string id, question and context, got {dict(row)!r:.200}")
    qid, answers = str(qid), row.get("answers")
    if isinstance(answers, Mapping):
        texts, starts = answers.get("text"), answers.get("answer_start")
        if isinstance(texts, list) and isinstance(starts, list) and len(texts) == len(starts):
            answers = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    answers = [] if answers is None else answers
    if not isinstance(answers, list):
        raise _format_error(origin, f"question {qid!r}: answers must be a list of {{text, answer_start}}")
    for a in answers:
        if not (isinstance(a, Mapping) and isinstance(a.get("text"), str) and isinstance(a.get("answer_start"), int)):
            raise _format_error(origin, f'question {qid!r}: an answer must be {{"text": str, "answer_start": int}}, '
                                f"got {a!r}")
    impossible = bool(row.get("is_impossible", False))  # SQuAD 2.0's "plausible_answers" are no labels
    pairs = [] if impossible else [(a["text"], a["answer_start"]) for a in answers]
    return QAExample(qid, question, context, pairs, impossible, str(row.get("title") or "") if title is None else title)


def squad_examples(data: Any, origin: str = "data") -> list[QAExample]:
    """The questions of a SQuAD JSON document (v1.1 or v2.0), in file order."""
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
        raise _format_error(origin, 'no top-level "data" list')
    out = []
    for article in data["data"]:
        if not isinstance(article, Mapping) or not isinstance(article.get("paragraphs"), list):
            raise _format_error(origin, 'an article without a "paragraphs" list')
        for p in article["paragraphs"]:
            if not (isinstance(p, Mapping) and isinstance(p.get("context"), str) and isinstance(p.get("qas"), list)):
                raise _format_error(origin, 'a paragraph without a "context" string and a "qas" list')
            out += [_example(qa, origin, p["context"], str(article.get("title", ""))) for qa in p["qas"]]
    return out


def read_squad_file(path: str | Path) -> list[QAExample]:
    """A SQuAD JSON file (v1.1 or v2.0) or JSON lines of ``{id, question, context[, answers]}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"QA file {path} does not exist: pass a SQuAD JSON file (train-v1.1.json, dev-v2.0.json, ...) "
                        "or JSON lines of {id, question, context}")
    if path.suffix != ".jsonl":
        try:
            return squad_examples(json.loads(path.read_text(encoding="utf-8")), str(path))
        except json.JSONDecodeError as e:
            if "Extra data" not in str(e):  # several JSON values: JSON lines
                raise UserError(f"{path} is not valid JSON ({e}): {_FILE_HINT}") from None
    return [_example(row, str(path)) for *_, row in json_lines(path)]


def check_examples(examples: list[QAExample], origin: str, unanswerable: bool,
                   labelled: bool = True) -> list[QAExample]:
    """``examples`` checked: unique ids; every ``answer_start`` points at its text; ``labelled``: every question has an
    answer, or is unanswerable where that is allowed (SQuAD 2.0)."""
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise UserError(f"{origin}: question id {ex.id!r} occurs twice: ids must be unique (predictions are "
                            "keyed by id)")
        seen.add(ex.id)
        for text, start in ex.answers:
            if ex.context[start : start + len(text)] != text:
                found = ex.context[max(start, 0) : max(start, 0) + len(text)]
                raise UserError(f"{origin}: question {ex.id!r}: answer {text!r} is not at answer_start {start} of its "
                                f"context (found {found!r})")
        if labelled and not ex.answers:
            if not unanswerable:
                raise UserError(f"{origin}: question {ex.id!r} has no answer: unanswerable questions need SQuAD 2.0 "
                                "mode (--data.version_2_with_negative=true)")
            ex.is_impossible = True
    return examples


def squad_json(examples: Sequence[QAExample], version: str = "") -> dict[str, Any]:
    """Examples as a SQuAD JSON document (questions grouped by title and context, in order)."""
    articles: dict[str, dict[str, list]] = {}
    for ex in examples:
        answers = [{"text": t, "answer_start": s} for t, s in ex.answers]
        qa = {"id": ex.id, "question": ex.question, "answers": answers, "is_impossible": ex.is_impossible}
        articles.setdefault(ex.title, {}).setdefault(ex.context, []).append(qa)
    data = [{"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]} for t, ps in articles.items()]
    return {"version": version, "data": data}


def check_window(max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    """A window must hold ``[CLS] q [SEP] [SEP]``, the stride and at least one new context token."""
    if max_query_length < 1 or doc_stride < 0:
        raise UserError(f"--data.max_query_length {max_query_length} must be at least 1 and --data.doc_stride "
                        f"{doc_stride} at least 0")
    room = max_seq_length - max_query_length - 3
    if doc_stride >= room:
        raise UserError(f"--data.doc_stride {doc_stride} must be below max_seq_length - max_query_length - 3 = {room} "
                        f"(max_seq_length {max_seq_length}, max_query_length {max_query_length}): each window must "
                        "move forward")


def answer_token_span(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
    """Token positions of the answer ``[start_char, end_char)`` in a window with context token ``offsets``
    (``(L, 2)``, ``-1`` elsewhere), or ``(0, 0)`` when the window does not hold all of it (as ``run_qa.py``)."""
    context = np.flatnonzero(offsets[:, 0] >= 0)
    if len(context) == 0 or end_char <= start_char:
        return 0, 0
    first, last = context[0], context[-1]
    if not (offsets[first, 0] <= start_char and offsets[last, 1] >= end_char):
        return 0, 0
    span = offsets[first : last + 1]
    start = first + int(np.searchsorted(span[:, 0], start_char, side="right")) - 1  # last token starting at or before
    end = first + int(np.searchsorted(span[:, 1], end_char, side="left"))  # first token ending at or after
    return start, end


class QAFeatures(Dataset):
    """A split's windows as flat ``arrays``; item ``i``: a dict of its ``input_ids`` (int32), ``token_type_ids``
    (int8), ``start_positions``, ``end_positions`` and ``feature_index`` ``i``."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = dict(arrays)
        self.bounds, self.ids, self.types = arrays["bounds"], arrays["input_ids"], arrays["token_type_ids"]
        self.example_index = arrays["example_index"]
        self.start_positions, self.end_positions = arrays["start_positions"], arrays["end_positions"]

    def __len__(self) -> int:
        return len(self.example_index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b = self.bounds[i], self.bounds[i + 1]
        return {"input_ids": self.ids[a:b], "token_type_ids": self.types[a:b], "feature_index": i,
                "start_positions": int(self.start_positions[i]), "end_positions": int(self.end_positions[i])}

    def offsets(self, i: int) -> np.ndarray:
        """``(L, 2)`` character offsets into the context; ``-1`` for question and special tokens."""
        return self.arrays["offsets"][self.bounds[i] : self.bounds[i + 1]]


def prepare_features(tokenizer: Tokenizer, examples: Sequence[QAExample], max_seq_length: int = 384,
                     doc_stride: int = 128, max_query_length: int = 64) -> QAFeatures:
    """``[CLS] question [SEP] context [SEP]`` windows of at most ``max_seq_length`` tokens overlapping by
    ``doc_stride`` context tokens, labelled with the first answer's span (``(0, 0)``: not in the window). Questions
    are left-stripped and cut after ``max_query_length`` tokens (as ``run_qa.py``)."""
    check_window(max_seq_length, doc_stride, max_query_length)
    plain, windowed = Tokenizer.from_str(tokenizer.to_str()), Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    windowed.no_padding()
    windowed.enable_truncation(max_seq_length, stride=doc_stride, strategy="only_second")
    windows = []
    for first in range(0, len(examples), 2048):
        batch = examples[first : first + 2048]
        questions = [ex.question.lstrip() for ex in batch]
        questions = [q[: enc.offsets[max_query_length - 1][1]] if len(enc.ids) > max_query_length else q
                     for q, enc in zip(questions, plain.encode_batch(questions, add_special_tokens=False))]
        encoded = windowed.encode_batch([*zip(questions, (ex.context for ex in batch))])
        for k, (ex, enc) in enumerate(zip(batch, encoded), first):
            answer = ex.answers[0] if ex.answers and not ex.is_impossible else None
            for w in [enc, *enc.overflowing]:
                offsets = np.asarray(w.offsets, dtype=np.int32).reshape(-1, 2)
                offsets[np.asarray([s != 1 for s in w.sequence_ids])] = -1
                span = answer_token_span(offsets, answer[1], answer[1] + len(answer[0])) if answer else (0, 0)
                windows.append((np.asarray(w.ids, np.int32), np.asarray(w.type_ids, np.int8), offsets, k, *span))
    ids, types, offsets, index, starts, ends = zip(*windows) if windows else ((),) * 6
    return QAFeatures({"bounds": np.cumsum([0, *map(len, ids)], dtype=np.int64),
                       "input_ids": np.concatenate([np.zeros(0, np.int32), *ids]),
                       "token_type_ids": np.concatenate([np.zeros(0, np.int8), *types]),
                       "offsets": np.concatenate([np.zeros((0, 2), np.int32), *offsets]),
                       **{k: np.asarray(v, np.int64) for k, v in (("example_index", index), ("start_positions", starts),
                                                                  ("end_positions", ends))}})


def _fits(path: Path, num_examples: int) -> bool:
    """Whether ``path`` holds features of at most ``num_examples`` examples (else a stale cache)."""
    if not path.is_file():
        return False
    with np.load(path) as z:
        return int(z["example_index"].max(initial=-1)) < num_examples


def _arrays(x: Any, dtype: Any) -> list[np.ndarray]:
    """A tensor or array, or a list of them (or of lists), as ``dtype`` arrays."""
    return [np.asarray(p.detach().cpu().double().numpy() if isinstance(p, Tensor) else p, dtype)
            for p in ([x] if isinstance(x, (Tensor, np.ndarray)) else x)]


def postprocess_predictions(examples: Sequence[QAExample], features: QAFeatures, feature_indices: Any,
                            start_logits: Any, end_logits: Any, version_2_with_negative: bool = False,
                            n_best_size: int = 20, max_answer_length: int = 30,
                            null_score_diff_threshold: float = 0.0) -> dict[str, str]:
    """``{example id: answer text}`` from the start and end logits of features, as Hugging Face's
    ``postprocess_qa_predictions``: the best valid pair of the ``n_best_size`` top starts and ends (in the context,
    ``start <= end``, at most ``max_answer_length`` tokens) over the example's windows; v2: ``""`` when ``null - best >
    null_score_diff_threshold``. Logits past a window (padding) are cut; a repeated feature index counts once."""
    idx = [int(i) for a in _arrays(feature_indices, np.int64) for i in a.reshape(-1)]
    starts, ends = ([r for a in _arrays(x, np.float32) for r in (a[None] if a.ndim == 1 else a)]
                    for x in (start_logits, end_logits))
    if not (len(idx) == len(starts) == len(ends)):
        raise ValueError(f"{len(idx)} feature indices but {len(starts)} start and {len(ends)} end logit rows")
    by_feature: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for f, s, e in zip(idx, starts, ends):
        if not 0 <= f < len(features):
            raise ValueError(f"feature index {f} is out of range: the split has {len(features)} features")
        by_feature.setdefault(f, (s, e))
    predictions: dict[str, str] = {}
    for e, windows in itertools.groupby(sorted(by_feature), key=lambda f: int(features.example_index[f])):
        example, best_score, best_text, null_score = examples[e], -np.inf, "", np.inf
        for f in windows:
            offsets = features.offsets(f)
            n = len(offsets)
            s_logits, e_logits = by_feature[f][0][:n], by_feature[f][1][:n]
            null_score = min(null_score, float(s_logits[0] + e_logits[0]))
            top = [np.argsort(x)[-1 : -n_best_size - 1 : -1] for x in (s_logits, e_logits)]
            si, ei = np.meshgrid(*top, indexing="ij")
            valid = (offsets[si, 0] >= 0) & (offsets[ei, 0] >= 0) & (ei >= si) & (ei - si + 1 <= max_answer_length)
            scores = np.where(valid, s_logits[si] + e_logits[ei], -np.inf)
            k = int(np.argmax(scores))  # the first of equal scores, in run_qa's order
            if scores.flat[k] > best_score:
                best_score = float(scores.flat[k])
                best_text = example.context[offsets[si.flat[k], 0] : offsets[ei.flat[k], 1]]
        if version_2_with_negative and (best_score == -np.inf or null_score - best_score > null_score_diff_threshold):
            best_text = ""
        predictions[example.id] = best_text
    return predictions


def write_predictions(predictions: Mapping[str, str], path: str | Path) -> Path:
    """``{id: answer text}`` written (atomically) as the SQuAD evaluation scripts read it; a folder (an existing one,
    or a path without a suffix, such as a run's log dir) gets ``predictions.json``. Returns the file."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "predictions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(predictions), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


class QuestionAnsweringDataModule(TextDataModule):
    """Extractive QA data (SQuAD v1.1 / v2.0) for :class:`~tfm.tasks.QuestionAnswering`: int64 ``input_ids``,
    ``token_type_ids``, ``attention_mask``, ``start_positions``, ``end_positions`` (0: [CLS], no answer in the window);
    evaluation batches add ``feature_index`` (prediction batches have no positions), for :meth:`postprocess`.

    Args:
        source: ``generated`` (span QA from the bundled Brown corpus, ``data/README.md``), ``hf:<name>[:<config>]``
            (``hf:squad``, ``hf:squad_v2``, a ``save_to_disk`` folder; test falls back to validation) or ``files``.
        train_file: training questions: SQuAD JSON (v1.1/v2.0) or JSON lines.
        validation_file: validation questions, as ``train_file``.
        test_file: test questions, as ``train_file`` (default: ``validation_file``).
        predict_file: questions to answer with ``predict``: SQuAD JSON or JSON lines of ``{id, question, context}``.
        version_2_with_negative: SQuAD 2.0: unanswerable questions (labelled [CLS]), null-score post-processing
            and v2 metrics; the generated set adds one unanswerable question per context.
        tokenizer: a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding one (default: trained, cached).
        vocab_size: size of the vocabulary to train.
        lowercase: lower-case (uncased) vocabulary to train; a loaded one keeps its own.
        max_seq_length: tokens per window (special tokens included).
        doc_stride: context tokens shared by consecutive windows of a long context.
        max_query_length: question tokens kept.
        max_answer_length: longest predicted answer, in tokens.
        n_best_size: start and end candidates per window.
        null_score_diff_threshold: v2: predict no answer when ``null - best`` exceeds it.
        split_seed: seed of the generated set (questions and document split).
        **kwargs: ``cache_dir``, ``pad_to_multiple_of`` (:class:`~tfm.data.tokenizers.TextDataModule`), ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``seed`` (:class:`~tfm.data.loading.ResumableDataModule`).
    """

    def __init__(self, source: str = "generated", train_file: str | None = None, validation_file: str | None = None,
                 test_file: str | None = None, predict_file: str | None = None, version_2_with_negative: bool = False,
                 tokenizer: str | None = None, vocab_size: int = 8192, lowercase: bool = True,
                 max_seq_length: int = 384, doc_stride: int = 128, max_query_length: int = 64,
                 max_answer_length: int = 30, n_best_size: int = 20, null_score_diff_threshold: float = 0.0,
                 split_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_window(max_seq_length, doc_stride, max_query_length)
        if max_answer_length < 1 or n_best_size < 1:
            raise UserError(f"--data.max_answer_length {max_answer_length} and --data.n_best_size {n_best_size} "
                            "must be at least 1")
        files = {"train": train_file, "validation": validation_file, "test": test_file or validation_file}
        if any(files.values()) and source not in ("generated", "files"):
            raise UserError(f"--data.source {source!r} and --data.train_file/validation_file/test_file both name the "
                            "data: pass one (source files with files)")
        source = "files" if any(files.values()) else source
        if source == "files" and not any(files.values()):
            raise UserError("--data.source files needs --data.train_file and/or --data.validation_file (SQuAD JSON)")
        if source not in ("generated", "files") and not source.startswith("hf:"):
            raise UserError(f"--data.source {source!r} is not a QA source: use generated, hf:<name>[:<config>] "
                            "(hf:squad, hf:squad_v2) or --data.train_file/validation_file")
        if source.startswith("hf:"):
            HubSpec.parse(source, example="hf:squad_v2")
        for split, path in {**files, "test": test_file, "predict": predict_file}.items():
            if path is not None and not Path(path).expanduser().is_file():
                raise UserError(f"--data.{split}_file {path} does not exist: {_FILE_HINT}")
        if tokenizer is not None and not Path(tokenizer).expanduser().exists():
            raise UserError(f"--data.tokenizer {tokenizer} does not exist: pass a tokenizer.json, a vocab.txt or a "
                            "folder holding one")
        self.source, self.files = source, {**files, "predict": predict_file}
        self.version_2_with_negative = version_2_with_negative
        self.tokenizer_path, self.vocab_size, self.lowercase = tokenizer, vocab_size, lowercase
        self.max_seq_length, self.doc_stride, self.max_query_length = max_seq_length, doc_stride, max_query_length
        self.max_answer_length, self.n_best_size = max_answer_length, n_best_size
        self.null_score_diff_threshold, self.split_seed = null_score_diff_threshold, split_seed
        self._examples: dict[str, list[QAExample]] = {}
        self._features: dict[str, QAFeatures] = {}
        self._hub: Any = None  # the DatasetDict of an hf: source

    def _file(self, split: str) -> str | None:
        """The file a split is read from (None: generated or hub)."""
        return self.files[split] if split == "predict" or self.source == "files" else None

    def _source_key(self, split: str) -> str:
        """What identifies a split's examples for caches (cheap: reads no text)."""
        if (path := self._file(split)) is not None:
            st = Path(path).expanduser().stat()
            return f"file:{Path(path).expanduser().resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return f"{self.generated_path.name}|{split}" if self.source == "generated" else f"{self.source}|{split}"

    def has_split(self, split: str) -> bool:
        """Whether the source gives examples for ``split`` (``train``/``validation``/``test``/``predict``)."""
        return self._file(split) is not None or (self.source != "files" and split != "predict")

    def examples(self, split: str) -> list[QAExample]:
        """A split's examples (read and checked once)."""
        if split in self._examples:
            return self._examples[split]
        if split not in self.files:
            raise ValueError(f"unknown split {split!r}: one of {', '.join(self.files)}")
        if (path := self._file(split)) is None and split == "predict":
            raise UserError("predict needs --data.predict_file: a SQuAD JSON file or JSON lines of {id, question, "
                            "context}")
        if path is None and self.source == "files":
            flag = "--data.train_file" if split == "train" else "--data.validation_file"
            raise UserError(f"no {split} data: pass {flag} (a SQuAD JSON file)")
        if path is None and self.source == "generated":
            self._examples = {**self.generated(), **self._examples}
            return self._examples[split]
        origin = str(path) if path is not None else f"{self.source}[{split}]"
        examples = read_squad_file(path) if path is not None else self._hub_examples(split, origin)
        self._examples[split] = check_examples(examples, origin, self.version_2_with_negative, split != "predict")
        return examples

    def _hub_examples(self, split: str, origin: str) -> list[QAExample]:
        """A split of the ``hf:`` source (test: validation when it has none)."""
        if self._hub is None:
            self._hub = load_splits(HubSpec.parse(self.source, example="hf:squad_v2"))
        name = "validation" if split == "test" and "test" not in self._hub else split
        if name not in self._hub:
            raise UserError(f"the dataset {self.source} has no {split} split (it has {', '.join(self._hub)})")
        require_columns(self._hub[name].column_names, dict.fromkeys(("id", "question", "context", "answers")),
                        self.source, f" in its {name} split")
        return [_example(row, origin) for row in self._hub[name]]

    @property
    def generated_path(self) -> Path:
        """The cached generated set: ``{split: SQuAD JSON}`` for this seed and version."""
        st, v2 = BROWN.stat(), self.version_2_with_negative
        key = hashlib.sha256(json.dumps([GENERATED_FORMAT, str(BROWN), st.st_size, st.st_mtime_ns, self.split_seed, v2])
                             .encode()).hexdigest()[:16]
        return self.cache_dir / "qa" / f"generated-brown-{'v2' if v2 else 'v1'}-{self.split_seed}-{key}.json"

    def generated(self) -> dict[str, list[QAExample]]:
        """The generated set (:func:`~tfm.data.synthetic.brown_qa.generate_brown_qa`), cached as SQuAD JSON."""
        path, v2 = self.generated_path, self.version_2_with_negative

        def generate(tmp: Path) -> None:
            version = f"tfm-brown-qa-{GENERATED_FORMAT}-{'v2' if v2 else 'v1'}"
            data = {split: squad_json(made, version) for split, made in generate_brown_qa(self.split_seed, v2).items()}
            tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

        data = json.loads(build_cached(path, generate).read_text(encoding="utf-8"))
        return {split: squad_examples(data[split], f"{path}[{split}]") for split in SPLITS}

    def train_tokenizer(self) -> Tokenizer:
        """A WordPiece vocabulary trained (once, then cached) on the training contexts and questions."""
        if not self.has_split("train"):
            raise UserError("no training data to train a tokenizer on: pass --data.tokenizer (e.g. the run's or a BERT "
                            "folder) or --data.train_file")

        def texts() -> Iterable[str]:
            examples = self.examples("train")
            yield from dict.fromkeys(ex.context for ex in examples)
            yield from (ex.question for ex in examples)

        return wordpiece_tokenizer(texts, f"qa|{self._source_key('train')}", vocab_size=self.vocab_size,
                                   lowercase=self.lowercase, cache_dir=self.cache_dir / "tokenizers")

    def features(self, split: str) -> QAFeatures:
        """A split's windows, built once per tokenizer, source and window settings (by the first DDP rank) and cached
        in ``cache_dir/qa``."""
        if split not in self._features:
            examples, window = self.examples(split), [self.max_seq_length, self.doc_stride, self.max_query_length]
            tokenizer = hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()
            settings = {"format": _CACHE_FORMAT, "tokenizer": tokenizer, "source": self._source_key(split),
                        "window": window}
            key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

            def build(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, **prepare_features(self.tokenizer, examples, *window).arrays)

            path = self.cache_dir / "qa" / f"{split}-{self.max_seq_length}-{key}.npz"
            with np.load(build_cached(path, build, lambda p: _fits(p, len(examples)))) as z:
                self._features[split] = QAFeatures({k: z[k] for k in z.files})
        return self._features[split]

    def prepare_data(self) -> None:
        _ = self.tokenizer  # trains and caches it once, before DDP ranks start

    def setup(self, stage: str) -> None:
        if stage == "fit" and not self.has_split("train"):
            raise UserError("fit needs training data: pass --data.train_file (or use --data.source generated / hf:...)")
        for split in filter(self.has_split, STAGE_SPLITS.get(stage, ())):
            self.features(split)

    def collator(self, positions: bool = True, index: bool = False) -> PadCollator:
        """Pads ``input_ids`` and ``token_type_ids``; stacks the positions and/or ``feature_index``."""
        stack = [*(["start_positions", "end_positions"] if positions else []), *(["feature_index"] if index else [])]
        return PadCollator({"input_ids": self.pad_token_id, "token_type_ids": 0}, stack, self.pad_to_multiple_of,
                           self.max_seq_length)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.features("train"), self.collator(), collate=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_split("validation"):
            return []  # files without --data.validation_file: no validation
        return self.eval_loader(self.features("validation"), self.collator(index=True), collate=True)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.features("test"), self.collator(index=True), collate=True)

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader(self.features("predict"), self.collator(positions=False, index=True), collate=True)

    def postprocess(self, feature_indices: Any, start_logits: Any, end_logits: Any,
                    split: str = "validation") -> dict[str, str]:
        """``{example id: answer}`` from the batches' ``feature_index`` and start / end logits (``(N, T)``, or lists of
        ``(B, T)`` batches or ``(T,)`` rows; positions past a window are ignored): :func:`postprocess_predictions`."""
        return postprocess_predictions(self.examples(split), self.features(split), feature_indices, start_logits,
                                       end_logits, self.version_2_with_negative, self.n_best_size,
                                       self.max_answer_length, self.null_score_diff_threshold)

    def evaluate(self, predictions: Mapping[str, str], split: str = "validation",
                 only_predicted: bool = False) -> dict[str, float]:
        """Scores in percent (an unpredicted question scores 0; ``only_predicted``: only the predicted ones count):
        SQuAD 1.1 ``exact_match`` and ``f1``, 2.0 the official v2 keys (``exact``, ``f1``, ``HasAns_*`` ...)."""
        refs = [{"id": ex.id, "answers": {"text": [t for t, _ in ex.answers],
                                           "answer_start": [s for _, s in ex.answers]}}
                for ex in self.examples(split) if not only_predicted or ex.id in predictions]
        return (squad_v2_metrics if self.version_2_with_negative else squad_v1_metrics)(predictions, refs)

    write_predictions = staticmethod(write_predictions)
