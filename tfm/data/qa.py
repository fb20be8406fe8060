"""Extractive question answering (SQuAD v1.1 and v2.0): readers, a generated span-QA set built
from the Brown corpus, windowed features, post-processing of start/end logits, metrics and the
DataModule.

The features and the post-processing follow Hugging Face's ``run_qa.py`` and
``postprocess_qa_predictions``: question and context are tokenized as ``[CLS] q [SEP] c [SEP]``
with truncation ``only_second``; a context longer than a window overflows into several windows
that overlap by ``doc_stride`` tokens; each window keeps the character offsets of its context
tokens (``-1`` for the question and special tokens); a training window's label is the token span
of the answer, or ``(0, 0)`` (``[CLS]``) when the answer is not wholly inside it or there is none.
Predictions take the best span over all windows of an example; with ``version_2_with_negative``
an example's null score is the lowest ``start[CLS] + end[CLS]`` of its windows and the answer is
``""`` when ``null - best > null_score_diff_threshold``.

The generated set (the default source) is described in ``data/README.md``; :func:`generate_brown_qa`
builds it.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import random
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchmetrics import Metric

from ..errors import UserError
from .loading import PadCollator, mix_seed
from .sources import HubSpec, build_cached, load_splits
from .text import BROWN, BrownDocument, detokenize, read_brown
from .tokenizers import TextDataModule, cache_root, wordpiece_tokenizer

SPLITS = ("train", "validation", "test")
GENERATED_FORMAT = 1  # bump when the generated set would come out differently for the same seed
_CACHE_FORMAT = 1


# --- examples ---------------------------------------------------------------------------------------
@dataclass
class QAExample:
    """One question about one context; ``answers`` are ``(text, answer_start)`` pairs (the first
    one labels training features; all count for evaluation); an unanswerable (v2) question has
    none and ``is_impossible``."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)
    is_impossible: bool = False
    title: str = ""


def _format_error(origin: str, what: str) -> UserError:
    return UserError(
        f"{origin} is not in SQuAD format ({what}): expected "
        '{"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"id": ..., "question": ..., '
        '"answers": [{"text": ..., "answer_start": ...}], "is_impossible": false}]}]}]}'
        ", or JSON lines of {\"id\", \"question\", \"context\"[, \"answers\"]}"
    )


def _answers(raw: Any, origin: str, qid: str) -> list[tuple[str, int]]:
    """SQuAD's ``[{"text", "answer_start"}]`` or Hugging Face's ``{"text": [], "answer_start": []}``."""
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        texts, starts = raw.get("text"), raw.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise _format_error(origin, f"question {qid!r}: answers must be a list of {{text, answer_start}}")
        raw = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    if not isinstance(raw, list):
        raise _format_error(origin, f"question {qid!r}: answers must be a list of {{text, answer_start}}")
    out = []
    for a in raw:
        if not isinstance(a, Mapping) or not isinstance(a.get("text"), str) or not isinstance(a.get("answer_start"), int):
            raise _format_error(origin, f"question {qid!r}: an answer must be {{\"text\": str, \"answer_start\": int}}, got {a!r}")
        out.append((a["text"], a["answer_start"]))
    return out


def _example(row: Mapping[str, Any], context: Any, origin: str, title: str = "") -> QAExample:
    qid, question = row.get("id"), row.get("question")
    if not isinstance(qid, (str, int)) or not isinstance(question, str) or not isinstance(context, str):
        raise _format_error(origin, f"a question needs a string id, question and context, got {dict(row)!r:.200}")
    qid = str(qid)
    answers = _answers(row.get("answers"), origin, qid)
    impossible = bool(row.get("is_impossible", False))
    if impossible:
        answers = []  # SQuAD 2.0 keeps "plausible_answers" apart; a stray answer would be a label
    return QAExample(qid, question, context, answers, impossible, title)


def squad_examples(data: Any, origin: str = "data") -> list[QAExample]:
    """The questions of a SQuAD JSON document (v1.1 or v2.0), in file order."""
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
        raise _format_error(origin, 'no top-level "data" list')
    out = []
    for article in data["data"]:
        if not isinstance(article, Mapping) or not isinstance(article.get("paragraphs"), list):
            raise _format_error(origin, 'an article without a "paragraphs" list')
        title = str(article.get("title", ""))
        for paragraph in article["paragraphs"]:
            if not isinstance(paragraph, Mapping) or not isinstance(paragraph.get("context"), str) or not isinstance(paragraph.get("qas"), list):
                raise _format_error(origin, 'a paragraph without a "context" string and a "qas" list')
            for qa in paragraph["qas"]:
                if not isinstance(qa, Mapping):
                    raise _format_error(origin, f"a question is {type(qa).__name__}, not an object")
                out.append(_example(qa, paragraph["context"], origin, title))
    return out


def row_examples(rows: Iterable[Mapping[str, Any]], origin: str = "rows") -> list[QAExample]:
    """Examples from flat rows (JSON lines, a Hugging Face ``squad``/``squad_v2`` split): ``id``,
    ``question``, ``context`` and optional ``answers`` (either answer format), ``title``,
    ``is_impossible`` (default: no answers given)."""
    out = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise _format_error(origin, f"a row is {type(row).__name__}, not an object")
        out.append(_example(row, row.get("context"), origin, str(row.get("title") or "")))
    return out


