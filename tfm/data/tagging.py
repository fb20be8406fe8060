"""Token classification data (POS tagging, NER): readers, sub-token label alignment and the DataModule.

Batches: int64 ``input_ids``, ``token_type_ids``, ``attention_mask`` and ``labels`` ``(B, T)``. A word's label sits on
its first sub-token, -100 on the others, ``[CLS]``, ``[SEP]`` and padding, so the scored positions are the sentence's
words in order (:func:`tfm.metrics.entity_f1`); ``label_all_subtokens`` labels every sub-token (``B-X`` -> ``I-X``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .loading import PadCollator, mix_seed
from .sources import SPLITS, STAGE_SPLITS, HubSpec, load_splits, require_columns, text_digest
from .synthetic.brown_ner import Tagged, base_tag, brown_ner_corpus, sample_ner_split
from .text import BROWN, read_brown
from .tokenizers import TextDataModule, special_ids, wordpiece_tokenizer

UNIVERSAL_TAGS = ("NOUN", "VERB", "ADJ", "ADV", "PRON", "DET", "ADP", "NUM", "CONJ", "PRT", ".", "X")
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")  # CoNLL-2003's order
BUILTIN_LABELS = {"brown_pos": UNIVERSAL_TAGS, "ner_brown": NER_TAGS}
FILE_SOURCES = ("conll", "conllu")
CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
_BIO_TAG = re.compile(r"^[BIES]-.+")
# NLTK's universal_tagset/en-brown.map as rules on the base tag: 17 of the corpus' 1,161,192 tokens differ (rare
# contractions and genitives such as cd$, ap$, rb$); tests/data/test_tagging.py keeps that check.
_BROWN_BASE = {base: tag for tag, bases in {
    "NOUN": "nn nns np nps nr nrs pn", "CONJ": "cc", "NUM": "cd", "X": "nil", ".": ". , : ( ) -- `` '' '",
    "VERB": "vb vbd vbg vbn vbz md be bed bedz beg bem ben ber bez do dod doz hv hvd hvg hvn hvz",
    "ADJ": "jj jjr jjs jjt od ap",  # ap: many, other, next; od: first
    "ADV": "rb rbr rbt rn ql qlp wql wrb *",  # *: not, n't
    "ADP": "in cs",  # cs (subordinating conjunction) is ADP there
    "DET": "at dt dti dts dtx abx wdt pp$ wp$",  # pp$: his, their
    "PRON": "pps ppss ppo ppl ppls wps wpo pp$$",  # pp$$: mine, theirs
    "PRT": "to rp abn abl ex uh",  # abn: all, half; abl: quite; ex: there
}.items() for base in bases.split()}


@cache
def brown_to_universal(tag: str) -> str:
    """The universal tag of a raw Brown tag (``nn-tl`` -> ``NOUN``, ``fw-nn`` -> ``X``): suffixes dropped; a
    contraction ``a+b`` is ``a``'s tag when ``VERB`` or ``ADP``, else ``PRT``; a negated (``*``) or genitive (``$``)
    form takes its base's tag unless listed itself; foreign words (``fw-``) and unknown tags -> ``X``."""
    t = tag.lower()
    if t.startswith("fw-"):
        return "X"
    t = base_tag(t)
    if "+" in t:
        first = brown_to_universal(t.split("+", 1)[0])
        return first if first in ("VERB", "ADP") else "PRT"
    while len(t) > 1 and t not in _BROWN_BASE and t[-1] in "*$":
        t = t[:-1]
    return _BROWN_BASE.get(t, "X")


def brown_pos_documents(path: str | Path = BROWN) -> list[list[Tagged]]:
    """The Brown corpus' documents, each a list of sentences tagged with universal tags."""
    docs = read_brown(path)
    return [[([w for w, _ in s], [brown_to_universal(t) for _, t in s]) for s in d.sentences if s] for d in docs]


