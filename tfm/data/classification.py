"""Text classification data for BERT sequence classification: the bundled fortunes (14 topics),
CSV / TSV / JSON / JSON-lines files, and Hugging Face datasets; single texts or text pairs;
single-label, multi-label and regression targets.

Texts are tokenized once per split with the ``tokenizers`` batch API and held in memory as flat
arrays (fortunes' 6,099 texts take about 0.2 s, so there is no disk cache to go stale); batches
are padded to their longest sequence. Nothing here is random except the split, drawn from
``split_seed``, and the training order, drawn by :class:`~tfm.data.loading.ResumableSampler`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import random
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .loading import PadCollator, mix_seed
from .sources import SPLIT_ALIASES, HubSpec, load_splits, require_columns, require_train
from .tokenizers import TextDataModule, cache_root, wordpiece_tokenizer

FORTUNES = Path(__file__).resolve().parents[2] / "data" / "fortunes" / "fortunes.tar.gz"
PROBLEM_TYPES = ("single_label", "multi_label", "regression")
SPLITS = ("train", "validation", "test")
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")
_OVERSTRIKE = re.compile(r"[^\x08]\x08")
_SEPARATOR = re.compile(r"^%[ \t]*(?:\r?\n|\Z)", re.MULTILINE)
ProblemType = Literal["single_label", "multi_label", "regression"]


# --- the bundled fortunes ---------------------------------------------------------------------------
def clean_fortune(text: str) -> str:
    """A fortune without terminal overstriking (``____^H^H^H^HBODY`` is an underlined ``BODY``)
    and without surrounding blank space."""
    while "\x08" in text:
        cleaned = _OVERSTRIKE.sub("", text)
        if cleaned == text:  # a backspace at the very start
            cleaned = text.replace("\x08", "")
        text = cleaned
    return text.strip()


def split_fortunes(text: str) -> list[str]:
    """The entries of one fortune file: ``%`` lines separate them (the last may lack one)."""
    return [e for e in (clean_fortune(part) for part in _SEPARATOR.split(text)) if e]


def read_fortunes(path: str | Path = FORTUNES) -> dict[str, list[str]]:
    """The fortunes of each topic (file name), topics in sorted order, from the tar.gz (as
    bundled in ``data/fortunes``) or a folder of fortune files."""
    return {k: list(v) for k, v in _read_fortunes(str(Path(path).expanduser().resolve()))}


@lru_cache(maxsize=2)
def _read_fortunes(path_str: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    path = Path(path_str)
    if not path.exists():
        raise UserError(f"fortunes {path} does not exist: restore data/fortunes/fortunes.tar.gz or pass another --data.source")
    files: dict[str, str] = {}
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file() and not f.name.startswith(".") and "." not in f.name:
                files[f.name] = f.read_text(encoding="utf-8", errors="replace")
    else:
        with tarfile.open(path) as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and not name.startswith(".") and "." not in name:
                    files[name] = tar.extractfile(member).read().decode("utf-8", errors="replace")  # type: ignore[union-attr]
    topics = tuple((name, tuple(split_fortunes(text))) for name, text in sorted(files.items()))
    topics = tuple(t for t in topics if t[1])
    if not topics:
        raise UserError(f"{path} holds no fortune files (topic files of texts separated by '%' lines)")
    return topics


# --- raw splits: texts and label values as read --------------------------------------------------------
@dataclass
class RawSplit:
    """One split as read: texts, optional second texts, label values (``None``: unlabelled), the
    place it came from and each row's number there (both for error messages), optional ids."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[Any] | None
    where: str
    rows: list[int] = field(default_factory=list)
    ids: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows = list(range(1, len(self.texts) + 1))

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, picks: Sequence[int]) -> RawSplit:
        return RawSplit(
            [self.texts[i] for i in picks],
            None if self.pairs is None else [self.pairs[i] for i in picks],
            None if self.labels is None else [self.labels[i] for i in picks],
            self.where,
            [self.rows[i] for i in picks],
            None if self.ids is None else [self.ids[i] for i in picks],
        )


def _open_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:  # type: ignore[operator]
            data = f.read()
    except OSError as e:
        raise UserError(f"could not read {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: save it as UTF-8 (CSV, TSV, JSON or JSON lines)") from None