def read_squad_file(path: str | Path) -> list[QAExample]:
    """A SQuAD JSON file (v1.1 or v2.0) or JSON lines of ``{id, question, context[, answers]}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"QA file {path} does not exist: pass a SQuAD JSON file (train-v1.1.json, dev-v2.0.json, ...) or JSON lines of {{id, question, context}}")
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        try:
            return squad_examples(json.loads(text), str(path))
        except json.JSONDecodeError as e:
            if "Extra data" not in str(e):  # several JSON values: JSON lines
                raise UserError(f"{path} is not valid JSON ({e}): pass a SQuAD JSON file or JSON lines of {{id, question, context}}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {n} is not JSON ({e}): pass a SQuAD JSON file or JSON lines of {{id, question, context}}") from None
    return row_examples(rows, str(path))


def read_hf_squad(spec: str) -> dict[str, list[QAExample]]:
    """The splits of a Hugging Face SQuAD-format dataset (``hf:squad``, ``hf:squad_v2``, or
    ``hf:<a save_to_disk folder>``), as examples."""
    ds = load_splits(HubSpec.parse(spec, example="hf:squad_v2"))
    missing = {"id", "question", "context", "answers"} - set(next(iter(ds.values())).column_names)
    if missing:
        raise UserError(f"dataset {spec!r} is not in SQuAD format: it has no column {', '.join(sorted(missing))}")
    return {split: row_examples(d, f"{spec}[{split}]") for split, d in ds.items()}


def check_examples(examples: Sequence[QAExample], origin: str, version_2_with_negative: bool, labelled: bool = True) -> None:
    """Unique ids; every answer's ``answer_start`` points at its text; unanswerable questions
    only with ``version_2_with_negative``; ``labelled``: every answerable question has an answer."""
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise UserError(f"{origin}: question id {ex.id!r} occurs twice: ids must be unique (predictions are keyed by id)")
        seen.add(ex.id)
        for text, start in ex.answers:
            if ex.context[start : start + len(text)] != text:
                found = ex.context[max(start, 0) : max(start, 0) + len(text)]
                raise UserError(f"{origin}: question {ex.id!r}: answer {text!r} is not at answer_start {start} of its context (found {found!r})")
        if labelled and not ex.answers:
            if not version_2_with_negative:
                raise UserError(
                    f"{origin}: question {ex.id!r} has no answer: unanswerable questions need SQuAD 2.0 mode (--data.version_2_with_negative=true)"
                )
            ex.is_impossible = True


def squad_json(examples: Sequence[QAExample], version: str = "") -> dict[str, Any]:
    """Examples as a SQuAD JSON document (questions grouped by title and context, in order)."""
    articles: dict[str, dict[str, list]] = {}
    for ex in examples:
        paragraphs = articles.setdefault(ex.title, {})
        qa: dict[str, Any] = {"id": ex.id, "question": ex.question, "answers": [{"text": t, "answer_start": s} for t, s in ex.answers]}
        qa["is_impossible"] = ex.is_impossible
        paragraphs.setdefault(ex.context, []).append(qa)
    return {
        "version": version,
        "data": [{"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]} for t, ps in articles.items()],
    }


# --- the generated set: template questions about tagged spans of the Brown corpus --------------------
_TITLES = {"Mr.", "Mrs.", "Miss", "Ms.", "Dr.", "Gov.", "Sen.", "Rep.", "Gen.", "Col.", "Capt.", "Lt.", "Prof.", "Rev.", "Jr.", "Sr.", "St."}
_MONTHS = {
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December",
    "Jan.", "Feb.", "Mar.", "Apr.", "Aug.", "Sept.", "Sep.", "Oct.", "Nov.", "Dec.",
}
_WEEKDAYS = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
_PLACE_PREPOSITIONS = {"in", "at", "near", "from"}
_YEAR = re.compile(r"(1[5-9]|20)\d\d")
_QUOTES = {"``", "''", "`", "'"}
_VERB = re.compile(r"(vb[dz]?|bed[z]?|bez|ber|hv[dz]|md|dod|doz)(\*)?$")


@functools.cache
def _base(tag: str) -> str:
    """A Brown tag without its ``-tl``/``-hl``/``-nc`` marks and contractions: ``np$-tl`` -> ``np$``."""
    return re.split(r"[-+]", tag, maxsplit=1)[0] if tag not in ("--", "-") else tag


_NAME_TAGS = ("np", "nps", "np$", "nps$")
_FUNCTION_TAGS = ("in", "at", "cc", "cs", "to", "wdt", "wps", "wrb", "ppss", "pps", ",", "--", "(", ":", "``", "''")


def _is_name(word: str, tag: str) -> bool:
    """A proper noun, or a capitalised word of a title (``County/nn-tl``)."""
    base = _base(tag)
    return base in _NAME_TAGS or ("-tl" in tag and word[:1].isupper() and base not in ("cd", "od", "in", "at", "cc", "to"))


@dataclass
class _Span:
    """A candidate answer in a tagged sentence: tokens ``[start, end)`` hold the answer, tokens
    ``[cut, end)`` are replaced by ``wh`` in the question; ``strip`` characters come off the
    answer's end (a possessive ``'s``); ``kind`` names the template."""

    start: int
    end: int
    cut: int
    wh: list[str]
    kind: str
    strip: int = 0


def _span_candidates(sent: Sequence[tuple[str, str]]) -> list[_Span]:
    """The answer spans a sentence offers: names (who / whom / whose / where / what), dates
    (when / what date), weekdays (what day), years (what year), numbers (how many + plural
    noun / what number)."""
    words = [w for w, _ in sent]
    tags = [t for _, t in sent]
    bases = [_base(t) for t in tags]
    out: list[_Span] = []
    n = len(sent)

    def before(i: int) -> str:
        return words[i - 1] if i > 0 and bases[i - 1] == "in" else ""

    i = 0
    while i < n:
        w, t, base = words[i], tags[i], bases[i]
        if w in _MONTHS and base == "np":  # a date: month [day] [, year]
            j = i + 1
            if j < n and bases[j] == "cd" and words[j].isdigit():
                j += 1
                if j + 1 < n and words[j] == "," and _YEAR.fullmatch(words[j + 1]):
                    j += 2
            prep = before(i)
            if prep in ("on", "in"):
                out.append(_Span(i, j, i - 1, ["when"], "date"))
            else:
                out.append(_Span(i, j, i, ["what", "date"], "date"))
            i = j
            continue
        if w in _WEEKDAYS and base == "nr":
            on = before(i) == "on"
            out.append(_Span(i, i + 1, i - 1 if on else i, ["on", "what", "day"] if on else ["what", "day"], "day"))
            i += 1
            continue
        if base == "cd":
            j = i
            while j < n and bases[j] == "cd":
                j += 1
            nxt = bases[j] if j < n else ""
            titled = any("-tl" in tags[k] for k in range(max(i - 1, 0), min(j + 1, n)))  # "World War 2", "Route 66"
            if titled or not all(any(c.isalnum() for c in x) for x in words[i:j]):
                pass
            elif j - i == 1 and _YEAR.fullmatch(w) and nxt not in ("nns", "nn"):
                prep = before(i)
                if prep in ("in", "since", "until", "by", "of", "from", "before", "after"):
                    out.append(_Span(i, j, i - 1, [prep, "what", "year"], "year"))
                else:
                    out.append(_Span(i, j, i, ["what", "year"], "year"))
            elif not (j - i == 1 and w.lower() in ("one", "1")):
                cut = i - 1 if i > 0 and tags[i - 1] == "at" else i  # "the three men" -> "how many men"
                if nxt == "nns":
                    out.append(_Span(i, j, cut, ["how", "many"], "count"))
                else:
                    out.append(_Span(i, j, cut, ["what", "number"], "number"))
            i = j
            continue
        if _is_name(w, t) and w not in _MONTHS:
            j = i + 1
            while j < n and not bases[j - 1].endswith("$"):  # a possessive ends the name
                if _is_name(words[j], tags[j]) and words[j] not in _MONTHS:
                    j += 1
                elif tags[j].endswith("-tl") and bases[j] in ("in", "at", "cc") and j + 1 < n and _is_name(words[j + 1], tags[j + 1]):
                    j += 2  # "City of Atlanta": a lower-case title word inside the name
                else:
                    break
            names = [k for k in range(i, j) if bases[k] in _NAME_TAGS]
            modifier = j < n and bases[j] in ("nn", "nns") and not bases[j - 1].endswith("$")  # "the Paris perfume"
            if names and j - i <= 6 and not modifier:
                last = words[j - 1]
                person = any(words[k] in _TITLES for k in range(i, j)) or sum(1 for k in names if "-tl" not in tags[k]) >= 2
                prep = before(i)
                if bases[j - 1].endswith("$"):
                    strip = 2 if last.endswith("'s") else 1 if last.endswith("'") else 0
                    if strip:
                        out.append(_Span(i, j, i, ["whose"], "name", strip))
                elif prep in _PLACE_PREPOSITIONS and not person:
                    out.append(_Span(i, j, i - 1, ["from", "where"] if prep == "from" else ["where"], "place"))
                elif prep:
                    out.append(_Span(i, j, i, ["whom" if person else "what"], "name"))
                elif person or (j < n and _VERB.match(tags[j])):
                    out.append(_Span(i, j, i, ["who"], "name"))
                else:
                    out.append(_Span(i, j, i, ["what"], "name"))
            i = j
            continue
        i += 1
    return out


def _sentence_question(sent: Sequence[tuple[str, str]], span: _Span, window: int = 12) -> str:
    """The sentence with the span (and a preposition it takes) replaced by the wh-phrase: moved
    to the front when the span opens the sentence, else in place; at most ``window`` words
    either side, without dangling function words or punctuation at the ends; quotes dropped;
    ends with ``?``."""
    keep = [k for k, (w, _) in enumerate(sent) if w not in _QUOTES]
    before = [sent[k] for k in keep if k < span.cut][-window:]
    after = [sent[k] for k in keep if k >= span.end][:window]
    while after and (_base(after[-1][1]) in _FUNCTION_TAGS or not any(c.isalnum() for c in after[-1][0])):
        after.pop()
    while before and (_base(before[0][1]) in _FUNCTION_TAGS or not any(c.isalnum() for c in before[0][0])):
        before.pop(0)
    wh = list(span.wh)
    if not before:
        while after and not any(c.isalnum() for c in after[0][0]):  # "(2) accepts" -> "What number accepts"
            after.pop(0)
        wh[0] = wh[0].capitalize()
    return detokenize([*(w for w, _ in before), *wh, *(w for w, _ in after)]) + "?"


def _locate(sent: Sequence[tuple[str, str]], span: _Span) -> tuple[str, int] | None:
    """``(answer text, its character offset)`` in the sentence's text (:func:`detokenize`)."""
    words = [w for w, _ in sent]
    text = detokenize(words)
    answer = detokenize(words[span.start : span.end])
    if span.strip:
        answer = answer[: -span.strip]
    if not answer.strip() or answer != answer.strip():
        return None
    prefix = len(detokenize(words[: span.start]))
    pos = text.find(answer, max(0, prefix - 3))
    if pos < 0 or pos > prefix + 2:
        return None
    return answer, pos


