"""The generated span-QA set (``data/README.md``): template questions about tagged spans of the Brown corpus, and
:class:`QAExample`, the question type of :mod:`tfm.data.qa`."""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UserError
from ..loading import mix_seed
from ..sources import SPLITS
from ..text import BROWN, BrownDocument, Sentence, detokenize, read_brown

GENERATED_FORMAT = 1  # bump when the generated set would come out differently for the same seed
_PER_CONTEXT = 3  # questions
Question = tuple[str, str, int]  # question, answer, answer_start
_TITLES = {"Mr.", "Mrs.", "Miss", "Ms.", "Dr.", "Gov.", "Sen.", "Rep.", "Gen.", "Col.", "Capt.", "Lt.", "Prof.", "Rev.",
           "Jr.", "Sr.", "St."}
_MONTHS = {"January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
           "December", "Jan.", "Feb.", "Mar.", "Apr.", "Aug.", "Sept.", "Sep.", "Oct.", "Nov.", "Dec."}
_WEEKDAYS = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
_PLACE_PREPOSITIONS = {"in", "at", "near", "from"}
_YEAR_PREPOSITIONS = ("in", "since", "until", "by", "of", "from", "before", "after")
_YEAR = re.compile(r"(1[5-9]|20)\d\d")
_QUOTES = {"``", "''", "`", "'"}
_VERB = re.compile(r"(vb[dz]?|bed[z]?|bez|ber|hv[dz]|md|dod|doz)(\*)?$")
_NAME_TAGS = ("np", "nps", "np$", "nps$")
_FUNCTION_TAGS = ("in", "at", "cc", "cs", "to", "wdt", "wps", "wrb", "ppss", "pps", ",", "--", "(", ":", "``", "''")


