"""Token classification data (POS tagging, NER): readers, the generated Brown NER set, sub-token
label alignment and the DataModule.

Sources (``--data.source``):

* ``brown_pos`` (default): the bundled Brown corpus, its 472 raw tags mapped to the 12 universal
  tags of Petrov, Das and McDonald (2012) by :func:`brown_to_universal`; split by document.
* ``ner_brown``: a NER set generated from real Brown sentences (:func:`brown_ner_documents`):
  proper-noun spans typed PER/LOC/ORG/MISC by heuristics, BIO tags; split by document.
* ``conll``: CoNLL-2003 style files (``--data.train_file`` / ``validation_file`` /
  ``test_file``): one ``token ... tag`` line per word, a blank line between sentences,
  ``-DOCSTART-`` lines skipped; the tag is the last column (``--data.tag_column``).
* ``conllu``: CoNLL-U files: FORM (column 2) and UPOS (column 4, or ``--data.tag_column``);
  comments, multiword ranges (``1-2``) and empty nodes (``1.1``) skipped.
* ``hf:<name>[:<config>]``: a Hugging Face dataset (or a folder written by ``save_to_disk``)
  with ``tokens`` and ``ner_tags`` (a sequence of ``ClassLabel``, or of strings) columns and
  ``train`` / ``validation`` [/ ``test``] splits, e.g. ``hf:conll2003``.

Batches (the contract with the task): ``input_ids``, ``token_type_ids``, ``attention_mask`` and
``labels``, all ``int64`` ``(B, T)``. Words are tokenised pre-split (``is_pretokenized``); the
label of a word sits on its **first sub-token**, -100 on its other sub-tokens, on ``[CLS]``,
``[SEP]`` and padding. So the positions where ``labels != -100``, read left to right, are the
sentence's words in order: predictions gathered there form the word-level tag sequence that
:func:`tfm.metrics.entity_f1` scores. With ``label_all_subtokens`` every sub-token carries a label
(a ``B-X`` word's later pieces get ``I-X``, as Hugging Face's ``run_ner`` does) and metrics are
then over sub-tokens, as there. Sentences longer than ``max_seq_length`` sub-tokens (``[CLS]``
and ``[SEP]`` included) are truncated: their cut-off words are not scored, and a warning counts
them per split.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .loading import PadCollator, mix_seed
from .sources import HubSpec, load_splits, require_columns
from .text import BROWN, read_brown
from .tokenizers import TextDataModule, cache_root, special_ids, wordpiece_tokenizer

Tagged = tuple[list[str], list[str]]  # the words of a sentence and their tags
SPLITS = ("train", "validation", "test")
UNIVERSAL_TAGS = ("NOUN", "VERB", "ADJ", "ADV", "PRON", "DET", "ADP", "NUM", "CONJ", "PRT", ".", "X")
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")  # CoNLL-2003's order
BUILTIN_SOURCES = ("brown_pos", "ner_brown")
FILE_SOURCES = ("conll", "conllu")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- Brown tags -> universal tags ------------------------------------------------------------------
# NLTK's universal_tagset/en-brown.map lists every full Brown tag; here the same mapping as rules on
# the base tag. Checked against the per-tag counts NLTK gives for the whole corpus: 17 of the
# 1,161,192 tokens differ (rare contractions and genitives such as cd$, ap$, rb$, whose entries in
# the map are not derivable from their base tag); tests/test_tagging_data.py keeps that check.
_BROWN_BASE = {
    **dict.fromkeys(_words("nn nns np nps nr nrs pn"), "NOUN"),
    **dict.fromkeys(_words("vb vbd vbg vbn vbz md be bed bedz beg bem ben ber bez do dod doz hv hvd hvg hvn hvz"), "VERB"),
    **dict.fromkeys(_words("jj jjr jjs jjt od ap"), "ADJ"),  # ap: many, other, next; od: first
    **dict.fromkeys(_words("rb rbr rbt rn ql qlp wql wrb *"), "ADV"),  # *: not, n't
    **dict.fromkeys(_words("in cs"), "ADP"),  # cs (subordinating conjunction) is ADP there
    "cc": "CONJ",
    "cd": "NUM",
    **dict.fromkeys(_words("at dt dti dts dtx abx wdt pp$ wp$"), "DET"),  # pp$: his, their
    **dict.fromkeys(_words("pps ppss ppo ppl ppls wps wpo pp$$"), "PRON"),  # pp$$: mine, theirs
    **dict.fromkeys(_words("to rp abn abl ex uh"), "PRT"),  # abn: all, half; abl: quite; ex: there
    **dict.fromkeys([".", ",", ":", "(", ")", "--", "``", "''", "'"], "."),
    "nil": "X",
}
_BROWN_SUFFIXES = re.compile(r"(?:-(?:tl|hl|nc|t|n))+$")  # title, headline, citation (-t, -n: typos in the corpus)


@cache
def brown_to_universal(tag: str) -> str:
    """The universal tag of a raw Brown tag (``nn-tl`` -> ``NOUN``, ``fw-nn`` -> ``X``).

    Rules: ``fw-`` (foreign word) -> ``X``; the ``-tl``/``-hl``/``-nc`` suffixes are dropped; a
    contraction ``a+b`` is ``VERB`` or ``ADP`` when ``a`` is (``vb+ppo`` let's, ``in+in``), else
    ``PRT`` (``pps+bez`` it's, ``ppss+md`` I'll); a negated (``*``) or genitive (``$``) form takes
    its base's tag unless listed itself (``pp$`` DET, ``pp$$`` PRON); unknown tags -> ``X``.
    """
    t = tag.lower()
    if t.startswith("fw-"):
        return "X"
    t = _BROWN_SUFFIXES.sub("", t)
    if "+" in t:
        first = brown_to_universal(t.split("+", 1)[0])
        return first if first in ("VERB", "ADP") else "PRT"
    while t:
        if t in _BROWN_BASE:
            return _BROWN_BASE[t]
        if len(t) > 1 and t[-1] in "*$":
            t = t[:-1]
            continue
        break
    return "X"


def split_documents(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Document indices of each split (sorted), deterministic for ``seed``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val, n_test = (max(1, round(n * f)) if f > 0 else 0 for f in (val_fraction, test_fraction))
    if n - n_val - n_test < 1:
        raise UserError(f"{n} documents are too few for validation and test splits: lower --data.val_fraction/--data.test_fraction")
    return {"train": sorted(order[n_val + n_test :]), "validation": sorted(order[:n_val]), "test": sorted(order[n_val : n_val + n_test])}


def brown_pos_documents(path: str | Path = BROWN) -> list[list[Tagged]]:
    """The Brown corpus' documents, each a list of sentences tagged with universal tags."""
    return [[([w for w, _ in s], [brown_to_universal(t) for _, t in s]) for s in d.sentences if s] for d in read_brown(path)]


# --- the generated NER set ---------------------------------------------------------------------------

# Cues and word lists, compared in lower case (a possessive 's dropped). Deliberately short: the
# corpus' own tags find the names; these lists only type them.
_TITLES = _words(
    "mr. mrs. miss ms. mme. mlle. dr. gov. governor sen. senator rep. judge justice president vice-president mayor gen. "
    "general col. colonel capt. captain lt. lieutenant sgt. sergeant maj. major adm. admiral cmdr. rev. reverend msgr. "
    "father sister brother prof. professor secretary chairman king queen prince princess sir lady lord pope cardinal "
    "bishop archbishop sheriff commissioner ambassador premier chancellor dean coach uncle aunt mister saint"
)
_MONTHS = _words(
    "january february march april may june july august september october november december "
    "jan. feb. mar. apr. jun. jul. aug. sept. sep. oct. nov. dec."
)
_ORG_HEADS = _words(
    "committee department association company co. corp. corporation inc. ltd. university college board court legislature "
    "senate congress council commission bureau administration party church club school union bank institute foundation "
    "society agency corps army navy league federation service office jury assembly conference hospital academy museum "
    "library laboratory laboratories railroad railway times post tribune journal herald press house ministry cabinet "
    "authority division industries airlines guard police fund trust seminary orchestra symphony fraternity brotherhood "
    "chamber exchange organization council commission institution"
)
_LOC_HEADS = _words(
    "county city state river lake street st. avenue ave. road boulevard highway island islands isle mountain mountains "
    "hill hills park valley bay ocean sea gulf canal square harbor beach coast creek peninsula province territory falls "
    "springs canyon desert forest plaza bridge airport heights village town township region strait continent"
)
_LOC_PREFIXES = _words("cape mount mt. lake fort ft. port")
_STATES = (
    "alabama alaska arizona arkansas california colorado connecticut delaware florida georgia hawaii idaho illinois "
    "indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan minnesota mississippi missouri montana "
    "nebraska nevada ohio oklahoma oregon pennsylvania tennessee texas utah vermont virginia washington wisconsin wyoming "
    "ala. ariz. ark. calif. colo. conn. del. fla. ga. ill. ind. kan. kans. ky. la. md. mass. mich. minn. miss. mo. mont. "
    "neb. nev. n.h. n.j. n.m. n.y. n.c. n.d. okla. ore. pa. r.i. s.c. s.d. tenn. tex. va. vt. wash. wis. wyo. d.c."
)
_LOCATIONS = _words(
    _STATES + " america europe asia africa australia antarctica england britain scotland ireland wales france germany "
    "italy spain portugal russia china japan india korea cuba mexico canada brazil argentina chile peru egypt israel "
    "greece turkey iran iraq poland hungary austria switzerland sweden norway denmark finland holland belgium "
    "netherlands laos vietnam formosa congo algeria berlin london paris rome moscow tokyo vienna geneva chicago boston "
    "dallas houston atlanta philadelphia detroit cleveland pittsburgh baltimore denver miami seattle providence "
    "manchester hollywood brooklyn manhattan harlem oxford cambridge jerusalem athens venice madrid peking havana "
    "u.s. u.s.a. usa u.s.s.r. ussr west east north south"
)
_LOCATION_PHRASES = frozenset(
    {"new york", "new jersey", "new hampshire", "new mexico", "new orleans", "new england", "rhode island", "los angeles",
     "san francisco", "st. louis", "north carolina", "south carolina", "north dakota", "south dakota", "west virginia",
     "united states", "soviet union", "great britain", "latin america", "south america", "north america",
     "middle east", "far east", "west germany", "east germany", "red china", "kansas city", "salt lake city"}
)
_ORGANIZATIONS = _words("u.n. nato seato cia fbi nasa congress senate pentagon kremlin yankees dodgers giants")
_MISC = _words(
    "american americans english french german germans russian russians british italian italians chinese japanese "
    "soviet negro negroes jew jews christian christians catholic catholics protestant protestants baptist baptists "
    "methodist methodists democrat democrats republican republicans communist communists bible christmas easter "
    "mexican mexicans cuban cubans african africans european europeans latin greek greeks roman romans indian indians "
    "irish spanish dutch swedish norwegian scotch scots yankee southerners northerners westerners moslem moslems "
    "hindu buddhist gospel olympics"
)
_MISC_HEADS = _words("war act day prize award cup bowl series games festival plan amendment treaty doctrine code")
_PER_WORDS = _words("god christ jesus")
_FIRST_NAMES = _words(
    "john william george james thomas charles jack mike henry robert richard sam louis tom joe martin joseph david arthur "
    "frank edward walter carl alfred paul peter harry fred albert ralph harold eugene howard kenneth donald stephen "
    "steve philip phil dan daniel andrew michael francis lawrence leonard ray roy bob bill billy jim jimmy johnny "
    "eddie ed al ben lee mary anne ann elizabeth margaret helen alice jane susan ruth dorothy lucy linda kate rachel "
    "julia martha sarah emily grace nancy betty barbara joan jean eleanor catherine kitty laura"
)
_INITIAL = re.compile(r"^[A-Z]\.$")
_STATE_NAMES = _words(_STATES)
_NAME_BASES = frozenset({"np", "nps", "np$", "nps$"})
_TITLE_CASE_BASES = _words("nn nns nn$ nns$ jj jjr jjs jjt jj$ vbg vbn od cd nr nrs nr$")  # content words of a -tl run
_CONNECTORS = frozenset({"in", "at", "cc"})


def _key(word: str) -> str:
    """A word's lookup form: lower case, a possessive ``'s`` / ``'`` dropped."""
    w = word.lower()
    return w[:-2] if w.endswith("'s") else w.removesuffix("'")


def _base(tag: str) -> str:
    return _BROWN_SUFFIXES.sub("", tag)


@dataclass
class _Span:
    start: int
    end: int  # exclusive
    words: list[str]
    connector: int | None = None  # index (in words) of the first of/on/and/the inside the name
    type: str | None = None

    @property
    def text(self) -> str:
        return " ".join(_key(w) for w in self.words)

    @property
    def head(self) -> str:
        """The last word before a connector (``House Committee on Revenue`` -> committee)."""
        return _key(self.words[-1 if self.connector is None else self.connector - 1])


def _is_title(word: str) -> bool:
    return _key(word).split("-")[0] in _TITLES


def _name_spans(sentence: Sequence[tuple[str, str]]) -> list[_Span]:
    """Candidate names: maximal runs of proper-noun tokens (``np``, ``nps``, ``np$``, ...) and of
    title-case tokens (``-tl``), joined by ``of``/``on``/``and``/``the`` inside a ``-tl`` run; a possessive
    ends a run, a title word (``Judge``) or a month splits one. A run is kept when it holds a proper
    noun or a place/organisation head or prefix (``Superior Court``, ``Cape Cod``)."""
    n = len(sentence)

    def name_token(k: int) -> bool:
        w, t = sentence[k]
        if _is_title(w) or (_base(t) in _NAME_BASES and _key(w) in _MONTHS):
            return False
        return _base(t) in _NAME_BASES or (t.endswith("-tl") and _base(t) in _TITLE_CASE_BASES and w[:1].isupper())

    spans: list[_Span] = []
    i = 0
    while i < n:
        if not name_token(i):
            i += 1
            continue
        j, connector = i, None
        while j + 1 < n and not sentence[j][0].endswith(("'s", "'")):
            if name_token(j + 1):
                j += 1
            elif (
                sentence[j + 1][1].endswith("-tl") and _base(sentence[j + 1][1]) in _CONNECTORS and j + 2 < n
                and name_token(j + 2) and sentence[j + 2][1].endswith("-tl")
            ):
                connector = j + 1 - i if connector is None else connector
                j += 2
            else:
                break
        words = [w for w, _ in sentence[i : j + 1]]
        span = _Span(i, j + 1, words, connector=connector)
        proper = any(_base(t) in _NAME_BASES for _, t in sentence[i : j + 1])
        heads = span.head in _ORG_HEADS or span.head in _LOC_HEADS or span.head in _MISC_HEADS or _key(words[0]) in _LOC_PREFIXES
        if proper or (len(words) > 1 and heads) or span.text in _ORGANIZATIONS:
            spans.append(span)
        i = j + 1
    return spans


def _rule_type(span: _Span, sentence: Sequence[tuple[str, str]], first_names: frozenset[str]) -> str | None:
    """The type that the span's own words and its left neighbour give, or None."""
    words, text, head = span.words, span.text, span.head
    if span.start > 0 and _is_title(sentence[span.start - 1][0]):
        return "PER"
    if text in _ORGANIZATIONS or (len(words) > 1 and head in _ORG_HEADS):
        return "ORG"
    if text in _LOCATIONS or text in _LOCATION_PHRASES or (len(words) > 1 and head in _LOC_HEADS) or (len(words) > 1 and _key(words[0]) in _LOC_PREFIXES):
        return "LOC"
    if text in _MISC or (len(words) > 1 and head in _MISC_HEADS) or all(_base(t).startswith("nps") for _, t in sentence[span.start : span.end]):
        return "MISC"
    if text in _PER_WORDS or text in first_names:
        return "PER"
    if len(words) > 1 and (_key(words[0]) in first_names or any(_INITIAL.match(w) for w in words) or _key(words[-1]) in ("jr.", "sr.")):
        return "PER"
    return None


def _harvest_first_names(docs: Sequence[Any]) -> frozenset[str]:
    """First names from the corpus itself: the first word of multi-word names after a title
    (``Judge James B. Parsons``) or with a middle initial (``Charles E. Hughes``), seen twice."""
    counts: Counter[str] = Counter()
    for d in docs:
        for s in d.sentences:
            for span in _name_spans(s):
                w = span.words
                titled = span.start > 0 and _is_title(s[span.start - 1][0])
                if len(w) > 1 and (titled or any(_INITIAL.match(x) for x in w[1:])) and not _INITIAL.match(w[0]):
                    counts[_key(w[0])] += 1
    known = _LOCATIONS | _MISC | _ORGANIZATIONS
    return frozenset(_FIRST_NAMES | {k for k, c in counts.items() if c >= 2 and k not in known and k not in _TITLES})


def _bio(n: int, spans: Iterable[_Span]) -> list[str]:
    tags = ["O"] * n
    for s in spans:
        tags[s.start] = f"B-{s.type}"
        for k in range(s.start + 1, s.end):
            tags[k] = f"I-{s.type}"
    return tags


def brown_ner_documents(path: str | Path = BROWN) -> list[list[Tagged]]:
    """The generated NER set: every Brown document's sentences in which each candidate name got a
    type, with BIO tags over PER, ORG, LOC and MISC (no randomness: the same every time).

    Names are the corpus' own proper-noun and title-case runs (:func:`_name_spans`). Each is
    typed, first rule that fires: PER after a title (``Gov.``, ``Mrs.``, ``Judge``); ORG for a
    known organisation or an organisation head (``... Committee``, ``... Co.``); LOC for a
    gazetteer place (states, countries, large cities) or a place head/prefix (``... County``,
    ``Cape ...``); MISC for nationalities, religions, parties, events (``... War``) and plural
    proper nouns (``Americans``); PER for a first name (a short list plus those the corpus shows
    after titles or before middle initials), a middle initial or ``Jr.``. Then names still
    untyped take the type they or their words have elsewhere in the same document (``Daniel``
    after ``Gov. Price Daniel``), then ``<person> of X`` and ``X , <state>`` make X a place, then
    the corpus-wide majority type of the same name, then of its words (seen typed at least twice,
    80% agreeing; a multi-word name only when all its words are persons' names).
    Sentences with a name left untyped, and headlines (``-hl`` tags), are dropped, so no name is
    ever tagged ``O`` by a gap in the rules.
    """
    docs = read_brown(path)
    first_names = _harvest_first_names(docs)
    parsed: list[list[tuple[list[tuple[str, str]], list[_Span]]]] = []
    corpus_types: dict[str, Counter[str]] = defaultdict(Counter)  # name -> its rule types
    word_types: dict[str, Counter[str]] = defaultdict(Counter)  # word -> types of the names it is (part of, for PER)
    for d in docs:
        sentences = [(s, _name_spans(s)) for s in d.sentences if s and not any(t.endswith("-hl") for _, t in s)]
        memory: dict[str, str] = {}
        for s, spans in sentences:
            for span in spans:
                span.type = _rule_type(span, s, first_names)
                if span.type is not None:
                    corpus_types[span.text][span.type] += 1
                    memory.setdefault(span.text, span.type)
                    if span.type == "PER":
                        for w in span.words:
                            if not _INITIAL.match(w) and _key(w) not in ("jr.", "sr."):
                                memory.setdefault(_key(w), "PER")
                                word_types[_key(w)]["PER"] += 1
                    elif len(span.words) == 1:
                        word_types[span.text][span.type] += 1
        for s, spans in sentences:
            for k, span in enumerate(spans):
                if span.type is None:
                    span.type = memory.get(span.text)
                if span.type is None and k > 0 and span.start >= 2 and s[span.start - 1][0] == "of" and spans[k - 1].end == span.start - 1 and spans[k - 1].type == "PER":
                    span.type = "LOC"
                if span.type is None and k + 1 < len(spans) and spans[k + 1].start == span.end + 1 and s[span.end][0] == "," and spans[k + 1].text in _STATE_NAMES:
                    span.type = "LOC"
        parsed.append(sentences)
    majority, word_majority = _majority(corpus_types), _majority(word_types)
    out: list[list[Tagged]] = []
    for sentences in parsed:
        kept: list[Tagged] = []
        for s, spans in sentences:
            for span in spans:
                if span.type is None:
                    span.type = majority.get(span.text)
                if span.type is None:  # every word known as a person's name word, or a one-word name known as one type
                    types = {word_majority.get(_key(w)) for w in span.words if not _INITIAL.match(w) and _key(w) not in ("jr.", "sr.")}
                    if len(span.words) == 1 or types == {"PER"}:
                        span.type = types.pop() if len(types) == 1 else None
            if all(span.type is not None for span in spans):
                kept.append(([w for w, _ in s], _bio(len(s), spans)))
        out.append(kept)
    return out


@lru_cache(maxsize=1)
def _brown_ner_cached(path: str) -> list[list[Tagged]]:
    return brown_ner_documents(path)  # 5 s on the whole corpus: once per process (callers do not modify it)


def _majority(counts: dict[str, Counter[str]], least: int = 2, share: float = 0.8) -> dict[str, str]:
    """The type of each key seen typed at least ``least`` times, ``share`` of them agreeing."""
    out = {}
    for key, c in counts.items():
        (best, n), total = c.most_common(1)[0], sum(c.values())
        if total >= least and n >= share * total:
            out[key] = best
    return out


def sample_ner_split(sentences: Sequence[Tagged], seed: int, negative_share: float = 0.25) -> list[Tagged]:
    """Every sentence with a name, and sentences without one drawn (seeded) so that they make
    about ``negative_share`` of the result (CoNLL-2003 has about a fifth); order kept."""
    positives = sum(any(t != "O" for t in tags) for _, tags in sentences)
    negatives = len(sentences) - positives
    keep = min(1.0, negative_share / (1 - negative_share) * positives / negatives) if negatives else 1.0
    rng = random.Random(seed)
    return [s for s in sentences if any(t != "O" for t in s[1]) or rng.random() < keep]


# --- file readers ---------------------------------------------------------------------------------
@dataclass
class TaggedSplit:
    """One split's sentences; ``lines`` (files only) holds each word's line number in ``path``."""

    sentences: list[Tagged]
    name: str
    path: str | None = None
    lines: list[list[int]] | None = None

    def where(self, i: int, j: int) -> str:
        """Where word ``j`` of sentence ``i`` comes from, for messages."""
        if self.path is not None and self.lines is not None:
            return f"{self.path}:{self.lines[i][j]}"
        return f"the {self.name} split, sentence {i + 1}"


def _open_text(path: str | Path, what: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{what} {path} does not exist: pass an existing file")
    return p.read_text(encoding="utf-8", errors="replace").splitlines()


def read_conll(path: str | Path, tag_column: int = -1, split: str = "train") -> TaggedSplit:
    """A CoNLL-2003 style file: ``token ... tag`` per line (whitespace-separated, the same number
    of columns on every line), a blank line between sentences, ``-DOCSTART-`` lines skipped;
    ``tag_column`` picks the tag (default: the last column)."""
    sentences: list[Tagged] = []
    lines: list[list[int]] = []
    words: list[str] = []
    tags: list[str] = []
    where: list[int] = []
    ncols: int | None = None
    first_line = 0

    def close() -> None:
        if words:
            sentences.append((words.copy(), tags.copy()))
            lines.append(where.copy())
        for part in (words, tags, where):
            part.clear()

    for number, line in enumerate(_open_text(path, f"--data.{split}_file"), 1):
        fields = line.split()
        if not fields:
            close()
            continue
        if fields[0] == "-DOCSTART-":
            close()
            continue
        if ncols is None:
            ncols, first_line = len(fields), number
            if ncols < 2:
                raise UserError(f"{path}:{number}: one column {line.strip()!r}: a CoNLL file has 'token ... tag' on each line")
            if not -ncols <= tag_column < ncols:
                raise UserError(f"--data.tag_column {tag_column} is outside the {ncols} columns of {path}")
        elif len(fields) != ncols:
            raise UserError(f"{path}:{number}: {len(fields)} columns where line {first_line} has {ncols}: every token line needs the same columns, 'token ... tag'")
        words.append(fields[0])
        tags.append(fields[tag_column])
        where.append(number)
    close()
    if not sentences:
        raise UserError(f"{path} holds no sentences: expected 'token ... tag' lines with a blank line between sentences")
    return TaggedSplit(sentences, split, str(path), lines)


CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def read_conllu(path: str | Path, tag_column: int | str = "upos", split: str = "train") -> TaggedSplit:
    """A CoNLL-U file: the words (FORM, column 2) and tags (UPOS, column 4, or ``tag_column``: a
    0-based index or a column name such as ``xpos``) of each sentence; comments, multiword
    token ranges (``1-2``) and empty nodes (``1.1``) are skipped."""
    if isinstance(tag_column, str):
        if tag_column.lower() not in CONLLU_COLUMNS:
            raise UserError(f"--data.tag_column {tag_column!r} is not a CoNLL-U column: choose from {', '.join(CONLLU_COLUMNS)}")
        col = CONLLU_COLUMNS.index(tag_column.lower())
    else:
        col = tag_column
        if not -10 <= col < 10:
            raise UserError(f"--data.tag_column {col} is outside CoNLL-U's 10 columns")
    sentences: list[Tagged] = []
    lines: list[list[int]] = []
    words: list[str] = []
    tags: list[str] = []
    where: list[int] = []

    def close() -> None:
        if words:
            sentences.append((words.copy(), tags.copy()))
            lines.append(where.copy())
        for part in (words, tags, where):
            part.clear()

    for number, line in enumerate(_open_text(path, f"--data.{split}_file"), 1):
        if not line.strip():
            close()
            continue
        if line.startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 10:
            raise UserError(f"{path}:{number}: {len(fields)} tab-separated columns, CoNLL-U has 10 (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC)")
        if "-" in fields[0] or "." in fields[0]:
            continue
        words.append(fields[1])
        tags.append(fields[col])
        where.append(number)
    close()
    if not sentences:
        raise UserError(f"{path} holds no sentences: expected CoNLL-U token lines with a blank line between sentences")
    return TaggedSplit(sentences, split, str(path), lines)


def read_hf_tagging(spec: str, word_column: str = "tokens", tag_column: str = "ner_tags") -> tuple[dict[str, TaggedSplit], list[str] | None]:
    """The splits of a Hugging Face dataset (``hf:<name>[:<config>]``, or ``hf:<a save_to_disk
    folder>``) and its tag names when the tags are a ``ClassLabel`` sequence (None: string tags)."""
    import datasets

    ds = load_splits(HubSpec.parse(spec, example="hf:conll2003"), lone=None)
    name = spec
    names: list[str] | None = None
    splits: dict[str, TaggedSplit] = {}
    for split in SPLITS:
        if split not in ds:
            continue
        d = ds[split]
        require_columns(d.column_names, {word_column: "word_column", tag_column: "tag_column"}, name, f" in its {split} split")
        feature = getattr(d.features[tag_column], "feature", None)
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
            sentences = [(list(w), [names[i] for i in t]) for w, t in zip(d[word_column], d[tag_column]) if len(w)]
        else:
            sentences = [(list(w), [str(x) for x in t]) for w, t in zip(d[word_column], d[tag_column]) if len(w)]
        splits[split] = TaggedSplit(sentences, split)
    for split in ("train", "validation"):
        if split not in splits:
            raise UserError(f"dataset {name!r} has no {split} split (splits: {', '.join(ds.keys())})")
    return splits, names


# --- labels ---------------------------------------------------------------------------------------
_BIO_TAG = re.compile(r"^[BIES]-.+")


def detect_scheme(tags: Iterable[str]) -> str:
    """``bio`` when every tag is ``O`` or ``B-``/``I-`` (also ``E-``/``S-``) prefixed, else ``plain``."""
    seen = set(tags)
    return "bio" if seen - {"O"} and all(t == "O" or _BIO_TAG.match(t) for t in seen) else "plain"


def label_set(tags: Iterable[str]) -> list[str]:
    """The label names for the tags seen in training: for BIO, ``O`` then each type's ``B-``,
    ``I-`` (always both), ``E-``, ``S-`` (when seen), types sorted; else the tags sorted."""
    seen = set(tags)
    if detect_scheme(seen) != "bio":
        return sorted(seen)
    types = sorted({t[2:] for t in seen if t != "O"})
    order = {"B": 0, "I": 1, "E": 2, "S": 3}
    out = ["O"]
    for ty in types:
        out += sorted({f"B-{ty}", f"I-{ty}"} | {t for t in seen if t[2:] == ty}, key=lambda t: order[t[0]])
    return out


def continuation_ids(label_names: Sequence[str]) -> list[int]:
    """For each label, the label of a word's later sub-tokens under ``label_all_subtokens``: the
    ``I-`` form of a ``B-`` label when there is one, else the label itself."""
    index = {n: i for i, n in enumerate(label_names)}
    return [index.get("I-" + n[2:], i) if n.startswith("B-") else i for i, n in enumerate(label_names)]


# --- encoding -------------------------------------------------------------------------------------
class TaggedExamples(Dataset):
    """Encoded sentences held as flat arrays: item ``i`` is a dict of ``input_ids`` (int32, with
    ``[CLS]``/``[SEP]``) and ``labels`` (int16, -100 where not scored)."""

    def __init__(self, ids: list[np.ndarray], labels: list[np.ndarray]) -> None:
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        self.offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.ids = np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32)
        self.labels = np.concatenate(labels).astype(np.int16) if labels else np.zeros(0, np.int16)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return {"input_ids": self.ids[a:b], "labels": self.labels[a:b]}


@dataclass
class EncodingStats:
    sentences: int = 0
    truncated_sentences: int = 0
    truncated_words: int = 0
    empty_words: int = 0  # words with no sub-token of their own, encoded as [UNK]


def encode_tagged(
    tok: Tokenizer,
    sentences: Sequence[Sequence[str]],
    label_ids: Sequence[Sequence[int]],
    max_seq_length: int = 128,
    continuation: Sequence[int] | None = None,
) -> tuple[TaggedExamples, EncodingStats]:
    """Tokenise pre-split ``sentences`` and place each word's label on its first sub-token (-100
    on the rest, or ``continuation[label]`` there when given), ``[CLS] ... [SEP]``, truncated to
    ``max_seq_length``. A word that yields no sub-token (only characters the normaliser drops)
    becomes ``[UNK]``, so every word keeps a scored position."""
    ids = special_ids(tok)
    cls_id, sep_id, unk_id = ids["[CLS]"], ids["[SEP]"], ids["[UNK]"]
    budget = max_seq_length - 2
    stats = EncodingStats(sentences=len(sentences))
    all_ids: list[np.ndarray] = []
    all_labels: list[np.ndarray] = []
    encodings = tok.encode_batch([list(s) for s in sentences], is_pretokenized=True, add_special_tokens=False)
    for enc, words, labels in zip(encodings, sentences, label_ids):
        token_ids = enc.ids
        word_ids = np.array([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
        n = len(words)
        if len(np.unique(word_ids[word_ids >= 0])) != n:  # a word without a piece: rebuild with [UNK] for it
            pieces: list[list[int]] = [[] for _ in range(n)]
            for t, w in zip(token_ids, word_ids):
                if w >= 0:
                    pieces[w].append(t)
            stats.empty_words += sum(not p for p in pieces)
            pieces = [p or [unk_id] for p in pieces]
            token_ids = [t for p in pieces for t in p]
            word_ids = np.array([w for w, p in enumerate(pieces) for _ in p], dtype=np.int64)
        lab = np.asarray(labels, dtype=np.int64)
        first = np.ones(len(word_ids), dtype=bool)
        first[1:] = word_ids[1:] != word_ids[:-1]
        out = lab[word_ids]
        if continuation is None:
            out = np.where(first, out, -100)
        else:
            out = np.where(first, out, np.asarray(continuation, dtype=np.int64)[out])
        if len(token_ids) > budget:
            stats.truncated_sentences += 1
            cut = int(word_ids[budget])  # the word of the first piece cut off
            stats.truncated_words += n - cut if first[budget] else n - cut - 1  # words whose first piece is cut off
            token_ids, out = token_ids[:budget], out[:budget]
        all_ids.append(np.array([cls_id, *token_ids, sep_id], dtype=np.int32))
        all_labels.append(np.concatenate([[-100], out, [-100]]).astype(np.int16))
    return TaggedExamples(all_ids, all_labels), stats


def TaggingCollator(pad_id: int, pad_to_multiple_of: int | None = 8, max_length: int | None = None) -> PadCollator:  # noqa: N802
    """Batches of int64 ``input_ids``, ``token_type_ids`` (zeros), ``attention_mask`` and ``labels``
    (-100 on padding) (:class:`~tfm.data.loading.PadCollator`)."""
    return PadCollator({"input_ids": pad_id, "labels": -100}, (), pad_to_multiple_of, max_length)


# --- the DataModule -------------------------------------------------------------------------------
class TokenClassificationDataModule(TextDataModule):
    """Batches for token classification (POS tagging, NER); see the module docstring for the
    sources and the batch contract (labels on each word's first sub-token).

    Args:
        source: ``brown_pos``, ``ner_brown``, ``conll``, ``conllu`` or ``hf:<name>[:<config>]``
            (a hub name or a ``save_to_disk`` folder).
        train_file: training file of a ``conll`` / ``conllu`` source.
        validation_file: validation file of a ``conll`` / ``conllu`` source.
        test_file: test file of a ``conll`` / ``conllu`` source (optional).
        tag_column: where the tag is: a 0-based column index for CoNLL (default -1, the last),
            an index or name for CoNLL-U (default ``upos``), a column name for ``hf:`` (default
            ``ner_tags``).
        word_column: the words' column of an ``hf:`` dataset.
        tokenizer: a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding one; default:
            train a WordPiece vocabulary on the training words (cached).
        vocab_size: size of the vocabulary to train.
        lowercase: lower-case (uncased) vocabulary to train; a loaded one keeps its own.
        max_seq_length: sub-tokens per sentence, ``[CLS]`` and ``[SEP]`` included; longer
            sentences are truncated (a warning counts the words cut off).
        label_all_subtokens: label every sub-token (``B-X`` -> ``I-X`` after the first piece),
            not only the first of each word.
        val_fraction: share of the Brown documents held out for validation (Brown sources).
        test_fraction: share of the Brown documents held out for testing (Brown sources).
        split_seed: seed of the Brown document split and of the ``ner_brown`` sampling.
        max_sentences: use only the first sentences of each split (quick runs).
        pad_to_multiple_of: pad a batch's length up to a multiple of this (None: the longest).
        cache_dir: cache folder (default ``$TFM_CACHE`` or ``~/.cache/tfm``).
        batch_size: training batch size per device; ``eval_batch_size`` defaults to it.
        num_workers: DataLoader worker processes (default: none on a CPU, up to 8 on a GPU).
        seed: data order seed.
    """

    def __init__(
        self,
        source: str = "brown_pos",
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        tag_column: int | str | None = None,
        word_column: str = "tokens",
        tokenizer: str | None = None,
        vocab_size: int = 8192,
        lowercase: bool = False,
        max_seq_length: int = 128,
        label_all_subtokens: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        max_sentences: int | None = None,
        pad_to_multiple_of: int | None = 8,
        cache_dir: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        files = {"train": train_file, "validation": validation_file, "test": test_file}
        if source in FILE_SOURCES:
            for split in ("train", "validation"):
                if files[split] is None:
                    raise UserError(f"--data.source {source} needs --data.{split}_file")
            for split, f in files.items():
                if f is not None and not Path(f).expanduser().is_file():
                    raise UserError(f"--data.{split}_file {f} does not exist: pass an existing {source} file")
        elif source in BUILTIN_SOURCES or source.startswith("hf:"):
            given = [f"--data.{s}_file" for s, f in files.items() if f is not None]
            if given:
                raise UserError(f"{', '.join(given)} is read only with --data.source conll or conllu, not {source}")
            if source.startswith("hf:"):
                HubSpec.parse(source, example="hf:conll2003")
            if source in BUILTIN_SOURCES and not BROWN.is_file():
                raise UserError(f"the bundled Brown corpus {BROWN} is missing: restore data/brown/ or pass another --data.source")
        else:
            raise UserError(f"--data.source {source!r} is unknown: choose brown_pos, ner_brown, conll, conllu or hf:<name>[:<config>]")
        if source == "conll" and tag_column is not None and not isinstance(tag_column, int):
            raise UserError(f"--data.tag_column {tag_column!r} must be a column index for CoNLL files (-1: the last)")
        if source.startswith("hf:") and tag_column is not None and not isinstance(tag_column, str):
            raise UserError(f"--data.tag_column {tag_column!r} must be a column name for a Hugging Face dataset (e.g. ner_tags)")
        for name, p in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= p < 1.0:
                raise UserError(f"--data.{name} {p} is not in [0, 1)")
        if val_fraction + test_fraction >= 1.0:
            raise UserError(f"--data.val_fraction + --data.test_fraction = {val_fraction + test_fraction} leaves no training documents")
        if max_seq_length < 3:
            raise UserError(f"--data.max_seq_length {max_seq_length} is too short: [CLS] word [SEP] needs at least 3")
        if max_sentences is not None and max_sentences < 1:
            raise UserError(f"--data.max_sentences {max_sentences} must be at least 1")
        if tokenizer is not None and not Path(tokenizer).expanduser().exists():
            raise UserError(f"--data.tokenizer {tokenizer} does not exist: pass a tokenizer.json, a vocab.txt or a folder holding one")
        self.source, self.files, self.tag_column, self.word_column = source, files, tag_column, word_column
        self.tokenizer_path, self.vocab_size, self.lowercase = tokenizer, vocab_size, lowercase
        self.max_seq_length, self.label_all_subtokens = max_seq_length, label_all_subtokens
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.max_sentences, self.pad_to_multiple_of = max_sentences, pad_to_multiple_of
        self.cache_dir = cache_root(cache_dir)
        self._splits: dict[str, TaggedSplit] | None = None
        self._label_names: list[str] | None = None
        self._tokenizer: Tokenizer | None = None
        self._encoded: dict[str, TaggedExamples] = {}

    # --- sentences ----------------------------------------------------------------------------------
    def _read(self) -> dict[str, TaggedSplit]:
        if self.source in BUILTIN_SOURCES:
            docs = brown_pos_documents() if self.source == "brown_pos" else _brown_ner_cached(str(BROWN))
            picks = split_documents(len(docs), self.val_fraction, self.test_fraction, self.split_seed)
            splits = {}
            for k, (split, indices) in enumerate(picks.items()):
                sentences = [s for i in indices for s in docs[i]]
                if self.source == "ner_brown":
                    sentences = sample_ner_split(sentences, mix_seed(self.split_seed, k))
                splits[split] = TaggedSplit(sentences, split)
            self._label_names = list(UNIVERSAL_TAGS if self.source == "brown_pos" else NER_TAGS)
        elif self.source.startswith("hf:"):
            splits, names = read_hf_tagging(self.source, self.word_column, self.tag_column or "ner_tags")
            self._label_names = names
        else:
            reader = read_conll if self.source == "conll" else read_conllu
            default = -1 if self.source == "conll" else "upos"
            col = self.tag_column if self.tag_column is not None else default
            splits = {split: reader(f, col, split) for split, f in self.files.items() if f is not None}  # type: ignore[operator]
        if self.max_sentences is not None:
            for s in splits.values():
                s.sentences = s.sentences[: self.max_sentences]
                s.lines = s.lines[: self.max_sentences] if s.lines is not None else None
        if not splits["train"].sentences:
            raise UserError(f"the training split of {self.source} holds no sentences")
        if self._label_names is None:
            self._label_names = label_set(t for _, tags in splits["train"].sentences for t in tags)
        known = set(self._label_names)
        for split in ("validation", "test"):
            if split not in splits:
                continue
            for i, (_, tags) in enumerate(splits[split].sentences):
                for j, t in enumerate(tags):
                    if t not in known:
                        raise UserError(
                            f"{splits[split].where(i, j)}: tag {t!r} of the {split} data is not among the training tags "
                            f"({', '.join(self._label_names)}): add it to the training data or fix the tag"
                        )
        return splits

    @property
    def splits(self) -> dict[str, TaggedSplit]:
        """The sentences of each split (read on first use)."""
        if self._splits is None:
            self._splits = self._read()
        return self._splits

    # --- labels (read by the CLI right after instantiation) -------------------------------------------
    @property
    def label_names(self) -> list[str]:
        """The tag of each label id (the model's ``label_names``)."""
        if self._label_names is None:
            if self.source == "brown_pos":
                self._label_names = list(UNIVERSAL_TAGS)
            elif self.source == "ner_brown":
                self._label_names = list(NER_TAGS)
            else:
                self.splits  # noqa: B018  (reading sets the labels)
        return list(self._label_names)  # type: ignore[arg-type]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def tag_scheme(self) -> str:
        """``bio`` when the labels are ``O``/``B-``/``I-`` tags (entity-level metrics), else ``plain``."""
        return detect_scheme(self.label_names)

    # --- the tokenizer ----------------------------------------------------------------------------
    def _corpus_key(self) -> str:
        if self.source in FILE_SOURCES:
            f = Path(self.files["train"]).expanduser().resolve()  # type: ignore[arg-type]
            where = f"{f}|{(st := f.stat()).st_size}|{st.st_mtime_ns}"
        elif self.source.startswith("hf:"):
            where = self.source
            p = Path(self.source[3:]).expanduser()
            if p.is_dir():
                where = f"hf:{p.resolve()}|{max(x.stat().st_mtime_ns for x in p.rglob('*'))}"
        else:
            where = f"{self.source}|{BROWN}|{BROWN.stat().st_size}|split={self.val_fraction},{self.test_fraction},{self.split_seed}"
        return f"tagging:{where}|col={self.tag_column}|max_sentences={self.max_sentences}"

    def train_tokenizer(self) -> Tokenizer:
        """A WordPiece vocabulary trained (once, then cached) on the training texts."""
        return wordpiece_tokenizer(
            lambda: (" ".join(words) for words, _ in self.splits["train"].sentences),
            self._corpus_key(),
            vocab_size=self.vocab_size,
            lowercase=self.lowercase,
            cache_dir=self.cache_dir / "tokenizers",
        )

    # --- encoded splits ---------------------------------------------------------------------------
    def encoded(self, split: str) -> TaggedExamples:
        """The split's sentences tokenised and labelled (built on first use)."""
        if split not in self._encoded:
            if split not in self.splits:
                what = "--data.test_file" if self.source in FILE_SOURCES else f"a {split} split in {self.source}"
                raise UserError(f"there is no {split} data: pass {what}")
            data = self.splits[split]
            index = {n: i for i, n in enumerate(self.label_names)}
            labels = [[index[t] for t in tags] for _, tags in data.sentences]
            continuation = continuation_ids(self.label_names) if self.label_all_subtokens else None
            examples, stats = encode_tagged(self.tokenizer, [w for w, _ in data.sentences], labels, self.max_seq_length, continuation)
            if stats.truncated_words:
                from lightning.pytorch.utilities import rank_zero_warn

                rank_zero_warn(
                    f"{stats.truncated_words} words in {stats.truncated_sentences} of the {stats.sentences} {split} sentences "
                    f"fall beyond --data.max_seq_length {self.max_seq_length} and are not scored"
                )
            self._encoded[split] = examples
        return self._encoded[split]

    def prepare_data(self) -> None:
        self.tokenizer  # noqa: B018  (trains and caches it once)

    def setup(self, stage: str) -> None:
        self.collator = TaggingCollator(self.pad_token_id, self.pad_to_multiple_of, self.max_seq_length)
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("test",)}.get(stage, ())
        for split in needed:
            self.encoded(split)

    @property
    def train_set(self) -> TaggedExamples:
        return self.encoded("train")

    @property
    def val_set(self) -> TaggedExamples:
        return self.encoded("validation")

    @property
    def test_set(self) -> TaggedExamples:
        return self.encoded("test")

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set, self.collator, collate=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set, self.collator, collate=True)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, self.collator, collate=True)

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, self.collator, collate=True)

    def describe(self) -> dict[str, Any]:
        """Sizes of the splits, for logs and the README."""
        return {split: len(s.sentences) for split, s in self.splits.items()} | {"labels": self.label_names, "tag_scheme": self.tag_scheme}