def split_documents(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Document indices of each split (sorted), deterministic for ``seed``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val, n_test = (max(1, round(n * f)) if f > 0 else 0 for f in (val_fraction, test_fraction))
    if n - n_val - n_test < 1:
        raise UserError(f"{n} documents are too few for validation and test splits: "
                        "lower --data.val_fraction/--data.test_fraction")
    a, b = n_val, n_val + n_test
    return {"train": sorted(order[b:]), "validation": sorted(order[:a]), "test": sorted(order[a:b])}


# --- readers --------------------------------------------------------------------------------------------------
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


def _read_sentences(path: str | Path, split: str, token: Callable[[int, str], tuple[str, str] | None], what: str,
                    ends: str | None = None) -> TaggedSplit:
    """A file of a token a line, a blank line (or one starting with ``ends``) between sentences; ``token(number,
    line)``: the line's ``(word, tag)``, or None for none."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--data.{split}_file {path} does not exist: pass an existing file")
    sentences: list[Tagged] = []
    lines: list[list[int]] = []
    text = enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
    for inside, group in groupby(text, lambda item: (fields := item[1].split()) != [] and fields[0] != ends):
        if inside and (items := [(n, *t) for n, line in group if (t := token(n, line)) is not None]):
            numbers, words, tags = map(list, zip(*items))
            sentences.append((words, tags))
            lines.append(numbers)
    if not sentences:
        raise UserError(f"{path} holds no sentences: expected {what} lines with a blank line between sentences")
    return TaggedSplit(sentences, split, str(path), lines)


def read_conll(path: str | Path, tag_column: int = -1, split: str = "train") -> TaggedSplit:
    """A CoNLL-2003 style file: ``token ... tag`` per line (the same columns on every line), a blank line between
    sentences, ``-DOCSTART-`` lines skipped; ``tag_column`` picks the tag (default: the last column)."""
    shape: list[int] = []  # the first token line's columns and number

    def token(number: int, line: str) -> tuple[str, str]:
        fields = line.split()
        if not shape:
            shape.extend((len(fields), number))
            if len(fields) < 2:
                raise UserError(f"{path}:{number}: one column {line.strip()!r}: "
                                "a CoNLL file has 'token ... tag' on each line")
            if not -len(fields) <= tag_column < len(fields):
                raise UserError(f"--data.tag_column {tag_column} is outside the {len(fields)} columns of {path}")
        elif len(fields) != shape[0]:
            raise UserError(f"{path}:{number}: {len(fields)} columns where line {shape[1]} has {shape[0]}: "
                            "every token line needs the same columns, 'token ... tag'")
        return fields[0], fields[tag_column]

    return _read_sentences(path, split, token, "'token ... tag'", ends="-DOCSTART-")


def read_conllu(path: str | Path, tag_column: int | str = "upos", split: str = "train") -> TaggedSplit:
    """A CoNLL-U file: FORM and UPOS (or ``tag_column``, an index or a name such as ``xpos``) of each word; comments,
    multiword ranges (``1-2``) and empty nodes (``1.1``) skipped."""
    if isinstance(tag_column, str) and tag_column.lower() not in CONLLU_COLUMNS:
        raise UserError(f"--data.tag_column {tag_column!r} is not a CoNLL-U column: "
                        f"choose from {', '.join(CONLLU_COLUMNS)}")
    col = CONLLU_COLUMNS.index(tag_column.lower()) if isinstance(tag_column, str) else tag_column
    if not -10 <= col < 10:
        raise UserError(f"--data.tag_column {col} is outside CoNLL-U's 10 columns")

    def token(number: int, line: str) -> tuple[str, str] | None:
        if line.startswith("#"):
            return None
        if len(fields := line.split("\t")) != 10:
            raise UserError(f"{path}:{number}: {len(fields)} tab-separated columns, "
                            "CoNLL-U has 10 (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC)")
        return None if "-" in fields[0] or "." in fields[0] else (fields[1], fields[col])

    return _read_sentences(path, split, token, "CoNLL-U token")


def read_hf_tagging(spec: str, word_column: str = "tokens",
                    tag_column: str = "ner_tags") -> tuple[dict[str, TaggedSplit], list[str] | None]:
    """The splits of a Hugging Face dataset (``hf:<name>[:<config>]`` or a ``save_to_disk`` folder) and its tag names
    when the tags are a ``ClassLabel`` sequence (None: string tags)."""
    import datasets  # 0.35 s to import: only when a dataset is read

    ds = load_splits(HubSpec.parse(spec, example="hf:conll2003"), lone=None)
    names: list[str] | None = None
    splits: dict[str, TaggedSplit] = {}
    for split in (s for s in SPLITS if s in ds):
        d = ds[split]
        require_columns(d.column_names, {word_column: "word_column", tag_column: "tag_column"}, spec,
                        f" in its {split} split")
        feature = getattr(d.features[tag_column], "feature", None)
        classes = feature.names if isinstance(feature, datasets.ClassLabel) else None
        names = names if classes is None else list(classes)
        tag: Callable[[Any], str] = str if classes is None else classes.__getitem__
        rows = zip(d[word_column], d[tag_column])
        splits[split] = TaggedSplit([(list(w), [tag(i) for i in t]) for w, t in rows if len(w)], split)
    if missing := [s for s in ("train", "validation") if s not in splits]:
        raise UserError(f"dataset {spec!r} has no {missing[0]} split (splits: {', '.join(ds.keys())})")
    return splits, names


# --- labels and encoding --------------------------------------------------------------------------------------
def detect_scheme(tags: Iterable[str]) -> str:
    """``bio`` when every tag is ``O`` or ``B-``/``I-`` (also ``E-``/``S-``) prefixed, else ``plain``."""
    seen = set(tags)
    return "bio" if seen - {"O"} and all(t == "O" or _BIO_TAG.match(t) for t in seen) else "plain"


def label_set(tags: Iterable[str]) -> list[str]:
    """The label names of the training tags: for BIO, ``O`` then each type's ``B-``, ``I-`` (always both), ``E-``,
    ``S-`` (when seen), types sorted; else the tags sorted."""
    seen = set(tags)
    if detect_scheme(seen) != "bio":
        return sorted(seen)
    types = sorted({t[2:] for t in seen if t != "O"})
    by_type = ({f"B-{ty}", f"I-{ty}"} | {t for t in seen if t[2:] == ty} for ty in types)
    return ["O", *(t for tags in by_type for t in sorted(tags, key=lambda t: "BIES".index(t[0])))]


def continuation_ids(label_names: Sequence[str]) -> list[int]:
    """Each label's id on a word's later sub-tokens (``label_all_subtokens``): a ``B-`` label's ``I-`` form, if any."""
    index = {n: i for i, n in enumerate(label_names)}
    return [index.get("I-" + n[2:], i) if n.startswith("B-") else i for i, n in enumerate(label_names)]


class TaggedExamples(Dataset):
    """Encoded sentences as flat arrays: item ``i`` is a dict of ``input_ids`` (int32, ``[CLS] ... [SEP]``) and
    ``labels`` (int16, -100 where not scored)."""

    def __init__(self, ids: list[np.ndarray], labels: list[np.ndarray]) -> None:
        self.offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids], dtype=np.int64)]).astype(np.int64)
        self.ids = np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32)
        self.labels = np.concatenate(labels).astype(np.int16) if labels else np.zeros(0, np.int16)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return {"input_ids": self.ids[a:b], "labels": self.labels[a:b]}