def _chunks(doc: BrownDocument, rng: random.Random) -> list[list[int]]:
    """The document's sentences cut into consecutive paragraphs of about 60-220 words, one in
    eight of 300-650 words (longer than a 384-token window)."""
    out: list[list[int]] = []
    i, n = 0, len(doc.sentences)
    while i < n:
        target = rng.randint(300, 650) if rng.random() < 0.125 else rng.randint(60, 220)
        chunk, words = [], 0
        while i < n and words < target:
            chunk.append(i)
            words += len(doc.sentences[i])
            i += 1
        out.append(chunk)
    return out


def _usable(sent: Sequence[tuple[str, str]]) -> bool:
    return len(sent) >= 8 and not any("-hl" in t for _, t in sent)  # headlines are not sentences


def _paragraph_questions(doc: BrownDocument, chunk: list[int], rng: random.Random, k: int) -> tuple[str, list[tuple[str, str, int]]]:
    """A paragraph's context and up to ``k`` ``(question, answer, answer_start)``, from different
    sentences when it can, kinds mixed."""
    texts = [detokenize(w for w, _ in doc.sentences[i]) for i in chunk]
    starts = np.cumsum([0] + [len(t) + 1 for t in texts]).tolist()
    context = " ".join(texts)
    candidates = []
    for pos, i in enumerate(chunk):
        sent = doc.sentences[i]
        if not _usable(sent):
            continue
        for span in _span_candidates(sent):
            found = _locate(sent, span)
            if found is not None and len(found[0]) <= 40:
                candidates.append((pos, span, found))
    rng.shuffle(candidates)
    picked: list[tuple[int, _Span, str, int]] = []
    used_sentences: set[int] = set()
    used_kinds: collections.Counter[str] = collections.Counter()
    while len(picked) < k and candidates:
        fresh = [c for c in candidates if c[0] not in used_sentences] or candidates
        pick = min(fresh, key=lambda c: used_kinds[c[1].kind])  # the first of the least used kinds
        candidates.remove(pick)
        pos, span, (answer, at) = pick
        picked.append((pos, span, answer, at))
        used_sentences.add(pos)
        used_kinds[span.kind] += 1
    out = []
    for pos, span, answer, at in picked:
        question = _sentence_question(doc.sentences[chunk[pos]], span)
        out.append((question, answer, starts[pos] + at))
    return context, out