def _table_kind(path: Path) -> str:
    """``csv``, ``tsv``, ``json``, ``jsonl`` or ``txt`` from the name (``.gz`` allowed)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1].lstrip(".") if suffixes else ""


def read_table(path: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)`` of a ``.csv``, ``.tsv`` (no quoting, as GLUE), ``.json`` (a list of
    objects, an object of columns, or JSON lines) or ``.jsonl`` file; ``.gz`` is decompressed.
    CSV values are strings; JSON values keep their types."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data file {path} does not exist: pass a CSV, TSV, JSON or JSON-lines file")
    kind = _table_kind(path)
    text = _open_text(path)
    if kind in ("csv", "tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",", quoting=csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL)
        try:
            rows = list(reader)
        except csv.Error as e:
            raise UserError(f"{path} is not a valid {kind.upper()} file: {e}") from None
        return [c for c in (reader.fieldnames or []) if c is not None], rows
    if kind not in ("json", "jsonl"):
        raise UserError(f"data file {path} has an unknown type {path.suffix!r}: use .csv, .tsv, .json or .jsonl")
    data: Any = None
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON lines in a .json file (as Hugging Face writes them)
    if data is None:
        data = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {n} is not valid JSON: {e.msg}") from None
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
            data = next(iter(lists.values()))  # {"data": [{...}, ...]}
        elif lists and len(lists) == len(data) and len({len(v) for v in lists.values()}) == 1:
            data = [dict(zip(lists, values)) for values in zip(*lists.values())]  # {"text": [...], "label": [...]}
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path} holds no table: write a list of objects, an object of equal-length columns, or one object per line")
    columns = list(data[0]) if data else []
    return columns, data


def _text_value(v: Any, where: str, row: int, column: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip():
        raise UserError(f"{where} row {row}: the text in column {column!r} is empty: fill it in or remove the row")
    return v if isinstance(v, str) else str(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))


def rows_to_split(
    columns: list[str], rows: list[dict[str, Any]], where: str, text_column: str, pair_column: str | None, label_column: str | None, id_column: str = "id"
) -> RawSplit:
    """Texts, pairs and labels (``label_column=None``: unlabelled) of a table; a missing column
    or an empty text is a :class:`UserError` naming the file and the row."""
    for col, option in ((text_column, "text_column"), (pair_column, "text_pair_column"), (label_column, "label_column")):
        if col is not None and col not in columns:
            raise UserError(f"{where} has no column {col!r} (columns: {', '.join(map(str, columns)) or 'none'}): set --data.{option}")
    if not rows:
        raise UserError(f"{where} has no rows")
    texts, pairs, labels = [], [] if pair_column else None, [] if label_column else None
    for n, r in enumerate(rows, 1):
        for col in (text_column, pair_column, label_column):
            if col is not None and col not in r:
                raise UserError(f"{where} row {n} has no {col!r} field: every row needs the same fields")
        texts.append(_text_value(r[text_column], where, n, text_column))
        if pairs is not None:
            pairs.append(_text_value(r[pair_column], where, n, pair_column))  # type: ignore[index]
        if labels is not None:
            labels.append(r[label_column])  # type: ignore[index]
    ids = [str(r.get(id_column, n)) for n, r in enumerate(rows, 1)] if id_column in columns else None
    return RawSplit(texts, pairs, labels, where, ids=ids)


def read_split_file(path: str | Path, text_column: str, pair_column: str | None, label_column: str | None) -> RawSplit:
    columns, rows = read_table(path)
    return rows_to_split(columns, rows, str(path), text_column, pair_column, label_column)


def read_predict_file(path: str | Path, text_column: str, pair_column: str | None) -> RawSplit:
    """Texts to predict: a ``.txt`` file of one text a line (a pair: two texts separated by a
    tab; blank lines are skipped, ids are line numbers) or a table with the text column(s)
    (ids: its ``id`` column, else row numbers)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--data.predict_file {path} does not exist: pass a text file (one text a line) or a CSV/TSV/JSON/JSONL file")
    if _table_kind(path) in ("csv", "tsv", "json", "jsonl"):
        split = read_split_file(path, text_column, pair_column, None)
        if split.ids is None:
            split.ids = [str(r) for r in split.rows]
        return split
    texts, pairs, rows = [], [] if pair_column else None, []
    for n, line in enumerate(_open_text(path).splitlines(), 1):
        if not line.strip():
            continue
        if pairs is not None:
            a, tab, b = line.partition("\t")
            if not tab or not a.strip() or not b.strip():
                raise UserError(f"{path} line {n} is not a text pair: write the two texts on one line, separated by a tab")
            texts.append(a)
            pairs.append(b)
        else:
            texts.append(line)
        rows.append(n)
    if not texts:
        raise UserError(f"--data.predict_file {path} holds no text")
    return RawSplit(texts, pairs, None, str(path), rows, ids=[str(r) for r in rows])