@dataclass
class EncodingStats:
    truncated_sentences: int = 0
    truncated_words: int = 0  # words whose first sub-token is cut off
    empty_words: int = 0  # words with no sub-token of their own, encoded as [UNK]


def encode_tagged(tok: Tokenizer, sentences: Sequence[Sequence[str]], label_ids: Sequence[Sequence[int]],
                  max_seq_length: int = 128, continuation: Sequence[int] | None = None,
                  ) -> tuple[TaggedExamples, EncodingStats]:
    """Pre-split ``sentences`` tokenised in one batch, each word's label on its first sub-token (-100 on the rest, or
    ``continuation[label]``), ``[CLS] ... [SEP]``, truncated to ``max_seq_length``. A word without a sub-token
    (only characters the normaliser drops) becomes ``[UNK]``: every word keeps a scored position."""
    special = special_ids(tok)
    budget, stats = max_seq_length - 2, EncodingStats()
    later = None if continuation is None else np.asarray(continuation, dtype=np.int64)
    ids, labels = [], []
    encodings = tok.encode_batch([list(s) for s in sentences], is_pretokenized=True, add_special_tokens=False)
    for enc, n, word_labels in zip(encodings, map(len, sentences), label_ids):
        token_ids, word_ids = np.array(enc.ids, dtype=np.int64), np.array(enc.word_ids, dtype=np.int64)
        pieces = np.bincount(word_ids, minlength=n)
        if (empty := np.flatnonzero(pieces == 0)).size:
            at = np.cumsum(pieces)[empty]
            token_ids, word_ids = np.insert(token_ids, at, special["[UNK]"]), np.insert(word_ids, at, empty)
            stats.empty_words += len(empty)
        first = np.diff(word_ids, prepend=-1) != 0
        out = np.asarray(word_labels, dtype=np.int64)[word_ids]
        out = np.where(first, out, -100 if later is None else later[out])
        if len(token_ids) > budget:
            stats.truncated_sentences += 1
            stats.truncated_words += n - int(word_ids[budget]) - (0 if first[budget] else 1)
            token_ids, out = token_ids[:budget], out[:budget]
        ids.append(np.concatenate([[special["[CLS]"]], token_ids, [special["[SEP]"]]]).astype(np.int32))
        labels.append(np.concatenate([[-100], out, [-100]]).astype(np.int16))
    return TaggedExamples(ids, labels), stats