def generate_brown_qa(
    seed: int = 0,
    version_2_with_negative: bool = False,
    path: str | Path = BROWN,
    eval_documents: int = 30,
    contexts_per_document: tuple[int, int] = (3, 4),
    questions_per_context: int = 3,
) -> dict[str, list[QAExample]]:
    """The generated span-QA set: ``train``, ``validation`` and ``test`` examples.

    The Brown corpus' documents are shuffled with ``seed``; ``eval_documents`` go to validation,
    as many to test, the rest to train (test contexts come from documents never seen in
    training). Each document is cut into paragraphs of consecutive sentences; up to
    ``contexts_per_document`` (train, evaluation) paragraphs with enough tagged spans become
    contexts with ``questions_per_context`` questions each: a sentence of the paragraph with one
    span replaced by a wh-phrase (names: who/whose/where/what, dates: when, weekdays: what day,
    years: what year, numbers: how many/what number). ``version_2_with_negative`` adds one
    unanswerable question per context: a question made from another paragraph of the same
    document (of another document of the split if it has none). The answerable questions are
    the same with and without negatives. Deterministic for ``seed``.
    """
    docs = read_brown(path)
    order = sorted(range(len(docs)), key=lambda i: docs[i].id)
    random.Random(mix_seed(seed, GENERATED_FORMAT)).shuffle(order)
    if len(order) < 2 * eval_documents + 1:
        raise UserError(f"the Brown corpus {path} has {len(order)} documents: too few for {eval_documents} validation and test documents each")
    picks = {"validation": order[:eval_documents], "test": order[eval_documents : 2 * eval_documents], "train": order[2 * eval_documents :]}
    out: dict[str, list[QAExample]] = {}
    for split in SPLITS:
        per_doc = contexts_per_document[0] if split == "train" else contexts_per_document[1]
        examples: list[QAExample] = []
        spare: dict[str, list[tuple[str, str, int]]] = {}  # questions of the paragraphs not used as contexts
        contexts: list[tuple[str, int, str]] = []  # (document id, paragraph number, context)
        for d in sorted(picks[split]):
            doc = docs[d]
            rng = random.Random(mix_seed(seed, int(hashlib.sha256(doc.id.encode()).hexdigest()[:8], 16)))
            chunks = _chunks(doc, rng)
            made = [_paragraph_questions(doc, c, rng, questions_per_context) for c in chunks]
            full = [k for k, (_, qs) in enumerate(made) if len(qs) == questions_per_context]
            chosen = sorted(rng.sample(full, min(per_doc, len(full))))
            spare[doc.id] = [q for k, (_, qs) in enumerate(made) if k not in chosen for q in qs]
            for k in chosen:
                context, qs = made[k]
                contexts.append((doc.id, k, context))
                for j, (question, answer, start) in enumerate(qs):
                    examples.append(QAExample(f"{doc.id}-{k}-{j}", question, context, [(answer, start)], False, doc.id))
        if version_2_with_negative:
            neg_rng = random.Random(mix_seed(seed, 2, SPLITS.index(split)))
            with_spare = [d for d in sorted(spare) if spare[d]]
            for doc_id, k, context in contexts:
                pool = spare[doc_id] or spare[neg_rng.choice([d for d in with_spare if d != doc_id])]
                question, answer, _ = neg_rng.choice(pool)
                examples.append(QAExample(f"{doc_id}-{k}-n", question, context, [], True, doc_id))
            examples.sort(key=lambda e: (e.title, int(e.id.split("-")[1]), e.id))
        out[split] = examples
    return out