@dataclass
class QAExample:
    """One question about one context; ``answers``: ``(text, answer_start)`` pairs (the first labels training
    windows, all count in evaluation); an unanswerable (v2) question has none and ``is_impossible``."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)
    is_impossible: bool = False
    title: str = ""


@functools.cache
def _base(tag: str) -> str:
    """A Brown tag without its ``-tl``/``-hl``/``-nc`` marks and contractions: ``np$-tl`` -> ``np$``."""
    return re.split(r"[-+]", tag, maxsplit=1)[0] if tag not in ("--", "-") else tag


def _is_name(word: str, tag: str) -> bool:
    """A proper noun, or a capitalised word of a title (``County/nn-tl``)."""
    titled = "-tl" in tag and word[:1].isupper() and _base(tag) not in ("cd", "od", "in", "at", "cc", "to")
    return _base(tag) in _NAME_TAGS or titled


def _wordy(text: str) -> bool:
    return any(c.isalnum() for c in text)


@dataclass
class _Span:
    """A candidate answer: tokens ``[start, end)`` hold it, ``[cut, end)`` become ``wh`` in the question;
    ``strip`` characters come off its end (a possessive ``'s``); ``kind`` names the template."""

    start: int
    end: int
    cut: int
    wh: list[str]
    kind: str
    strip: int = 0


def _span_candidates(sent: Sentence) -> list[_Span]:
    """The answer spans of a sentence: names (who / whom / whose / where / what), dates (when / what date),
    weekdays (what day), years (what year), numbers (how many + plural noun / what number)."""
    words, tags = [w for w, _ in sent], [t for _, t in sent]
    bases = [_base(t) for t in tags]
    out: list[_Span] = []
    n, i = len(sent), 0
    while i < n:
        w, base, j = words[i], bases[i], i + 1
        prep = words[i - 1] if i > 0 and bases[i - 1] == "in" else ""
        if w in _MONTHS and base == "np":  # a date: month [day] [, year]
            if j < n and bases[j] == "cd" and words[j].isdigit():
                j += 1
                if j + 1 < n and words[j] == "," and _YEAR.fullmatch(words[j + 1]):
                    j += 2
            on = prep in ("on", "in")
            out.append(_Span(i, j, i - 1 if on else i, ["when"] if on else ["what", "date"], "date"))
        elif w in _WEEKDAYS and base == "nr":
            on = prep == "on"
            out.append(_Span(i, j, i - 1 if on else i, ["on", "what", "day"] if on else ["what", "day"], "day"))
        elif base == "cd":
            while j < n and bases[j] == "cd":
                j += 1
            nxt = bases[j] if j < n else ""
            titled = any("-tl" in t for t in tags[max(i - 1, 0) : j + 1])  # "World War 2", "Route 66"
            if titled or not all(_wordy(x) for x in words[i:j]) or (j - i == 1 and w.lower() in ("one", "1")):
                pass
            elif j - i == 1 and _YEAR.fullmatch(w) and nxt not in ("nns", "nn"):
                on = prep in _YEAR_PREPOSITIONS
                out.append(_Span(i, j, i - 1 if on else i, [prep, "what", "year"] if on else ["what", "year"], "year"))
            else:
                cut = i - 1 if i > 0 and tags[i - 1] == "at" else i  # "the three men" -> "how many men"
                wh, kind = (["how", "many"], "count") if nxt == "nns" else (["what", "number"], "number")
                out.append(_Span(i, j, cut, wh, kind))
        elif _is_name(w, tags[i]) and w not in _MONTHS:
            while j < n and not bases[j - 1].endswith("$"):  # a possessive ends the name
                if _is_name(words[j], tags[j]) and words[j] not in _MONTHS:
                    j += 1
                elif (tags[j].endswith("-tl") and bases[j] in ("in", "at", "cc") and j + 1 < n
                      and _is_name(words[j + 1], tags[j + 1])):
                    j += 2  # "City of Atlanta": a lower-case title word inside the name
                else:
                    break
            names = [k for k in range(i, j) if bases[k] in _NAME_TAGS]
            modifier = j < n and bases[j] in ("nn", "nns") and not bases[j - 1].endswith("$")  # "the Paris perfume"
            if names and j - i <= 6 and not modifier:
                person = any(x in _TITLES for x in words[i:j]) or sum("-tl" not in tags[k] for k in names) >= 2
                if bases[j - 1].endswith("$"):
                    strip = 2 if words[j - 1].endswith("'s") else 1 if words[j - 1].endswith("'") else 0
                    if strip:
                        out.append(_Span(i, j, i, ["whose"], "name", strip))
                elif prep in _PLACE_PREPOSITIONS and not person:
                    out.append(_Span(i, j, i - 1, ["from", "where"] if prep == "from" else ["where"], "place"))
                else:
                    who = "who" if person or (j < n and _VERB.match(tags[j])) else "what"
                    out.append(_Span(i, j, i, [("whom" if person else "what") if prep else who], "name"))
        i = j
    return out


def _sentence_question(sent: Sentence, span: _Span, window: int = 12) -> str:
    """The sentence with the span (and a preposition it takes) replaced by the wh-phrase, moved to the front when
    the span opens the sentence; at most ``window`` words either side, no dangling function words or quotes."""
    keep = [k for k, (w, _) in enumerate(sent) if w not in _QUOTES]
    before = [sent[k] for k in keep if k < span.cut][-window:]
    after = [sent[k] for k in keep if k >= span.end][:window]
    while after and (_base(after[-1][1]) in _FUNCTION_TAGS or not _wordy(after[-1][0])):
        after.pop()
    while before and (_base(before[0][1]) in _FUNCTION_TAGS or not _wordy(before[0][0])):
        before.pop(0)
    if not before:
        while after and not _wordy(after[0][0]):  # "(2) accepts" -> "What number accepts"
            after.pop(0)
    wh = [span.wh[0] if before else span.wh[0].capitalize(), *span.wh[1:]]
    return detokenize([*(w for w, _ in before), *wh, *(w for w, _ in after)]) + "?"


def _locate(sent: Sentence, span: _Span) -> tuple[str, int] | None:
    """``(answer text, its character offset)`` in the sentence's text (:func:`detokenize`)."""
    words = [w for w, _ in sent]
    answer = detokenize(words[span.start : span.end])[: -span.strip or None]
    if not answer.strip() or answer != answer.strip():
        return None
    prefix = len(detokenize(words[: span.start]))
    pos = detokenize(words).find(answer, max(0, prefix - 3))
    return None if pos < 0 or pos > prefix + 2 else (answer, pos)


def _chunks(doc: BrownDocument, rng: random.Random) -> list[list[Sentence]]:
    """The sentences cut into consecutive paragraphs of about 60-220 words, one in eight of 300-650 words."""
    words, bounds = np.cumsum([0, *map(len, doc.sentences)]), [0]
    while bounds[-1] < len(doc.sentences):
        target = rng.randint(300, 650) if rng.random() < 0.125 else rng.randint(60, 220)
        bounds.append(min(len(doc.sentences), int(np.searchsorted(words, words[bounds[-1]] + target))))
    return [doc.sentences[a:b] for a, b in itertools.pairwise(bounds)]


def _paragraph_questions(sentences: list[Sentence], rng: random.Random) -> tuple[str, list[Question]]:
    """A paragraph's context and up to :data:`_PER_CONTEXT` ``(question, answer, answer_start)``, from different
    sentences when it can, kinds mixed."""
    texts = [detokenize(w for w, _ in sent) for sent in sentences]
    starts = np.cumsum([0] + [len(t) + 1 for t in texts]).tolist()
    candidates = [(pos, span, found) for pos, sent in enumerate(sentences)
                  if len(sent) >= 8 and not any("-hl" in t for _, t in sent)  # headlines are not sentences
                  for span in _span_candidates(sent) if (found := _locate(sent, span)) and len(found[0]) <= 40]
    rng.shuffle(candidates)
    out: list[Question] = []
    used_sentences: set[int] = set()
    used_kinds: collections.Counter[str] = collections.Counter()
    while len(out) < _PER_CONTEXT and candidates:
        fresh = [c for c in candidates if c[0] not in used_sentences] or candidates
        pick = min(fresh, key=lambda c: used_kinds[c[1].kind])  # the first of the least used kinds
        candidates.remove(pick)
        pos, span, (answer, at) = pick
        out.append((_sentence_question(sentences[pos], span), answer, starts[pos] + at))
        used_sentences.add(pos)
        used_kinds[span.kind] += 1
    return " ".join(texts), out


def generate_brown_qa(seed: int = 0, version_2_with_negative: bool = False, path: str | Path = BROWN,
                      eval_documents: int = 30) -> dict[str, list[QAExample]]:
    """The generated set's splits, deterministic for ``seed`` (``data/README.md``): the shuffled documents'
    ``eval_documents`` each to validation and test, the rest to train; v2 adds one unanswerable question per context,
    from another paragraph (the answerable ones stay the same)."""
    docs = read_brown(path)
    order = sorted(range(len(docs)), key=lambda i: docs[i].id)
    random.Random(mix_seed(seed, GENERATED_FORMAT)).shuffle(order)
    if len(order) < 2 * eval_documents + 1:
        raise UserError(f"the Brown corpus {path} has {len(order)} documents: too few for {eval_documents} validation "
                        "and test documents each")
    picks = {"validation": order[:eval_documents], "test": order[eval_documents : 2 * eval_documents],
             "train": order[2 * eval_documents :]}
    out: dict[str, list[QAExample]] = {}
    for split in SPLITS:
        per_doc = 3 if split == "train" else 4  # contexts per document
        examples: list[QAExample] = []
        spare: dict[str, list[Question]] = {}  # questions of the paragraphs not used as contexts
        contexts: list[tuple[str, int, str]] = []  # (document id, paragraph number, context)
        for doc in (docs[d] for d in sorted(picks[split])):
            rng = random.Random(mix_seed(seed, int(hashlib.sha256(doc.id.encode()).hexdigest()[:8], 16)))
            made = [_paragraph_questions(c, rng) for c in _chunks(doc, rng)]
            full = [k for k, (_, qs) in enumerate(made) if len(qs) == _PER_CONTEXT]
            chosen = sorted(rng.sample(full, min(per_doc, len(full))))
            spare[doc.id] = [q for k, (_, qs) in enumerate(made) if k not in chosen for q in qs]
            for k in chosen:
                context, qs = made[k]
                contexts.append((doc.id, k, context))
                examples += [QAExample(f"{doc.id}-{k}-{j}", q, context, [(a, s)], False, doc.id)
                             for j, (q, a, s) in enumerate(qs)]
        if version_2_with_negative:
            neg_rng = random.Random(mix_seed(seed, 2, SPLITS.index(split)))
            with_spare = [d for d in sorted(spare) if spare[d]]
            for doc_id, k, context in contexts:
                pool = spare[doc_id] or spare[neg_rng.choice([d for d in with_spare if d != doc_id])]
                examples.append(QAExample(f"{doc_id}-{k}-n", neg_rng.choice(pool)[0], context, [], True, doc_id))
            examples.sort(key=lambda e: (e.title, int(e.id.split("-")[1]), e.id))
        out[split] = examples
    return out
