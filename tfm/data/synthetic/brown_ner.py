"""The generated Brown NER set: real Brown sentences whose proper-noun spans are typed PER / ORG / LOC /
MISC by rules and word lists, with BIO tags (deterministic: the same every time)."""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..text import BROWN, Sentence, read_brown

Tagged = tuple[list[str], list[str]]  # the words of a sentence and their tags
_BROWN_SUFFIXES = re.compile(r"(?:-(?:tl|hl|nc|t|n))+$")  # title, headline, citation (-t, -n: typos in the corpus)


def base_tag(tag: str) -> str:
    """A Brown tag without its title / headline / citation suffixes (``np-tl`` -> ``np``)."""
    return _BROWN_SUFFIXES.sub("", tag)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Cues and word lists, compared in lower case (a possessive 's dropped). Deliberately short: the corpus' own tags
# find the names; these lists only type them.
_TITLES = _words(
    "mr. mrs. miss ms. mme. mlle. dr. gov. governor sen. senator rep. judge justice president vice-president mayor "
    "gen. general col. colonel capt. captain lt. lieutenant sgt. sergeant maj. major adm. admiral cmdr. rev. reverend "
    "msgr. father sister brother prof. professor secretary chairman king queen prince princess sir lady lord pope "
    "cardinal bishop archbishop sheriff commissioner ambassador premier chancellor dean coach uncle aunt mister saint")
_MONTHS = _words("january february march april may june july august september october november december jan. feb. "
                 "mar. apr. jun. jul. aug. sept. sep. oct. nov. dec.")
_ORG_HEADS = _words(
    "committee department association company co. corp. corporation inc. ltd. university college board court "
    "legislature senate congress council commission bureau administration party church club school union bank "
    "institute foundation society agency corps army navy league federation service office jury assembly conference "
    "hospital academy museum library laboratory laboratories railroad railway times post tribune journal herald press "
    "house ministry cabinet authority division industries airlines guard police fund trust seminary orchestra "
    "symphony fraternity brotherhood chamber exchange organization institution")
_LOC_HEADS = _words(
    "county city state river lake street st. avenue ave. road boulevard highway island islands isle mountain "
    "mountains hill hills park valley bay ocean sea gulf canal square harbor beach coast creek peninsula province "
    "territory falls springs canyon desert forest plaza bridge airport heights village town township region strait "
    "continent")
_LOC_PREFIXES = _words("cape mount mt. lake fort ft. port")
_STATES = (
    "alabama alaska arizona arkansas california colorado connecticut delaware florida georgia hawaii idaho illinois "
    "indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan minnesota mississippi missouri "
    "montana nebraska nevada ohio oklahoma oregon pennsylvania tennessee texas utah vermont virginia washington "
    "wisconsin wyoming ala. ariz. ark. calif. colo. conn. del. fla. ga. ill. ind. kan. kans. ky. la. md. mass. mich. "
    "minn. miss. mo. mont. neb. nev. n.h. n.j. n.m. n.y. n.c. n.d. okla. ore. pa. r.i. s.c. s.d. tenn. tex. va. vt. "
    "wash. wis. wyo. d.c.")
_LOCATIONS = _words(
    _STATES + " america europe asia africa australia antarctica england britain scotland ireland wales france "
    "germany italy spain portugal russia china japan india korea cuba mexico canada brazil argentina chile peru egypt "
    "israel greece turkey iran iraq poland hungary austria switzerland sweden norway denmark finland holland belgium "
    "netherlands laos vietnam formosa congo algeria berlin london paris rome moscow tokyo vienna geneva chicago "
    "boston dallas houston atlanta philadelphia detroit cleveland pittsburgh baltimore denver miami seattle "
    "providence manchester hollywood brooklyn manhattan harlem oxford cambridge jerusalem athens venice madrid peking "
    "havana u.s. u.s.a. usa u.s.s.r. ussr west east north south")
_LOCATION_PHRASES = frozenset({
    "new york", "new jersey", "new hampshire", "new mexico", "new orleans", "new england", "rhode island",
    "los angeles", "san francisco", "st. louis", "north carolina", "south carolina", "north dakota", "south dakota",
    "west virginia", "united states", "soviet union", "great britain", "latin america", "south america",
    "north america", "middle east", "far east", "west germany", "east germany", "red china", "kansas city",
    "salt lake city"})
_ORGANIZATIONS = _words("u.n. nato seato cia fbi nasa congress senate pentagon kremlin yankees dodgers giants")
_MISC = _words(
    "american americans english french german germans russian russians british italian italians chinese japanese "
    "soviet negro negroes jew jews christian christians catholic catholics protestant protestants baptist baptists "
    "methodist methodists democrat democrats republican republicans communist communists bible christmas easter "
    "mexican mexicans cuban cubans african africans european europeans latin greek greeks roman romans indian "
    "indians irish spanish dutch swedish norwegian scotch scots yankee southerners northerners westerners moslem "
    "moslems hindu buddhist gospel olympics")
_MISC_HEADS = _words("war act day prize award cup bowl series games festival plan amendment treaty doctrine code")
_PER_WORDS = _words("god christ jesus")
_FIRST_NAMES = _words(
    "john william george james thomas charles jack mike henry robert richard sam louis tom joe martin joseph david "
    "arthur frank edward walter carl alfred paul peter harry fred albert ralph harold eugene howard kenneth donald "
    "stephen steve philip phil dan daniel andrew michael francis lawrence leonard ray roy bob bill billy jim jimmy "
    "johnny eddie ed al ben lee mary anne ann elizabeth margaret helen alice jane susan ruth dorothy lucy linda kate "
    "rachel julia martha sarah emily grace nancy betty barbara joan jean eleanor catherine kitty laura")
_INITIAL = re.compile(r"^[A-Z]\.$")
_SUFFIXES = ("jr.", "sr.")
_STATE_NAMES = _words(_STATES)
_NAME_BASES = frozenset({"np", "nps", "np$", "nps$"})
_TITLE_CASE_BASES = _words("nn nns nn$ nns$ jj jjr jjs jjt jj$ vbg vbn od cd nr nrs nr$")  # content words of a -tl run
_CONNECTORS = frozenset({"in", "at", "cc"})
_HEADS = _ORG_HEADS | _LOC_HEADS | _MISC_HEADS


def _key(word: str) -> str:
    """A word's lookup form: lower case, a possessive ``'s`` / ``'`` dropped."""
    w = word.lower()
    return w[:-2] if w.endswith("'s") else w.removesuffix("'")


def _is_title(word: str) -> bool:
    return _key(word).split("-")[0] in _TITLES


@dataclass
class _Span:
    start: int
    end: int  # exclusive
    words: list[str]
    titled: bool  # after a title word (Gov., Mrs., Judge)
    connector: int | None = None  # index (in words) of the first of/on/and/the inside the name
    type: str | None = None

    @property
    def text(self) -> str:
        return " ".join(_key(w) for w in self.words)

    @property
    def head(self) -> str:
        """The last word before a connector (``House Committee on Revenue`` -> committee)."""
        return _key(self.words[-1 if self.connector is None else self.connector - 1])

    def name_keys(self) -> list[str]:
        """The keys of its words but initials and ``Jr.`` / ``Sr.``."""
        return [_key(w) for w in self.words if not _INITIAL.match(w) and _key(w) not in _SUFFIXES]


def _name_spans(sentence: Sentence) -> list[_Span]:
    """Candidate names: maximal runs of proper-noun tokens (``np``, ``nps``, ``np$``, ...) and of title-case tokens
    (``-tl``), joined by ``of``/``on``/``and``/``the`` inside a ``-tl`` run; a possessive ends a run, a title word
    (``Judge``) or a month splits one. A run is kept when it holds a proper noun or a place/organisation head or
    prefix (``Superior Court``, ``Cape Cod``)."""
    n = len(sentence)

    def name_token(k: int) -> bool:
        w, t = sentence[k]
        base = base_tag(t)
        if _is_title(w) or (base in _NAME_BASES and _key(w) in _MONTHS):
            return False
        return base in _NAME_BASES or (t.endswith("-tl") and base in _TITLE_CASE_BASES and w[:1].isupper())

    def joins(j: int) -> bool:  # a -tl connector at j + 1 between two name tokens of a -tl run
        return (sentence[j + 1][1].endswith("-tl") and base_tag(sentence[j + 1][1]) in _CONNECTORS and j + 2 < n
                and name_token(j + 2) and sentence[j + 2][1].endswith("-tl"))

    spans: list[_Span] = []
    i = next((k for k in range(n) if name_token(k)), n)
    while i < n:
        j, connector = i, None
        while j + 1 < n and not sentence[j][0].endswith(("'s", "'")):
            if name_token(j + 1):
                j += 1
            elif joins(j):
                connector = j + 1 - i if connector is None else connector
                j += 2
            else:
                break
        span = _Span(i, j + 1, [w for w, _ in sentence[i : j + 1]], i > 0 and _is_title(sentence[i - 1][0]), connector)
        proper = any(base_tag(t) in _NAME_BASES for _, t in sentence[i : j + 1])
        heads = span.head in _HEADS or _key(span.words[0]) in _LOC_PREFIXES
        if proper or (len(span.words) > 1 and heads) or span.text in _ORGANIZATIONS:
            spans.append(span)
        i = next((k for k in range(j + 1, n) if name_token(k)), n)
    return spans


def _rule_type(span: _Span, sentence: Sentence, first_names: frozenset[str]) -> str | None:
    """The type that the span's own words and its left neighbour give, or None."""
    words, text, head, first, several = span.words, span.text, span.head, _key(span.words[0]), len(span.words) > 1
    if span.titled:
        return "PER"
    if text in _ORGANIZATIONS or (several and head in _ORG_HEADS):
        return "ORG"
    if text in _LOCATIONS or text in _LOCATION_PHRASES or (several and (head in _LOC_HEADS or first in _LOC_PREFIXES)):
        return "LOC"
    plural = all(base_tag(t).startswith("nps") for _, t in sentence[span.start : span.end])
    if text in _MISC or (several and head in _MISC_HEADS) or plural:
        return "MISC"
    if text in _PER_WORDS or text in first_names:
        return "PER"
    if several and (first in first_names or any(_INITIAL.match(w) for w in words) or _key(words[-1]) in _SUFFIXES):
        return "PER"
    return None


def _placed(sentence: Sentence, prev: _Span | None, span: _Span, nxt: _Span | None) -> bool:
    """``<person> of X`` or ``X , <state>``: X is a place."""
    if prev is not None and prev.type == "PER" and prev.end + 1 == span.start and sentence[prev.end][0] == "of":
        return True
    return nxt is not None and span.end + 1 == nxt.start and sentence[span.end][0] == "," and nxt.text in _STATE_NAMES


def _harvest_first_names(spans: Iterable[_Span]) -> frozenset[str]:
    """First names from the corpus itself: the first word of multi-word names after a title (``Judge James B.
    Parsons``) or with a middle initial (``Charles E. Hughes``), seen twice."""
    counts = Counter(_key(s.words[0]) for s in spans if len(s.words) > 1 and not _INITIAL.match(s.words[0])
                     and (s.titled or any(_INITIAL.match(x) for x in s.words[1:])))
    known = _LOCATIONS | _MISC | _ORGANIZATIONS | _TITLES
    return frozenset(_FIRST_NAMES | {k for k, c in counts.items() if c >= 2 and k not in known})


def _majority(counts: dict[str, Counter[str]], least: int = 2, share: float = 0.8) -> dict[str, str]:
    """The type of each key seen typed at least ``least`` times, ``share`` of them agreeing."""
    tops = {key: (c.most_common(1)[0], c.total()) for key, c in counts.items()}
    return {key: best for key, ((best, n), total) in tops.items() if total >= least and n >= share * total}


def _bio(n: int, spans: Iterable[_Span]) -> list[str]:
    tags = ["O"] * n
    for s in spans:
        tags[s.start : s.end] = [f"B-{s.type}"] + [f"I-{s.type}"] * (s.end - s.start - 1)
    return tags


def brown_ner_documents(path: str | Path = BROWN) -> list[list[Tagged]]:
    """Every Brown document's sentences in which each candidate name (:func:`_name_spans`) got a type.

    Typing, first rule that fires: PER after a title; ORG for a known organisation or head (``... Committee``);
    LOC for a gazetteer place or a place head/prefix (``... County``, ``Cape ...``); MISC for nationalities,
    religions, parties, events (``... War``) and plural proper nouns; PER for a first name (a list plus those the
    corpus shows after titles or before middle initials), a middle initial or ``Jr.``. Then untyped names take the
    type they or their words have elsewhere in the document, then ``<person> of X`` and ``X , <state>`` make X a
    place, then the corpus-wide majority type of the name, then of its words (seen typed twice, 80% agreeing; a
    multi-word name only when all its words are persons' names). Sentences with a name left untyped, and headlines
    (``-hl`` tags), are dropped, so no name is ever tagged ``O`` by a gap in the rules.
    """
    docs = [[(s, _name_spans(s)) for s in d.sentences] for d in read_brown(path)]
    first_names = _harvest_first_names(span for d in docs for _, spans in d for span in spans)
    corpus_types: dict[str, Counter[str]] = defaultdict(Counter)  # name -> its rule types
    word_types: dict[str, Counter[str]] = defaultdict(Counter)  # word -> types of the names it is (part of, for PER)
    parsed = [[(s, spans) for s, spans in d if s and not any(t.endswith("-hl") for _, t in s)] for d in docs]
    for sentences in parsed:
        memory: dict[str, str] = {}
        for s, spans in sentences:
            for span in spans:
                span.type = _rule_type(span, s, first_names)
                if span.type is None:
                    continue
                corpus_types[span.text][span.type] += 1
                memory.setdefault(span.text, span.type)
                if span.type == "PER":
                    for k in span.name_keys():
                        memory.setdefault(k, "PER")
                        word_types[k]["PER"] += 1
                elif len(span.words) == 1:
                    word_types[span.text][span.type] += 1
        for s, spans in sentences:
            for prev, span, nxt in zip([None, *spans], spans, [*spans[1:], None]):
                span.type = span.type or memory.get(span.text)
                if span.type is None and _placed(s, prev, span, nxt):
                    span.type = "LOC"
    majority, word_majority = _majority(corpus_types), _majority(word_types)

    def typed(span: _Span) -> bool:
        """Types a span still untyped by the corpus-wide majority of its name, then of its words; False: none."""
        span.type = span.type or majority.get(span.text)
        if span.type is None and len(types := {word_majority.get(k) for k in span.name_keys()}) == 1 and (
                len(span.words) == 1 or types == {"PER"}):
            span.type = types.pop()
        return span.type is not None

    return [[([w for w, _ in s], _bio(len(s), spans)) for s, spans in d if all(typed(span) for span in spans)]
            for d in parsed]


@cache
def brown_ner_corpus() -> list[list[Tagged]]:
    """:func:`brown_ner_documents` of the bundled corpus, once per process (3 s; callers do not modify it)."""
    return brown_ner_documents(BROWN)


def sample_ner_split(sentences: Sequence[Tagged], seed: int, negative_share: float = 0.25) -> list[Tagged]:
    """Every sentence with a name, and sentences without one drawn (seeded) so that they make about
    ``negative_share`` of the result (CoNLL-2003 has about a fifth); order kept."""
    positives = sum(any(t != "O" for t in tags) for _, tags in sentences)
    negatives = len(sentences) - positives
    keep = min(1.0, negative_share / (1 - negative_share) * positives / negatives) if negatives else 1.0
    rng = random.Random(seed)
    return [s for s in sentences if any(t != "O" for t in s[1]) or rng.random() < keep]