# --- features ---------------------------------------------------------------------------------------
def answer_token_span(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
    """Token positions of the answer ``[start_char, end_char)`` in a window whose context tokens
    have character ``offsets`` (``(L, 2)``, ``-1`` elsewhere), or ``(0, 0)`` when the window does
    not hold the whole answer (as ``run_qa.py``)."""
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
    """The windows of a split, held as flat arrays: item ``i`` is a dict of ``input_ids``
    (int32), ``token_type_ids`` (int8), ``start_positions``, ``end_positions`` and
    ``feature_index`` (``i``). :meth:`offsets` gives a window's character offsets into its
    example's context (``-1``: question or special token) and ``example_index`` maps windows to
    examples."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.bounds = arrays["bounds"]
        self.ids, self.types, self.offset_array = arrays["input_ids"], arrays["token_type_ids"], arrays["offsets"]
        self.example_index = arrays["example_index"]
        self.start_positions, self.end_positions = arrays["start_positions"], arrays["end_positions"]

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "bounds": self.bounds, "input_ids": self.ids, "token_type_ids": self.types, "offsets": self.offset_array,
            "example_index": self.example_index, "start_positions": self.start_positions, "end_positions": self.end_positions,
        }

    def __len__(self) -> int:
        return len(self.example_index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b = self.bounds[i], self.bounds[i + 1]
        return {
            "input_ids": self.ids[a:b],
            "token_type_ids": self.types[a:b],
            "start_positions": int(self.start_positions[i]),
            "end_positions": int(self.end_positions[i]),
            "feature_index": i,
        }

    def offsets(self, i: int) -> np.ndarray:
        """``(L, 2)`` character offsets into the context; ``-1`` for question and special tokens."""
        return self.offset_array[self.bounds[i] : self.bounds[i + 1]]


def _load_features(path: Path, num_examples: int) -> QAFeatures | None:
    """Cached features, if ``path`` holds them (for ``num_examples`` examples at most)."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if arrays["example_index"].size and int(arrays["example_index"].max()) >= num_examples:
        return None
    return QAFeatures(arrays)


def truncate_questions(tok: Tokenizer, questions: Sequence[str], max_query_length: int) -> list[str]:
    """Questions (left-stripped, as ``run_qa.py``) cut after their ``max_query_length``-th token."""
    questions = [q.lstrip() for q in questions]
    out = []
    for q, enc in zip(questions, tok.encode_batch(questions, add_special_tokens=False)):
        out.append(q[: enc.offsets[max_query_length - 1][1]] if len(enc.ids) > max_query_length else q)
    return out


def prepare_features(
    tokenizer: Tokenizer, examples: Sequence[QAExample], max_seq_length: int = 384, doc_stride: int = 128, max_query_length: int = 64
) -> QAFeatures:
    """Tokenize ``[CLS] question [SEP] context [SEP]`` into windows of at most
    ``max_seq_length`` tokens overlapping by ``doc_stride`` context tokens (the Rust tokenizer's
    ``only_second`` truncation with overflow, which gives what Hugging Face's fast tokenizers
    give), with the first answer's token span as label (``(0, 0)``: not in the window)."""
    check_window(max_seq_length, doc_stride, max_query_length)
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    windowed = Tokenizer.from_str(tokenizer.to_str())
    windowed.no_padding()
    windowed.enable_truncation(max_seq_length, stride=doc_stride, strategy="only_second")
    questions = truncate_questions(plain, [ex.question for ex in examples], max_query_length)
    ids, types, offsets, lengths, example_index, starts, ends = [], [], [], [], [], [], []
    batch = 2048
    for b in range(0, len(examples), batch):
        chunk = examples[b : b + batch]
        encoded = windowed.encode_batch(list(zip(questions[b : b + batch], [ex.context for ex in chunk])))
        for k, (ex, enc) in enumerate(zip(chunk, encoded)):
            answer = ex.answers[0] if ex.answers and not ex.is_impossible else None
            for window in [enc, *enc.overflowing]:
                off = np.asarray(window.offsets, dtype=np.int32).reshape(-1, 2)
                off[np.asarray([s != 1 for s in window.sequence_ids])] = -1
                s, e = answer_token_span(off, answer[1], answer[1] + len(answer[0])) if answer else (0, 0)
                ids.append(np.asarray(window.ids, dtype=np.int32))
                types.append(np.asarray(window.type_ids, dtype=np.int8))
                offsets.append(off)
                lengths.append(len(window.ids))
                example_index.append(b + k)
                starts.append(s)
                ends.append(e)
    bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    cat = lambda xs, dtype, shape: np.concatenate(xs).astype(dtype, copy=False) if xs else np.zeros(shape, dtype)
    return QAFeatures(
        {
            "bounds": bounds,
            "input_ids": cat(ids, np.int32, (0,)),
            "token_type_ids": cat(types, np.int8, (0,)),
            "offsets": cat(offsets, np.int32, (0, 2)),
            "example_index": np.asarray(example_index, dtype=np.int64),
            "start_positions": np.asarray(starts, dtype=np.int64),
            "end_positions": np.asarray(ends, dtype=np.int64),
        }
    )


def check_window(max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    """A window must hold ``[CLS] q [SEP] [SEP]``, the stride and at least one new context token."""
    if max_query_length < 1 or doc_stride < 0:
        raise UserError(f"--data.max_query_length {max_query_length} must be at least 1 and --data.doc_stride {doc_stride} at least 0")
    room = max_seq_length - max_query_length - 3
    if doc_stride >= room:
        raise UserError(
            f"--data.doc_stride {doc_stride} must be below max_seq_length - max_query_length - 3 = {room} "
            f"(max_seq_length {max_seq_length}, max_query_length {max_query_length}): each window must move forward"
        )


def QACollator(pad_id: int, positions: bool = True, index: bool = False, pad_to_multiple_of: int | None = 8,  # noqa: N802
               max_length: int | None = None) -> PadCollator:
    """Batches of int64 ``input_ids``, ``token_type_ids``, ``attention_mask`` and, with
    ``positions``, ``start_positions``/``end_positions``; with ``index``, ``feature_index``
    (:class:`~tfm.data.loading.PadCollator`)."""
    stack = [*(["start_positions", "end_positions"] if positions else []), *(["feature_index"] if index else [])]
    return PadCollator({"input_ids": pad_id, "token_type_ids": 0}, stack, pad_to_multiple_of, max_length)


# --- post-processing --------------------------------------------------------------------------------
def _rows(x: Any) -> list[np.ndarray]:
    """Logits as one 1-D float array per feature, from a ``(N, T)`` tensor/array or a list of
    ``(T,)`` rows or ``(B, T)`` batches (of different ``T``)."""
    if isinstance(x, (Tensor, np.ndarray)):
        x = [x]
    rows: list[np.ndarray] = []
    for part in x:
        a = part.detach().float().cpu().numpy() if isinstance(part, Tensor) else np.asarray(part, dtype=np.float32)
        rows.extend([a] if a.ndim == 1 else list(a))
    return rows


def _indices(x: Any) -> list[int]:
    if isinstance(x, (Tensor, np.ndarray)):
        x = [x]
    out: list[int] = []
    for part in x:
        a = part.detach().cpu().numpy() if isinstance(part, Tensor) else np.asarray(part)
        out.extend(int(i) for i in a.reshape(-1))
    return out


def postprocess_predictions(
    examples: Sequence[QAExample],
    features: QAFeatures,
    feature_indices: Any,
    start_logits: Any,
    end_logits: Any,
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> dict[str, str]:
    """``{example id: answer text}`` from the start and end logits of features (as Hugging
    Face's ``postprocess_qa_predictions``).

    Per window, the ``n_best_size`` highest start and end logits are paired; a pair is a valid
    span when both tokens are context tokens, ``start <= end`` and it has at most
    ``max_answer_length`` tokens; its score is ``start + end``. The best span over all windows
    of an example wins, its text cut from the context by the tokens' character offsets. With
    ``version_2_with_negative`` the null score is the lowest ``start[0] + end[0]`` ([CLS]) over
    the windows, and the answer is ``""`` when ``null - best > null_score_diff_threshold`` (or
    no valid span exists). Logits longer than a window (padding) are cut; a feature index seen
    twice (DDP padding repeats samples) counts once; examples with no feature get no answer.
    """
    idx = _indices(feature_indices)
    starts, ends = _rows(start_logits), _rows(end_logits)
    if not (len(idx) == len(starts) == len(ends)):
        raise ValueError(f"{len(idx)} feature indices but {len(starts)} start and {len(ends)} end logit rows")
    by_feature: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for f, s, e in zip(idx, starts, ends):
        if not 0 <= f < len(features):
            raise ValueError(f"feature index {f} is out of range: the split has {len(features)} features")
        by_feature.setdefault(f, (s, e))
    per_example: dict[int, list[int]] = collections.defaultdict(list)
    for f in sorted(by_feature):
        per_example[int(features.example_index[f])].append(f)
    predictions: dict[str, str] = {}
    for e in sorted(per_example):
        example = examples[e]
        best_score, best_text = -np.inf, ""
        null_score = np.inf
        for f in per_example[e]:
            offsets = features.offsets(f)
            n = len(offsets)
            s_logits, e_logits = by_feature[f][0][:n], by_feature[f][1][:n]
            null_score = min(null_score, float(s_logits[0] + e_logits[0]))
            s_top = np.argsort(s_logits)[-1 : -n_best_size - 1 : -1]
            e_top = np.argsort(e_logits)[-1 : -n_best_size - 1 : -1]
            si, ei = np.meshgrid(s_top, e_top, indexing="ij")
            valid = (offsets[si, 0] >= 0) & (offsets[ei, 0] >= 0) & (ei >= si) & (ei - si + 1 <= max_answer_length)
            if not valid.any():
                continue
            scores = np.where(valid, s_logits[si] + e_logits[ei], -np.inf)
            k = int(np.argmax(scores))  # the first of equal scores, in run_qa's order
            if scores.flat[k] > best_score:
                best_score = float(scores.flat[k])
                a, b = int(si.flat[k]), int(ei.flat[k])
                best_text = example.context[offsets[a, 0] : offsets[b, 1]]
        if version_2_with_negative and (best_score == -np.inf or null_score - best_score > null_score_diff_threshold):
            best_text = ""
        predictions[example.id] = best_text
    return predictions


def write_predictions(predictions: Mapping[str, str], path: str | Path) -> Path:
    """Write ``{id: answer text}`` as the SQuAD evaluation scripts read it (atomically); a folder
    (an existing one, or a path without a suffix, such as a run's log dir) gets
    ``predictions.json``. Returns the file written."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "predictions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(predictions), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# --- metrics ----------------------------------------------------------------------------------------
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
    if isinstance(answers, Mapping):
        answers = answers.get("text", [])
    return [a["text"] if isinstance(a, Mapping) else a[0] if isinstance(a, tuple) else a for a in answers]


def _as_dict(predictions: Any) -> dict[str, str]:
    if isinstance(predictions, Mapping):
        return {str(k): v for k, v in predictions.items()}
    return {str(p["id"]): p["prediction_text"] for p in predictions}


def squad_v2_scores(predictions: Any, references: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float], list[bool]]:
    """Per reference: exact match, F1 (0/1 and [0, 1]) and whether it has an answer, as the
    official ``evaluate-v2.0.py``: gold answers that normalise to nothing are dropped; none
    left means the gold is ``[""]``; the max over the gold answers counts; a missing prediction
    scores 0."""
    preds = _as_dict(predictions)
    exact, f1, has = [], [], []
    for ref in references:
        gold = [a for a in _gold_texts(ref["answers"]) if normalize_answer(a)] or [""]
        has.append(gold != [""])
        qid = str(ref["id"])
        if qid not in preds:
            exact.append(0.0)
            f1.append(0.0)
            continue
        pred = preds[qid]
        exact.append(float(max(normalize_answer(a) == normalize_answer(pred) for a in gold)))
        f1.append(max(_f1(a, pred) for a in gold))
    return exact, f1, has


def squad_v2_metrics(predictions: Any, references: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """SQuAD 2.0 metrics in percent (``exact``, ``f1``, ``total``, ``HasAns_exact``,
    ``HasAns_f1``, ``HasAns_total``, ``NoAns_exact``, ``NoAns_f1``, ``NoAns_total``; a group with
    no question is left out, as the official script). ``predictions``: ``{id: text}`` or
    torchmetrics-style ``[{"id", "prediction_text"}]``; ``references``: ``[{"id", "answers"}]``
    with answers as ``{"text": [...]}`` or ``[{"text": ...}]`` (no answer: empty)."""
    exact, f1, has = squad_v2_scores(predictions, references)
    out: dict[str, float] = {}

    def group(prefix: str, keep: list[bool]) -> None:
        n = sum(keep)
        if n:
            out[f"{prefix}exact"] = 100.0 * sum(x for x, k in zip(exact, keep) if k) / n
            out[f"{prefix}f1"] = 100.0 * sum(x for x, k in zip(f1, keep) if k) / n
            out[f"{prefix}total"] = float(n)

    group("", [True] * len(exact))
    group("HasAns_", has)
    group("NoAns_", [not h for h in has])
    return out


class SQuADv2(Metric):
    """torchmetrics' ``SQuAD`` for SQuAD 2.0: the same inputs (``[{"id", "prediction_text"}]``,
    ``[{"id", "answers": {"text": [...]}}]``), summed states (DDP-safe), and the official v2
    scores from :func:`squad_v2_metrics` (percent)."""

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
            out.update(NoAns_exact=100 * (self.exact - self.has_exact) / no_total, NoAns_f1=100 * (self.f1 - self.has_f1) / no_total)
        return {k: v.float() for k, v in out.items()}


def squad_v1_metrics(predictions: Any, references: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """SQuAD 1.1 ``exact_match`` and ``f1`` in percent, by torchmetrics' ``SQuAD`` (the official
    v1.1 script); a missing prediction scores 0."""
    from torchmetrics.functional.text import squad

    preds = _as_dict(predictions)
    present = [r for r in references if str(r["id"]) in preds]
    if not present:
        return {"exact_match": 0.0, "f1": 0.0}
    target = [{"id": str(r["id"]), "answers": {"text": _gold_texts(r["answers"])}} for r in present]
    scores = squad([{"id": t["id"], "prediction_text": preds[t["id"]]} for t in target], target)
    share = len(present) / len(references)
    return {k: float(v) * share for k, v in scores.items()}


# --- the DataModule ---------------------------------------------------------------------------------
class QuestionAnsweringDataModule(TextDataModule):
    """Extractive QA (SQuAD v1.1 / v2.0): windowed features for a span head, and the
    post-processing and metrics that turn per-window logits into answers and scores, so the task
    stays data-agnostic.

    Training batches are dicts of ``input_ids``, ``token_type_ids``, ``attention_mask`` (1: a real
    token), ``start_positions`` and ``end_positions`` (0: [CLS], no answer in the window), all
    int64, padded to the longest window of the batch. Validation and test batches add
    ``feature_index`` ``(B,)``; prediction batches have ``feature_index`` but no positions. The
    task collects ``feature_index`` with the start/end logits over an epoch (all ranks), then calls
    :meth:`postprocess` (-> ``{id: answer}``) and :meth:`evaluate` (-> metrics), or
    :meth:`write_predictions` for ``predict``.

    Args:
        source: ``generated`` (a span-QA set made from the bundled Brown corpus, see
            ``data/README.md``), ``hf:<name>[:<config>]`` (``hf:squad``, ``hf:squad_v2``, or a
            ``save_to_disk`` folder; test falls back to validation), or ``files`` (implied by
            ``train_file``/``validation_file``/``test_file``).
        train_file, validation_file, test_file: SQuAD JSON (v1.1/v2.0) or JSON lines; test
            defaults to validation (SQuAD publishes no test set).
        predict_file: questions to answer with ``predict``: SQuAD JSON or JSON lines of
            ``{id, question, context}``.
        version_2_with_negative: SQuAD 2.0: unanswerable questions (labelled [CLS]), null-score
            post-processing and v2 metrics; the generated set adds one unanswerable question per
            context.
        tokenizer: a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding one; default:
            train a WordPiece vocabulary on the training contexts and questions (cached).
        vocab_size, lowercase: of the vocabulary to train.
        max_seq_length: tokens per window (special tokens included).
        doc_stride: context tokens shared by consecutive windows of a long context.
        max_query_length: question tokens kept.
        max_answer_length: longest predicted answer, in tokens.
        n_best_size: start and end candidates per window.
        null_score_diff_threshold: v2: predict no answer when ``null - best`` exceeds it.
        split_seed: seed of the generated set (questions and document split).
        pad_to_multiple_of: pad a batch's length up to a multiple of this (None: the longest).
        cache_dir: cache folder (default ``$TFM_CACHE`` or ``~/.cache/tfm``).
        batch_size, eval_batch_size, num_workers, seed: as every tfm DataModule.
    """

    def __init__(
        self,
        source: str = "generated",
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        version_2_with_negative: bool = False,
        tokenizer: str | None = None,
        vocab_size: int = 8192,
        lowercase: bool = True,
        max_seq_length: int = 384,
        doc_stride: int = 128,
        max_query_length: int = 64,
        max_answer_length: int = 30,
        n_best_size: int = 20,
        null_score_diff_threshold: float = 0.0,
        split_seed: int = 0,
        pad_to_multiple_of: int | None = 8,
        cache_dir: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        check_window(max_seq_length, doc_stride, max_query_length)
        if max_answer_length < 1 or n_best_size < 1:
            raise UserError(f"--data.max_answer_length {max_answer_length} and --data.n_best_size {n_best_size} must be at least 1")
        files = {"train": train_file, "validation": validation_file, "test": test_file or validation_file}
        if any(files.values()):
            if source not in ("generated", "files"):
                raise UserError(f"--data.source {source!r} and --data.train_file/validation_file/test_file both name the data: pass one (source files with files)")
            source = "files"
        if source == "files" and not any(files.values()):
            raise UserError("--data.source files needs --data.train_file and/or --data.validation_file (SQuAD JSON)")
        if source not in ("generated", "files") and not source.startswith("hf:"):
            raise UserError(f"--data.source {source!r} is not a QA source: use generated, hf:<name>[:<config>] (hf:squad, hf:squad_v2) or --data.train_file/validation_file")
        if source.startswith("hf:"):
            HubSpec.parse(source, example="hf:squad_v2")
        for name, path in (("train_file", train_file), ("validation_file", validation_file), ("test_file", test_file), ("predict_file", predict_file)):
            if path is not None and not Path(path).expanduser().is_file():
                raise UserError(f"--data.{name} {path} does not exist: pass a SQuAD JSON file or JSON lines of {{id, question, context}}")
        if tokenizer is not None and not Path(tokenizer).expanduser().exists():
            raise UserError(f"--data.tokenizer {tokenizer} does not exist: pass a tokenizer.json, a vocab.txt or a folder holding one")
        self.source, self.files, self.predict_file = source, files, predict_file
        self.version_2_with_negative = version_2_with_negative
        self.tokenizer_path, self.vocab_size, self.lowercase = tokenizer, vocab_size, lowercase
        self.max_seq_length, self.doc_stride, self.max_query_length = max_seq_length, doc_stride, max_query_length
        self.max_answer_length, self.n_best_size, self.null_score_diff_threshold = max_answer_length, n_best_size, null_score_diff_threshold
        self.split_seed, self.pad_to_multiple_of = split_seed, pad_to_multiple_of
        self.cache_dir = cache_root(cache_dir)
        self._tokenizer: Tokenizer | None = None
        self._examples: dict[str, list[QAExample]] = {}
        self._features: dict[str, QAFeatures] = {}
        self._hf: dict[str, list[QAExample]] | None = None

    # --- examples -------------------------------------------------------------------------------
    def _origin(self, split: str) -> str:
        if split == "predict":
            return str(self.predict_file)
        if self.source == "files":
            return str(self.files[split])
        return f"{self.source}[{split}]"

    def _source_key(self, split: str) -> str:
        """What identifies a split's examples for caches (cheap: reads no text)."""
        path = self.predict_file if split == "predict" else self.files.get(split) if self.source == "files" else None
        if path is not None:
            st = Path(path).expanduser().stat()
            return f"file:{Path(path).expanduser().resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if self.source == "generated":
            return f"{self.generated_path.name}|{split}"
        return f"{self.source}|{split}"

    def has_split(self, split: str) -> bool:
        """Whether the source gives examples for ``split`` (``train``/``validation``/``test``/``predict``)."""
        if split == "predict":
            return self.predict_file is not None
        if self.source == "files":
            return self.files[split] is not None
        return True

    def examples(self, split: str) -> list[QAExample]:
        """A split's examples (read and checked once)."""
        if split not in self._examples:
            if split == "predict":
                if self.predict_file is None:
                    raise UserError("predict needs --data.predict_file: a SQuAD JSON file or JSON lines of {id, question, context}")
                examples = read_squad_file(self.predict_file)
                check_examples(examples, self._origin(split), self.version_2_with_negative, labelled=False)
            else:
                if split not in SPLITS:
                    raise ValueError(f"unknown split {split!r}: one of {', '.join((*SPLITS, 'predict'))}")
                if self.source == "generated":
                    for s, made in self.generated().items():
                        self._examples.setdefault(s, made)
                    return self._examples[split]
                if self.source == "files":
                    if self.files[split] is None:
                        flag = "--data.train_file" if split == "train" else "--data.validation_file"
                        raise UserError(f"no {split} data: pass {flag} (a SQuAD JSON file)")
                    examples = read_squad_file(self.files[split])  # type: ignore[arg-type]
                else:
                    if self._hf is None:
                        self._hf = read_hf_squad(self.source)
                    have = self._hf.get(split) or (self._hf.get("validation") if split == "test" else None)
                    if have is None:
                        raise UserError(f"the dataset {self.source} has no {split} split (it has {', '.join(self._hf)})")
                    examples = have
                check_examples(examples, self._origin(split), self.version_2_with_negative)
            self._examples[split] = examples
        return self._examples[split]

    @property
    def generated_path(self) -> Path:
        """The cached generated set: ``{split: SQuAD JSON}`` for this seed and version."""
        st = BROWN.stat()
        blob = json.dumps([GENERATED_FORMAT, str(BROWN), st.st_size, st.st_mtime_ns, self.split_seed, self.version_2_with_negative])
        key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return self.cache_dir / "qa" / f"generated-brown-{'v2' if self.version_2_with_negative else 'v1'}-{self.split_seed}-{key}.json"

    def generated(self) -> dict[str, list[QAExample]]:
        """The generated set (:func:`generate_brown_qa`), made once and cached as SQuAD JSON."""
        path = self.generated_path
        version = f"tfm-brown-qa-{GENERATED_FORMAT}-{'v2' if self.version_2_with_negative else 'v1'}"

        def generate(tmp: Path) -> None:
            made = generate_brown_qa(self.split_seed, self.version_2_with_negative)
            tmp.write_text(json.dumps({split: squad_json(made[split], version) for split in SPLITS}, ensure_ascii=False), encoding="utf-8")

        data = json.loads(build_cached(path, generate).read_text(encoding="utf-8"))
        return {split: squad_examples(data[split], f"{path}[{split}]") for split in SPLITS}

    # --- the tokenizer (built on first use: the CLI reads the vocabulary size before setup) ------
    def train_tokenizer(self) -> Tokenizer:
        """A WordPiece vocabulary trained (once, then cached) on the training texts."""
        if not self.has_split("train"):
            raise UserError("no training data to train a tokenizer on: pass --data.tokenizer (e.g. the run's or a BERT folder) or --data.train_file")

        def texts() -> Iterable[str]:
            examples = self.examples("train")
            yield from dict.fromkeys(ex.context for ex in examples)
            yield from (ex.question for ex in examples)

        return wordpiece_tokenizer(
            texts,
            f"qa|{self._source_key('train')}",
            vocab_size=self.vocab_size,
            lowercase=self.lowercase,
            cache_dir=self.cache_dir / "tokenizers",
        )

    # --- features, cached on disk -----------------------------------------------------------------
    def _features_path(self, split: str) -> Path:
        settings = {
            "format": _CACHE_FORMAT,
            "tokenizer": hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest(),
            "source": self._source_key(split),
            "window": [self.max_seq_length, self.doc_stride, self.max_query_length],
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / "qa" / f"{split}-{self.max_seq_length}-{key}.npz"

    def features(self, split: str) -> QAFeatures:
        """A split's windows: built once per tokenizer, source and window settings and cached
        in ``cache_dir/qa`` (the examples themselves are re-read: they are the reference)."""
        if split not in self._features:
            examples = self.examples(split)
            path = self._features_path(split)
            loaded: dict[str, QAFeatures | None] = {}

            def ready(p: Path) -> bool:
                loaded["features"] = _load_features(p, len(examples))
                return loaded["features"] is not None

            def build(tmp: Path) -> None:
                feats = prepare_features(self.tokenizer, examples, self.max_seq_length, self.doc_stride, self.max_query_length)
                with open(tmp, "wb") as f:
                    np.savez(f, **feats.arrays())

            build_cached(path, build, ready)  # DDP ranks tokenize once: the others wait
            feats = loaded.get("features") or _load_features(path, len(examples))
            self._features[split] = feats
        return self._features[split]

    def prepare_data(self) -> None:
        _ = self.tokenizer  # trains and caches it once, before DDP ranks start

    def setup(self, stage: str) -> None:
        need = {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"], "predict": ["predict"]}.get(stage, [])
        if stage == "fit" and not self.has_split("train"):
            raise UserError("fit needs training data: pass --data.train_file (or use --data.source generated / hf:...)")
        for split in need:
            if self.has_split(split):
                self.features(split)

    # --- loaders ----------------------------------------------------------------------------------
    def collator(self, positions: bool = True, index: bool = False) -> PadCollator:
        return QACollator(self.pad_token_id, positions, index, self.pad_to_multiple_of, self.max_seq_length)

    @property
    def train_set(self) -> QAFeatures:
        return self.features("train")

    @property
    def val_set(self) -> QAFeatures:
        return self.features("validation")

    @property
    def test_set(self) -> QAFeatures:
        return self.features("test")

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set, self.collator(), collate=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_split("validation"):
            return []  # files without --data.validation_file: no validation
        return self.eval_loader(self.val_set, self.collator(index=True), collate=True)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, self.collator(index=True), collate=True)

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader(self.features("predict"), self.collator(positions=False, index=True), collate=True)

    # --- answers and scores -----------------------------------------------------------------------
    def postprocess(self, feature_indices: Any, start_logits: Any, end_logits: Any, split: str = "validation") -> dict[str, str]:
        """``{example id: answer}`` for the features of ``split`` given by ``feature_indices``
        (the batches' ``feature_index``, a tensor or a list of them) and their ``start_logits`` /
        ``end_logits`` (``(N, T)``, or a list of ``(B, T)`` batches or ``(T,)`` rows; positions
        past a window's length are ignored, so pad freely, e.g. to ``max_seq_length`` for a DDP
        all-gather). See :func:`postprocess_predictions`."""
        return postprocess_predictions(
            self.examples(split),
            self.features(split),
            feature_indices,
            start_logits,
            end_logits,
            self.version_2_with_negative,
            self.n_best_size,
            self.max_answer_length,
            self.null_score_diff_threshold,
        )

    def references(self, split: str = "validation") -> list[dict[str, Any]]:
        """``[{"id", "answers": {"text": [...], "answer_start": [...]}}]`` (torchmetrics' SQuAD
        target format; no answer: empty lists)."""
        return [
            {"id": ex.id, "answers": {"text": [t for t, _ in ex.answers], "answer_start": [s for _, s in ex.answers]}}
            for ex in self.examples(split)
        ]

    def evaluate(self, predictions: Mapping[str, str], split: str = "validation", only_predicted: bool = False) -> dict[str, float]:
        """Scores in percent over the split's questions (a question with no prediction scores 0;
        ``only_predicted``: score only the predicted ones, e.g. after ``limit_val_batches``).
        SQuAD 1.1: ``exact_match``, ``f1`` (torchmetrics' ``SQuAD``); 2.0: the official v2 keys
        ``exact``, ``f1``, ``total``, ``HasAns_*``, ``NoAns_*``. ``f1`` is in both."""
        refs = self.references(split)
        if only_predicted:
            refs = [r for r in refs if r["id"] in predictions]
        if self.version_2_with_negative:
            return squad_v2_metrics(predictions, refs)
        return squad_v1_metrics(predictions, refs)

    def metric(self) -> Any:
        """A fresh torchmetrics metric for this version: ``SQuAD`` (v1.1) or :class:`SQuADv2`."""
        if self.version_2_with_negative:
            return SQuADv2()
        from torchmetrics.text import SQuAD

        return SQuAD()

    @staticmethod
    def write_predictions(predictions: Mapping[str, str], path: str | Path) -> Path:
        """``{id: answer}`` JSON, as the SQuAD evaluation scripts read it (a folder gets
        ``predictions.json``); returns the file."""
        return write_predictions(predictions, path)