# --- labels -------------------------------------------------------------------------------------------
def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _is_int_like(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    return isinstance(v, str) and re.fullmatch(r"\s*[-+]?\d+\s*", v) is not None


def infer_problem_type(values: Sequence[Any]) -> str:
    """From label values: lists (or ``;``-joined names) -> ``multi_label``; floats (JSON floats,
    or number strings that are not all integers) -> ``regression``; else ``single_label``."""
    present = [v for v in values if not _missing(v)]
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in present):
        return "multi_label"
    if any(isinstance(v, (float, np.floating)) for v in present):
        return "regression"
    strings = [v for v in present if isinstance(v, str)]
    if strings and len(strings) == len(present):
        if all(_is_int_like(v) for v in strings):
            return "single_label"
        if all(_as_number(v) is not None for v in strings):
            return "regression"
        if any(";" in v for v in strings):
            return "multi_label"
    return "single_label"


def label_name(v: Any) -> str:
    """A single-label value as its name: ``3``, ``3.0`` and ``"3"`` are ``"3"``."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return str(v).strip()


def label_names_of(v: Any) -> list[str]:
    """A multi-label value as its names: a list, or a string of ``;``-separated names."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [label_name(x) for x in v if not _missing(x)]
    if _missing(v):  # no label applies
        return []
    return [n.strip() for n in str(v).split(";") if n.strip()]


def _sort_key(name: str) -> tuple:
    """Integer names in numeric order (``2`` before ``10``), then the rest alphabetically."""
    return (0, int(name), "") if _is_int_like(name) else (1, 0, name)


def _quotas(sizes: Sequence[int], fraction: float, caps: Sequence[int]) -> list[int]:
    """How many of each group go to a split of ``fraction``: ``round(n * fraction)`` in all (at
    least one), shared by largest remainder, none over its cap."""
    if fraction <= 0:
        return [0] * len(sizes)
    total = max(1, round(sum(sizes) * fraction))
    exact = [m * fraction for m in sizes]
    q = [min(int(e), c) for e, c in zip(exact, caps)]
    order = sorted(range(len(sizes)), key=lambda g: (-(exact[g] - int(exact[g])), g))
    while sum(q) < total and any(q[g] < caps[g] for g in order):
        for g in order:
            if sum(q) < total and q[g] < caps[g]:
                q[g] += 1
    return q