# --- the DataModule -------------------------------------------------------------------------------------------
class TokenClassificationDataModule(TextDataModule):
    """Batches for token classification (POS tagging, NER): see the module docstring.

    Args:
        source: ``brown_pos`` (Brown's tags as the 12 universal tags: :func:`brown_to_universal`), ``ner_brown``
            (:mod:`tfm.data.synthetic.brown_ner`), ``conll``, ``conllu`` or ``hf:<name>[:<config>]`` (or a folder).
        train_file: training file of a ``conll`` / ``conllu`` source.
        validation_file: validation file of a ``conll`` / ``conllu`` source.
        test_file: test file of a ``conll`` / ``conllu`` source (optional).
        tag_column: the tag's column: an index for CoNLL (default -1, the last), an index or name for CoNLL-U
            (default ``upos``), a name for ``hf:`` (default ``ner_tags``).
        word_column: the words' column of an ``hf:`` dataset.
        tokenizer: a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding one (default: trained, cached).
        vocab_size: size of the vocabulary to train.
        lowercase: lower-case (uncased) vocabulary to train; a loaded one keeps its own.
        max_seq_length: sub-tokens per sentence with ``[CLS]`` and ``[SEP]``; longer ones are truncated, with a warning.
        label_all_subtokens: label every sub-token (``B-X`` -> ``I-X`` after the first piece), not only the first.
        val_fraction: share of the Brown documents held out for validation (Brown sources).
        test_fraction: share of the Brown documents held out for testing (Brown sources).
        split_seed: seed of the Brown document split and of the ``ner_brown`` sampling.
        max_sentences: use only the first sentences of each split (quick runs).
        **kwargs: ``cache_dir``, ``pad_to_multiple_of`` (:class:`~tfm.data.tokenizers.TextDataModule`), ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``seed`` (:class:`~tfm.data.loading.ResumableDataModule`).
    """

    def __init__(
        self, source: str = "brown_pos", train_file: str | None = None, validation_file: str | None = None,
        test_file: str | None = None, tag_column: int | str | None = None, word_column: str = "tokens",
        tokenizer: str | None = None, vocab_size: int = 8192, lowercase: bool = False, max_seq_length: int = 128,
        label_all_subtokens: bool = False, val_fraction: float = 0.1, test_fraction: float = 0.1, split_seed: int = 0,
        max_sentences: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        files, hub = {"train": train_file, "validation": validation_file, "test": test_file}, source.startswith("hf:")
        on_files, given = source in FILE_SOURCES, [f"--data.{s}_file" for s, f in files.items() if f is not None]
        needed = [f"--data.{s}_file" for s in ("train", "validation") if files[s] is None]
        for mistake, message in (
            (on_files and needed, f"--data.source {source} needs {''.join(needed[:1])}"),
            *((on_files and f is not None and not Path(f).expanduser().is_file(),
               f"--data.{s}_file {f} does not exist: pass an existing {source} file") for s, f in files.items()),
            (not on_files and source not in BUILTIN_LABELS and not hub, (f"--data.source {source!r} is unknown: "
             "choose brown_pos, ner_brown, conll, conllu or hf:<name>[:<config>]")),
            (not on_files and given,
             f"{', '.join(given)} is read only with --data.source conll or conllu, not {source}"),
            (source in BUILTIN_LABELS and not BROWN.is_file(),
             f"the bundled Brown corpus {BROWN} is missing: restore data/brown/ or pass another --data.source"),
            (source == "conll" and tag_column is not None and not isinstance(tag_column, int),
             f"--data.tag_column {tag_column!r} must be a column index for CoNLL files (-1: the last)"),
            (hub and tag_column is not None and not isinstance(tag_column, str),
             f"--data.tag_column {tag_column!r} must be a column name for a Hugging Face dataset (e.g. ner_tags)"),
            *((not 0.0 <= p < 1.0, f"--data.{name} {p} is not in [0, 1)")
              for name, p in (("val_fraction", val_fraction), ("test_fraction", test_fraction))),
            (val_fraction + test_fraction >= 1.0, (f"--data.val_fraction + --data.test_fraction = "
             f"{val_fraction + test_fraction} leaves no training documents")),
            (max_seq_length < 3,
             f"--data.max_seq_length {max_seq_length} is too short: [CLS] word [SEP] needs at least 3"),
            (max_sentences is not None and max_sentences < 1,
             f"--data.max_sentences {max_sentences} must be at least 1"),
            (tokenizer is not None and not Path(tokenizer).expanduser().exists(), (f"--data.tokenizer {tokenizer} "
             "does not exist: pass a tokenizer.json, a vocab.txt or a folder holding one")),
        ):
            if mistake:
                raise UserError(message)
        if hub:
            HubSpec.parse(source, example="hf:conll2003")
        self.source, self.files, self.tag_column, self.word_column = source, files, tag_column, word_column
        self.tokenizer_path, self.vocab_size, self.lowercase = tokenizer, vocab_size, lowercase
        self.max_seq_length, self.label_all_subtokens = max_seq_length, label_all_subtokens
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.max_sentences = max_sentences
        self._label_names: list[str] | None = list(BUILTIN_LABELS[source]) if source in BUILTIN_LABELS else None
        self._encoded: dict[str, TaggedExamples] = {}

    @cached_property
    def splits(self) -> dict[str, TaggedSplit]:
        """The sentences of each split (read on first use)."""
        splits: dict[str, TaggedSplit] = {}
        if self.source in BUILTIN_LABELS:
            ner = self.source == "ner_brown"
            docs = brown_ner_corpus() if ner else brown_pos_documents()
            picks = split_documents(len(docs), self.val_fraction, self.test_fraction, self.split_seed)
            for k, (split, indices) in enumerate(picks.items()):
                sentences = [s for i in indices for s in docs[i]]
                sentences = sample_ner_split(sentences, mix_seed(self.split_seed, k)) if ner else sentences
                splits[split] = TaggedSplit(sentences, split)
        elif self.source.startswith("hf:"):
            tag_column = str(self.tag_column or "ner_tags")  # a str: checked in __init__
            splits, self._label_names = read_hf_tagging(self.source, self.word_column, tag_column)
        else:
            reader, default = (read_conll, -1) if self.source == "conll" else (read_conllu, "upos")
            column = default if self.tag_column is None else self.tag_column
            splits = {s: reader(f, column, s) for s, f in self.files.items() if f is not None}  # type: ignore[operator]
        for s in splits.values():
            s.sentences, s.lines = s.sentences[: self.max_sentences], s.lines and s.lines[: self.max_sentences]
        if not splits["train"].sentences:
            raise UserError(f"the training split of {self.source} holds no sentences")
        if self._label_names is None:
            self._label_names = label_set(t for _, tags in splits["train"].sentences for t in tags)
        known = set(self._label_names)
        for split in (s for s in ("validation", "test") if s in splits):
            bad = next(((i, j, t) for i, (_, tags) in enumerate(splits[split].sentences) for j, t in enumerate(tags)
                        if t not in known), None)
            if bad is not None:
                raise UserError(f"{splits[split].where(bad[0], bad[1])}: tag {bad[2]!r} of the {split} data is not "
                                f"among the training tags ({', '.join(self._label_names)}): "
                                "add it to the training data or fix the tag")
        return splits

    @property
    def label_names(self) -> list[str]:
        """The tag of each label id (the model's ``label_names``; read by the CLI right after instantiation)."""
        if self._label_names is None:
            self.splits  # noqa: B018  (reading sets the labels)
        return list(self._label_names)  # type: ignore[arg-type]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def tag_scheme(self) -> str:
        """``bio`` when the labels are ``O``/``B-``/``I-`` tags (entity-level metrics), else ``plain``."""
        return detect_scheme(self.label_names)

    def train_tokenizer(self) -> Tokenizer:
        """A WordPiece vocabulary trained (once, then cached under a digest of them) on the training sentences."""
        texts = [" ".join(words) for words, _ in self.splits["train"].sentences]
        return wordpiece_tokenizer(lambda: texts, f"tagging:{text_digest(texts)}", vocab_size=self.vocab_size,
                                   lowercase=self.lowercase, cache_dir=self.cache_dir / "tokenizers")

    def encoded(self, split: str) -> TaggedExamples:
        """The split's sentences tokenised and labelled (built on first use)."""
        if split not in self._encoded:
            if split not in self.splits:
                what = "--data.test_file" if self.source in FILE_SOURCES else f"a {split} split in {self.source}"
                raise UserError(f"there is no {split} data: pass {what}")
            sentences, index = self.splits[split].sentences, {n: i for i, n in enumerate(self.label_names)}
            continuation = continuation_ids(self.label_names) if self.label_all_subtokens else None
            labels = [[index[t] for t in tags] for _, tags in sentences]
            self._encoded[split], stats = encode_tagged(self.tokenizer, [w for w, _ in sentences], labels,
                                                        self.max_seq_length, continuation)
            if stats.truncated_words:
                rank_zero_warn(f"{stats.truncated_words} words in {stats.truncated_sentences} of the {len(sentences)} "
                               f"{split} sentences fall beyond --data.max_seq_length {self.max_seq_length} "
                               "and are not scored")
        return self._encoded[split]

    def prepare_data(self) -> None:
        self.tokenizer  # noqa: B018  (trains and caches it once)

    def setup(self, stage: str) -> None:
        self.collator = PadCollator({"input_ids": self.pad_token_id, "labels": -100}, (), self.pad_to_multiple_of,
                                    self.max_seq_length)
        for split in {**STAGE_SPLITS, "predict": ("test",)}.get(stage, ()):  # predict: the test split
            self.encoded(split)

    train_set = property(lambda self: self.encoded("train"))
    val_set = property(lambda self: self.encoded("validation"))
    test_set = property(lambda self: self.encoded("test"))

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set, self.collator, collate=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set, self.collator, collate=True)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, self.collator, collate=True)

    predict_dataloader = test_dataloader