def stratified_split(keys: Sequence[Any] | None, n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Indices of ``train``/``validation``/``test``, deterministic for ``seed``. With ``keys``
    (single-label names) the split is stratified: each label's share of a split is its share
    of the data (to within one example) and every label keeps a training example; else a
    plain shuffled split. A split of a fraction above 0 gets at least one example. Each split
    comes in a seeded random order, so that any first batches (``limit_val_batches``) are a
    fair sample rather than one label's examples."""
    groups: dict[Any, list[int]] = {}
    for i in range(n):
        groups.setdefault(keys[i] if keys is not None else None, []).append(i)
    names = sorted(groups, key=lambda g: _sort_key(str(g)))
    idx = []
    for k, key in enumerate(names):
        members = list(groups[key])
        random.Random(mix_seed(seed, k)).shuffle(members)
        idx.append(members)
    sizes = [len(m) for m in idx]
    n_val = _quotas(sizes, val_fraction, [m - 1 for m in sizes])
    n_test = _quotas(sizes, test_fraction, [m - 1 - v for m, v in zip(sizes, n_val)])
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for members, v, t in zip(idx, n_val, n_test):
        out["validation"] += members[:v]
        out["test"] += members[v : v + t]
        out["train"] += members[v + t :]
    for j, split in enumerate(SPLITS):
        out[split].sort()
        random.Random(mix_seed(seed, len(names) + j)).shuffle(out[split])
    return out


# --- tokenized splits -------------------------------------------------------------------------------
class EncodedTexts(Dataset):
    """A tokenized split as flat arrays: item ``i`` is a dict of ``input_ids`` (int32),
    ``token_type_ids`` (int8) and, if labelled, ``labels`` (int64, float32 or a float32 row)."""

    def __init__(self, ids: np.ndarray, types: np.ndarray, offsets: np.ndarray, labels: np.ndarray | None) -> None:
        self.ids, self.types, self.offsets, self.labels = ids, types, offsets, labels

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b = self.offsets[i], self.offsets[i + 1]
        item = {"input_ids": self.ids[a:b], "token_type_ids": self.types[a:b]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def encode_texts(tok: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int, labels: np.ndarray | None = None) -> EncodedTexts:
    """``[CLS] text [SEP]`` or ``[CLS] text [SEP] pair [SEP]`` (token type 1 for the pair),
    truncated to ``max_length`` (longest segment first), with the ``tokenizers`` batch API."""
    tok = Tokenizer.from_str(tok.to_str())  # a copy: the caller's keeps its own settings
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="longest_first")
    encodings = tok.encode_batch(list(zip(texts, pairs)) if pairs is not None else list(texts))
    lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
    offsets = np.zeros(len(encodings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int32, total)
    types = np.fromiter(chain.from_iterable(e.type_ids for e in encodings), np.int8, total)
    return EncodedTexts(ids, types, offsets, labels)


def ClassificationCollator(pad_id: int, pad_to_multiple_of: int | None = 8, max_length: int | None = None) -> PadCollator:  # noqa: N802
    """Batches of int64 ``input_ids``, ``token_type_ids``, ``attention_mask`` and, when the samples
    have them, ``labels`` stacked as they are (:class:`~tfm.data.loading.PadCollator`)."""
    return PadCollator({"input_ids": pad_id, "token_type_ids": 0}, ["labels"], pad_to_multiple_of, max_length)


# --- the DataModule ---------------------------------------------------------------------------------
class TextClassificationDataModule(TextDataModule):
    """Texts (or text pairs) and labels for :class:`~tfm.tasks.SequenceClassification`.

    Batches are dicts of int64 ``input_ids``, ``token_type_ids`` (1: the second text of a pair)
    and ``attention_mask`` (1: a real token), ``(B, T)`` padded to the batch's longest, and
    ``labels``: int64 ``(B,)`` (single-label), float32 ``(B, num_labels)`` multi-hot
    (multi-label) or float32 ``(B,)`` (regression). ``predict`` batches have no ``labels``.

    Args:
        source: ``fortunes`` (bundled: 14 topics, split 80/10/10 stratified), a CSV / TSV / JSON /
            JSONL file (split the same way), a folder holding ``train.*`` (and ``validation.*`` /
            ``dev.*``, ``test.*``) files or written by ``datasets``' ``save_to_disk``, or
            ``hf:<name>[:<config>]`` (e.g. ``hf:glue:sst2``, with ``text_column=sentence``).
        train_file, validation_file, test_file: data files instead of ``source``. Without a
            validation file it is split off the training file; without a test file (or with one
            whose labels are all hidden, as GLUE's) the test split is the validation split; a
            training file alone is split 80/10/10 as a ``source`` file is.
        predict_file: texts to predict, one a line (pairs: tab-separated), or a table with the
            text column(s); default: the test split.
        text_column, text_pair_column: the text and the optional second text of a pair.
        label_column: the label: a name or integer (single-label), a list of names or a
            ``;``-separated string (multi-label), or a number (regression).
        problem_type: ``single_label``, ``multi_label`` or ``regression``; default: from the data
            (dataset features, else floats -> regression, lists -> multi-label, else single-label).
        tokenizer: a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding one (a
            pretraining run's folder); default: train a WordPiece vocabulary on the training
            texts (cached).
        vocab_size, lowercase: of the vocabulary to train.
        max_seq_length: tokens per example, ``[CLS]`` and ``[SEP]`` included; longer texts are
            truncated (a pair: the longer text first).
        pad_to_multiple_of: pad a batch's length up to a multiple of this (None: the longest).
        val_fraction, test_fraction: shares held out when a split is made from the training data.
        split_seed: seed of those splits.
        cache_dir: cache folder of trained tokenizers (default ``$TFM_CACHE`` or ``~/.cache/tfm``).
        batch_size: training batch size per device; ``eval_batch_size`` defaults to it.
        num_workers: DataLoader worker processes (default: none on a CPU, up to 8 on a GPU).
        seed: data order seed (runs resume with exactly the same batches).
    """

    def __init__(
        self,
        source: str = "fortunes",
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        problem_type: ProblemType | None = None,
        tokenizer: str | None = None,
        vocab_size: int = 8192,
        lowercase: bool = True,
        max_seq_length: int = 128,
        pad_to_multiple_of: int | None = 8,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        cache_dir: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if problem_type is not None and problem_type not in PROBLEM_TYPES:
            raise UserError(f"--data.problem_type {problem_type!r} is unknown: choose single_label, multi_label or regression (or leave it unset)")
        for name, p in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= p < 1.0:
                raise UserError(f"--data.{name} {p} is not in [0, 1)")
        if val_fraction + test_fraction >= 1.0:
            raise UserError(f"--data.val_fraction + --data.test_fraction = {val_fraction + test_fraction} leaves no training data")
        least = 5 if text_pair_column else 3
        if max_seq_length < least:
            raise UserError(f"--data.max_seq_length {max_seq_length} is too short: {'[CLS] A [SEP] B [SEP]' if text_pair_column else '[CLS] text [SEP]'} needs at least {least}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise UserError(f"--data.pad_to_multiple_of {pad_to_multiple_of} must be at least 1 (or null)")
        if train_file is None and (validation_file or test_file):
            raise UserError("--data.validation_file and --data.test_file need --data.train_file (labels and the vocabulary come from it)")
        for option, f in (("train_file", train_file), ("validation_file", validation_file), ("test_file", test_file)):
            if f is not None and not Path(f).expanduser().is_file():
                raise UserError(f"--data.{option} {f} does not exist: pass a CSV, TSV, JSON or JSON-lines file")
        if predict_file is not None and not Path(predict_file).expanduser().is_file():
            raise UserError(f"--data.predict_file {predict_file} does not exist: pass a text file (one text a line) or a CSV/TSV/JSON/JSONL file")
        if tokenizer is not None and not Path(tokenizer).expanduser().exists():
            raise UserError(f"--data.tokenizer {tokenizer} does not exist: pass a tokenizer.json, a vocab.txt or a folder holding one")
        self.source, self.train_file, self.validation_file, self.test_file = source, train_file, validation_file, test_file
        self.predict_file = predict_file
        self.text_column, self.text_pair_column, self.label_column = text_column, text_pair_column, label_column
        self._problem_type_arg = problem_type
        self.tokenizer_path, self.vocab_size, self.lowercase = tokenizer, vocab_size, lowercase
        self.max_seq_length, self.pad_to_multiple_of = max_seq_length, pad_to_multiple_of
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.cache_dir = cache_root(cache_dir)
        self._kind = self._check_source() if train_file is None else "files"
        self._raw: dict[str, RawSplit] | None = None
        self._labels: dict[str, np.ndarray | None] = {}
        self._problem_type: str | None = None
        self._label_names: list[str] | None = None
        self._tokenizer: Tokenizer | None = None
        self._encoded: dict[str, EncodedTexts] = {}
        self._predict_raw: RawSplit | None = None
        self._hidden_test: RawSplit | None = None

    def _check_source(self) -> str:
        """What ``source`` is (cheap, reads nothing): ``fortunes``, ``hf``, ``disk`` (a saved
        dataset), ``folder`` (of split files) or ``file``."""
        src = self.source
        if src == "fortunes":
            if not FORTUNES.is_file():
                raise UserError(f"the bundled fortunes {FORTUNES} are missing: restore data/fortunes/ or pass --data.source")
            return "fortunes"
        if src.startswith("hf:"):
            HubSpec.parse(src)
            return "hf"
        path = Path(src).expanduser()
        if path.is_dir():
            if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
                return "disk"
            if _split_files(path).get("train") is None:
                raise UserError(f"--data.source {src} is a folder without train.csv/.tsv/.json/.jsonl or a saved dataset (dataset_dict.json)")
            return "folder"
        if path.is_file():
            return "file"
        raise UserError(f"--data.source {src!r} does not exist: pass fortunes, a CSV/TSV/JSON/JSONL file, a folder of split files or a saved dataset, or hf:<name>[:<config>]")

    # --- reading and labels (on first use: the CLI reads num_labels before setup) -------------------
    def _read(self) -> tuple[dict[str, RawSplit], dict[str, Any]]:
        """The splits as read (``all``: one source to split here) and what the source says about
        its labels (``names``, ``problem_type``)."""
        kind, tc, pc, lc = self._kind, self.text_column, self.text_pair_column, self.label_column
        if kind == "fortunes":
            if pc is not None:
                raise UserError("the fortunes are single texts: unset --data.text_pair_column (or pass another --data.source)")
            topics = read_fortunes(FORTUNES)
            texts = [t for texts in topics.values() for t in texts]
            labels = [name for name, texts in topics.items() for _ in texts]
            return {"all": RawSplit(texts, None, labels, f"fortunes {FORTUNES}")}, {"problem_type": "single_label"}
        if kind in ("hf", "disk"):
            return self._read_hf()
        if kind == "file":
            return {"all": read_split_file(self.source, tc, pc, lc)}, {}
        files = _split_files(Path(self.source).expanduser()) if kind == "folder" else {
            "train": self.train_file, "validation": self.validation_file, "test": self.test_file
        }
        return {s: read_split_file(f, tc, pc, lc) for s, f in files.items() if f is not None}, {}

    def _read_hf(self) -> tuple[dict[str, RawSplit], dict[str, Any]]:
        ds = load_splits(HubSpec.parse(self.source) if self._kind == "hf" else self.source)
        return hf_splits(ds, self.source, self.text_column, self.text_pair_column, self.label_column)

    def _load(self) -> None:
        if self._raw is not None:
            return
        raw, info = self._read()
        if set(raw) == {"train"}:  # a training file alone is split as one source
            raw = {"all": raw["train"]}
        ptype = self._problem_type_arg
        if ptype is None:
            ptype = info.get("problem_type") or infer_problem_type(raw["all" if "all" in raw else "train"].labels or [])
        made: list[str] = []
        if "all" in raw:  # one source: split it here, stratified by label for single-label data
            whole = raw.pop("all")
            self._check_labelled(whole, "train", ptype)
            keys = [label_name(v) for v in whole.labels] if ptype == "single_label" else None  # type: ignore[union-attr]
            picks = stratified_split(keys, len(whole), self.val_fraction, self.test_fraction, self.split_seed)
            raw = {s: whole.select(p) for s, p in picks.items()}
            made = list(SPLITS)
        elif "validation" not in raw:
            train = raw["train"]
            self._check_labelled(train, "train", ptype)
            keys = [label_name(v) for v in train.labels] if ptype == "single_label" else None  # type: ignore[union-attr]
            picks = stratified_split(keys, len(train), self.val_fraction, 0.0, self.split_seed)
            raw.update(train=train.select(picks["train"]), validation=train.select(picks["validation"]))
            made = ["train", "validation"]
        if "test" in raw and (raw["test"].labels is None or all(_missing(v) for v in raw["test"].labels)):
            self._hidden_test = raw.pop("test")  # hidden labels (GLUE): predicted by default, not tested
        if "test" not in raw:
            raw["test"] = raw["validation"]  # no labelled test split: test on the validation split
        for split in SPLITS:
            self._check_labelled(raw[split], split, ptype)
            if not len(raw[split]):
                raise UserError(f"the {split} split of {self._describe()} is empty: use more data or raise --data.val_fraction/--data.test_fraction")
        self._problem_type = ptype
        self._label_names, self._labels = self._encode_labels(raw, ptype, info.get("names"), made)
        self._raw = raw

    def _describe(self) -> str:
        return self.train_file if self._kind == "files" else self.source  # type: ignore[return-value]

    def _check_labelled(self, split: RawSplit, name: str, ptype: str) -> None:
        if split.labels is None:
            raise UserError(f"the {name} split ({split.where}) has no labels: set --data.label_column")
        if ptype == "multi_label":
            return  # an empty label: none of the labels applies
        for row, v in zip(split.rows, split.labels):
            if _missing(v):
                raise UserError(f"{split.where} row {row}: the label in column {self.label_column!r} is empty ({name} split): fill it in or remove the row")

    def _encode_labels(self, raw: dict[str, RawSplit], ptype: str, names: list[str] | None, made: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
        """Label names and each split's label array. The names are the source's (a ClassLabel),
        else those of the training data (with the splits made from it), sorted; a label of a
        given validation/test split that training lacks is a :class:`UserError`."""
        known = ["train", *(s for s in made if s != "train")]
        if ptype == "regression":
            out = {}
            for split in SPLITS:
                s = raw[split]
                values = []
                for row, v in zip(s.rows, s.labels):  # type: ignore[arg-type]
                    x = _as_number(v)
                    if x is None or not math.isfinite(x):
                        raise UserError(f"{s.where} row {row}: label {v!r} is not a number (problem_type regression): fix it or set --data.problem_type")
                    values.append(x)
                out[split] = np.asarray(values, dtype=np.float32)
            return [self.label_column], out
        parse = label_name if ptype == "single_label" else label_names_of
        parsed = {split: [parse(v) for v in raw[split].labels] for split in SPLITS}  # type: ignore[union-attr]

        def flat(split: str) -> set[str]:
            return set(parsed[split]) if ptype == "single_label" else {n for ns in parsed[split] for n in ns}

        if names is None:
            names = sorted(set().union(*(flat(s) for s in known)), key=_sort_key)
            if ptype == "single_label" and len(names) < 2:
                raise UserError(f"the training data of {self._describe()} has only the label {names[0]!r}: a classifier needs at least two (or set --data.problem_type)")
            if ptype == "multi_label" and not names:
                raise UserError(f"the training data of {self._describe()} has no label names in column {self.label_column!r}")
        index = {n: i for i, n in enumerate(names)}
        out = {}
        for split in SPLITS:
            s = raw[split]
            for row, value in zip(s.rows, parsed[split]):
                for n in [value] if ptype == "single_label" else value:
                    if n not in index:
                        where = f"{s.where} row {row}"
                        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
                        raise UserError(f"label {n!r} of the {split} split ({where}) is not in the training data (labels: {shown}): fix the label or add training examples of it")
            if ptype == "single_label":
                out[split] = np.asarray([index[n] for n in parsed[split]], dtype=np.int64)
            else:
                hot = np.zeros((len(s), len(names)), dtype=np.float32)
                for i, ns in enumerate(parsed[split]):
                    hot[i, [index[n] for n in ns]] = 1.0
                out[split] = hot
        return list(names), out

    @property
    def raw_splits(self) -> dict[str, RawSplit]:
        """``train``, ``validation`` and ``test`` as read (texts, pairs, label values)."""
        self._load()
        return self._raw  # type: ignore[return-value]

    @property
    def problem_type(self) -> str:
        """``single_label``, ``multi_label`` or ``regression`` (given, or found in the data)."""
        self._load()
        return self._problem_type  # type: ignore[return-value]

    @property
    def label_names(self) -> list[str]:
        """The labels in id order (regression: the label column's name)."""
        self._load()
        return list(self._label_names)  # type: ignore[arg-type]

    @property
    def num_labels(self) -> int:
        """Outputs the model needs: the number of labels (regression: 1)."""
        return 1 if self.problem_type == "regression" else len(self.label_names)

    # --- the tokenizer ------------------------------------------------------------------------------
    def train_tokenizer(self) -> Tokenizer:
        """A WordPiece vocabulary trained (once, then cached) on the training texts."""
        train = self.raw_splits["train"]
        digest = hashlib.sha256()
        for t in chain(train.texts, train.pairs or []):
            digest.update(t.encode("utf-8", "surrogatepass") + b"\x00")
        return wordpiece_tokenizer(
            lambda: chain(train.texts, train.pairs or []),
            f"classification:{digest.hexdigest()}",
            vocab_size=self.vocab_size,
            lowercase=self.lowercase,
            cache_dir=self.cache_dir / "tokenizers",
        )

    # --- splits -------------------------------------------------------------------------------------
    def encoded(self, split: str) -> EncodedTexts:
        """A split tokenized (``train``, ``validation``, ``test`` or ``predict``), on first use."""
        if split not in self._encoded:
            if split == "predict":
                raw, labels = self.predict_raw, None
            else:
                raw, labels = self.raw_splits[split], self._labels[split]
            self._encoded[split] = encode_texts(self.tokenizer, raw.texts, raw.pairs, self.max_seq_length, labels)
        return self._encoded[split]

    @property
    def predict_raw(self) -> RawSplit:
        """The texts to predict: ``predict_file``'s, else the test split's (a test split with
        hidden labels, as GLUE's, rather than the validation split tested in its place)."""
        if self._predict_raw is None:
            if self.predict_file is not None:
                self._predict_raw = read_predict_file(self.predict_file, self.text_column, self.text_pair_column)
            else:
                self._load()
                test = self._hidden_test or self.raw_splits["test"]
                self._predict_raw = RawSplit(test.texts, test.pairs, None, test.where, test.rows, test.ids or [str(i) for i in range(len(test))])
        return self._predict_raw

    @property
    def predict_texts(self) -> list[str] | list[tuple[str, str]]:
        """The raw text of each predicted row, in order (pairs: ``(text, pair)`` tuples)."""
        raw = self.predict_raw
        return list(zip(raw.texts, raw.pairs)) if raw.pairs is not None else list(raw.texts)

    @property
    def predict_ids(self) -> list[str]:
        """A name for each predicted row: the file's ``id`` column, its line or row number, or the
        index in the test split."""
        return list(self.predict_raw.ids or [str(r) for r in self.predict_raw.rows])

    def prepare_data(self) -> None:
        self.tokenizer  # noqa: B018  (trains and caches the vocabulary once, before DDP ranks need it)

    def setup(self, stage: str) -> None:
        self.collator = ClassificationCollator(self.pad_token_id, self.pad_to_multiple_of, self.max_seq_length)
        wanted = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}.get(stage, SPLITS)
        for split in wanted:
            self.encoded(split)

    @property
    def train_set(self) -> EncodedTexts:
        return self.encoded("train")

    @property
    def val_set(self) -> EncodedTexts:
        return self.encoded("validation")

    @property
    def test_set(self) -> EncodedTexts:
        return self.encoded("test")

    @property
    def predict_set(self) -> EncodedTexts:
        return self.encoded("predict")

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set, self.collator, collate=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set, self.collator, collate=True)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, self.collator, collate=True)

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader(self.predict_set, self.collator, collate=True)


def _split_files(folder: Path) -> dict[str, Path | None]:
    """``train``/``validation``/``test`` files of a folder (``dev`` and ``val`` name validation)."""
    found: dict[str, Path | None] = {}
    for split, names in SPLIT_ALIASES.items():
        found[split] = next(
            (folder / f"{n}{ext}{gz}" for n in names for ext in TABLE_SUFFIXES for gz in ("", ".gz") if (folder / f"{n}{ext}{gz}").is_file()), None
        )
    return found


def hf_splits(ds: Any, name: str, text_column: str, pair_column: str | None, label_column: str) -> tuple[dict[str, RawSplit], dict[str, Any]]:
    """Splits of a ``datasets`` ``DatasetDict`` (from :func:`~tfm.data.sources.load_splits`). A ClassLabel
    label gives the names in its order (id -1, a hidden test label, is unlabelled); a sequence
    of them makes a multi-label problem; a float value a regression."""
    import datasets

    require_train(ds, name)
    picked = {s: (s if s in ds else None) for s in SPLITS}
    features = ds["train"].features
    require_columns(features, {text_column: "text_column", pair_column: "text_pair_column", label_column: "label_column"}, name)
    feature = features[label_column]
    info: dict[str, Any] = {}
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) and feature:  # [ClassLabel(...)]: the datasets list form
        inner = feature[0]
    class_names: list[str] | None = None
    if isinstance(feature, datasets.ClassLabel):
        class_names, info["problem_type"] = list(feature.names), "single_label"
    elif isinstance(inner, datasets.ClassLabel):
        class_names, info["problem_type"] = list(inner.names), "multi_label"
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        info["problem_type"] = "regression"
    if class_names is not None:
        info["names"] = class_names

    def name_of(i: Any) -> Any:
        return None if i is None or int(i) < 0 else class_names[int(i)]  # type: ignore[index]

    out: dict[str, RawSplit] = {}
    if picked["validation"] is None:
        picked.pop("validation")
    for split, key in picked.items():
        if key is None:
            continue
        d = ds[key]
        where = f"{name} [{key}]"
        missing = [c for c in (text_column, pair_column, label_column) if c is not None and c not in d.column_names]
        if missing:
            raise UserError(f"split {key!r} of dataset {name!r} has no column {missing[0]!r} (columns: {', '.join(d.column_names)})")
        texts = [_text_value(t, where, n, text_column) for n, t in enumerate(d[text_column], 1)]
        pairs = [_text_value(t, where, n, pair_column) for n, t in enumerate(d[pair_column], 1)] if pair_column else None
        labels = list(d[label_column])
        if class_names is not None:
            labels = [name_of(v) for v in labels] if info["problem_type"] == "single_label" else [[name_of(i) for i in v] for v in labels]
        out[split] = RawSplit(texts, pairs, labels, where)
    return out, info
