"""Text classification data for BERT: the bundled fortunes (14 topics), CSV / TSV / JSON / JSON-lines / Parquet / Arrow
files and Hugging Face datasets, read with ``datasets``; single texts or text pairs; single-label, multi-label and
regression targets. Held-out splits are drawn from ``split_seed``; batches are padded to their longest sequence."""

from __future__ import annotations

import math
import random
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pyarrow.compute as pc
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from ..errors import UserError
from .loading import ArrowRows, PadCollator, mix_seed
from .sources import (
    SPLIT_ALIASES,
    SPLITS,
    STAGE_SPLITS,
    TABLE_FILES,
    HubSpec,
    file_kind,
    is_saved_dataset,
    load_splits,
    read_records,
    require_columns,
    require_train,
    text_digest,
    text_lines,
)
from .tokenizers import TextDataModule, wordpiece_tokenizer

FORTUNES = Path(__file__).resolve().parents[2] / "data" / "fortunes" / "fortunes.tar.gz"
STREAM_TOKENIZER_ROWS = 100_000  # the head of a training stream that a vocabulary is trained on
_OVERSTRIKE = re.compile(r"[^\x08]\x08")
_SEPARATOR = re.compile(r"^%[ \t]*(?:\r?\n|\Z)", re.MULTILINE)
ProblemType = Literal["single_label", "multi_label", "regression"]
PROBLEM_TYPES = get_args(ProblemType)


def clean_fortune(text: str) -> str:
    """A fortune without terminal overstriking (``____^H^H^H^HBODY``: an underlined ``BODY``) and surrounding space."""
    while "\x08" in text:
        cleaned = _OVERSTRIKE.sub("", text)
        text = cleaned if cleaned != text else text.replace("\x08", "")  # a backspace at the very start
    return text.strip()


def split_fortunes(text: str) -> list[str]:
    """The entries of one fortune file: ``%`` lines separate them (the last may lack one)."""
    return [e for e in (clean_fortune(part) for part in _SEPARATOR.split(text)) if e]


def read_fortunes(path: str | Path = FORTUNES) -> dict[str, list[str]]:
    """The fortunes of each topic (file name), in sorted order, from a tar.gz (as bundled) or a folder of files."""
    return {k: list(v) for k, v in _read_fortunes(str(Path(path).expanduser().resolve()))}


@lru_cache(maxsize=2)
def _read_fortunes(path_str: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    path = Path(path_str)
    if not path.exists():
        raise UserError(f"fortunes {path} does not exist: restore data/fortunes/fortunes.tar.gz or pass another "
                        "--data.source")
    if path.is_dir():
        files = {f.name: f.read_bytes() for f in path.iterdir() if f.is_file()}
    else:
        with tarfile.open(path) as tar:
            files = {Path(m.name).name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore
    topics = tuple((name, texts) for name, data in sorted(files.items()) if "." not in name  # no hidden or .dat files
                   if (texts := tuple(split_fortunes(data.decode("utf-8", errors="replace")))))
    if not topics:
        raise UserError(f"{path} holds no fortune files (topic files of texts separated by '%' lines)")
    return topics


@dataclass
class RawSplit:
    """One split as read: texts, second texts, label values (``None``: unlabelled), where it came from and each row's
    number there (for error messages), ids."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[Any] | None
    where: str
    rows: list[int] = field(default_factory=list)
    ids: list[str] | None = None

    def __post_init__(self) -> None:
        self.rows = self.rows or list(range(1, len(self.texts) + 1))

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, picks: Sequence[int]) -> RawSplit:
        return RawSplit(**{k: v if k == "where" or v is None else [v[i] for i in picks] for k, v in vars(self).items()})


def read_table(path: str | Path, cache_dir: Path | None = None) -> dict[str, list[Any]]:
    """The columns of a table file (a CSV or TSV's values as strings, JSON's as they are)."""
    path = Path(path).expanduser()
    if file_kind(path) not in TABLE_FILES:
        raise UserError(f"data file {path} has an unknown type {path.suffix!r}: use .csv, .tsv, .json, .jsonl, "
                        ".parquet or .arrow")
    if not (rows := [record for *_, record in read_records(path, {}, cache_dir)]):
        raise UserError(f"{path} has no rows")
    return _columns(rows)


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {c: [row.get(c) for row in rows] for c in dict.fromkeys(k for row in rows for k in row)}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))


def _texts(values: list[Any], where: str, column: str) -> list[str]:
    if (row := next((n for n, v in enumerate(values, 1) if _missing(v)), None)) is not None:
        raise UserError(f"{where} row {row}: the text in column {column!r} is empty: fill it in or remove the row")
    return [str(v) for v in values]


def _class_name(v: Any, names: list[str]) -> Any:
    """A ClassLabel id (or a list of them) as its name; -1 (a hidden label) as None."""
    if isinstance(v, list):
        return [_class_name(i, names) for i in v]
    return None if v is None or int(v) < 0 else names[int(v)]


def read_split(ds: Any, where: str, text_column: str, pair_column: str | None, label_column: str | None,
               names: list[str] | None = None) -> RawSplit:
    """A ``Dataset``'s or columns' split (``names``: a ClassLabel's, for its ids; ids: an ``id`` column)."""
    have = list(getattr(ds, "column_names", ds))
    require_columns(have, {text_column: "text_column", pair_column: "text_pair_column", label_column: "label_column"},
                    where)
    if not len(texts := _texts(ds[text_column], where, text_column)):
        raise UserError(f"{where} has no rows")
    labels = None if label_column is None else ds[label_column]
    if names is not None and labels is not None:
        labels = [_class_name(v, names) for v in labels]
    pairs = None if pair_column is None else _texts(ds[pair_column], where, pair_column)
    return RawSplit(texts, pairs, labels, where, ids=[str(i) for i in ds["id"]] if "id" in have else None)


def label_info(feature: Any) -> dict[str, Any]:
    """A label feature's ``names`` (a ClassLabel, or a sequence of them: multi-label) and ``problem_type``."""
    import datasets  # 0.35 s to import: only when a dataset is read

    inner = feature[0] if isinstance(feature, list) and feature else getattr(feature, "feature", None)
    for f, ptype in ((feature, "single_label"), (inner, "multi_label")):
        if isinstance(f, datasets.ClassLabel):
            return {"names": list(f.names), "problem_type": ptype}
    return {"problem_type": "regression"} if isinstance(feature, datasets.Value) and "float" in feature.dtype else {}


def read_predict_file(path: str | Path, text_column: str, pair_column: str | None,
                      cache_dir: Path | None = None) -> RawSplit:
    """Texts to predict: a text file of one text a line (a pair: two texts separated by a tab; blank lines skipped; ids:
    line numbers) or a table with the text column(s) (ids: its ``id`` column, else row numbers)."""
    path = Path(path).expanduser()
    if file_kind(path) in TABLE_FILES:
        split = read_split(read_table(path, cache_dir), str(path), text_column, pair_column, None)
        split.ids = split.ids or [str(r) for r in split.rows]
        return split
    if not (lines := [(n, line) for n, line in text_lines(path) if line.strip()]):
        raise UserError(f"--data.predict_file {path} holds no text")
    rows, texts = [n for n, _ in lines], [line for _, line in lines]
    if pair_column is None:
        return RawSplit(texts, None, None, str(path), rows, [str(n) for n in rows])
    parts = [line.partition("\t") for line in texts]
    if bad := next((n for n, (a, tab, b) in zip(rows, parts) if not (tab and a.strip() and b.strip())), None):
        raise UserError(f"{path} line {bad} is not a text pair: write the two texts on one line, separated by a tab")
    return RawSplit([a for a, _, _ in parts], [b for _, _, b in parts], None, str(path), rows, [str(n) for n in rows])


def _split_files(folder: Path) -> dict[str, Path | None]:
    """``train``/``validation``/``test`` files of a folder (``dev`` and ``val`` name validation)."""
    names = {s: [f"{n}.{k}{gz}" for n in aliases for k in TABLE_FILES for gz in ("", ".gz")]
             for s, aliases in SPLIT_ALIASES.items()}
    return {s: next((folder / f for f in files if (folder / f).is_file()), None) for s, files in names.items()}


def _as_number(v: Any) -> float | None:
    numeric = isinstance(v, (str, int, float, np.integer, np.floating)) and not isinstance(v, bool)
    try:
        return float(v) if numeric else None
    except ValueError:
        return None


def _is_int_like(v: Any) -> bool:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return True
    return isinstance(v, str) and re.fullmatch(r"\s*[-+]?\d+\s*", v) is not None


def infer_problem_type(values: Sequence[Any]) -> str:
    """From label values: lists (or ``;``-joined names) -> ``multi_label``; floats (JSON floats, or number strings that
    are not all integers) -> ``regression``; else ``single_label``."""
    present = [v for v in values if not _missing(v)]
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in present):
        return "multi_label"
    if any(isinstance(v, (float, np.floating)) for v in present):
        return "regression"
    strings = [v for v in present if isinstance(v, str)]
    if strings and len(strings) == len(present) and not all(_is_int_like(v) for v in strings):
        if all(_as_number(v) is not None for v in strings):
            return "regression"
        if any(";" in v for v in strings):
            return "multi_label"
    return "single_label"


def label_name(v: Any) -> str:
    """A single-label value as its name: ``3``, ``3.0`` and ``"3"`` are ``"3"``."""
    whole = isinstance(v, (float, np.floating)) and float(v).is_integer()
    return str(int(v)) if whole or _is_int_like(v) and not isinstance(v, str) else str(v).strip()


def label_names_of(v: Any) -> list[str]:
    """A multi-label value as its names: a list, or a string of ``;``-separated names (empty: no label applies)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [label_name(x) for x in v if not _missing(x)]
    return [] if _missing(v) else [n.strip() for n in str(v).split(";") if n.strip()]


def _sort_key(name: str) -> tuple:
    """Integer names in numeric order (``2`` before ``10``), then the rest alphabetically."""
    return (0, int(name), "") if _is_int_like(name) else (1, 0, name)


def _quotas(sizes: Sequence[int], fraction: float, caps: Sequence[int]) -> list[int]:
    """Each group's share of ``round(n * fraction)`` (at least one) by largest remainder, none over its cap."""
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


def stratified_split(keys: Sequence[Any] | None, n: int, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, list[int]]:
    """Indices of ``train``/``validation``/``test`` for ``seed``, stratified by ``keys`` (single-label names; each
    label keeps a training example), at least one for a fraction above 0, each split in a seeded random order."""
    groups: dict[Any, list[int]] = {}
    for i in range(n):
        groups.setdefault(keys[i] if keys is not None else None, []).append(i)
    idx = [groups[key] for key in sorted(groups, key=lambda g: _sort_key(str(g)))]
    for k, members in enumerate(idx):
        random.Random(mix_seed(seed, k)).shuffle(members)
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
        random.Random(mix_seed(seed, len(idx) + j)).shuffle(out[split])
    return out


def encode_texts(batch: dict[str, list], tok: Tokenizer) -> dict[str, list]:
    """A batch's ``text`` (and ``pair``) as ``[CLS] text [SEP] (pair [SEP])`` ids and token types (1: the pair)."""
    encodings = tok.encode_batch(list(zip(batch["text"], batch["pair"])) if "pair" in batch else batch["text"])
    return {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings]}


class EncodedTexts(ArrowRows):
    """A tokenized split: int32 ``input_ids``, int8 ``token_type_ids``, ``labels`` (also all of them as one array)."""

    def __init__(self, ds: Any, columns: Sequence[str] | None = None) -> None:
        super().__init__(ds, columns)
        self.labels = ds.with_format("numpy", columns=["labels"])[:]["labels"] if "labels" in ds.column_names else None

    def lengths(self) -> np.ndarray:
        return pc.list_value_length(self.ds.data.column("input_ids")).to_numpy()


class TextClassificationDataModule(TextDataModule):
    """Texts (or text pairs) and labels for :class:`~tfm.tasks.SequenceClassification`.

    Batches: int64 ``input_ids``, ``token_type_ids`` (1: a pair's second text) and ``attention_mask``, ``(B, T)``
    padded to the longest, and ``labels``: int64 ``(B,)`` (single-label), float32 ``(B, num_labels)`` multi-hot
    (multi-label) or float32 ``(B,)`` (regression); none in ``predict`` batches.

    Args:
        source: ``fortunes`` (bundled: 14 topics, split 80/10/10 stratified), a CSV / TSV / JSON / JSONL / Parquet /
            Arrow file (split the same way), a folder of ``train.*`` (and ``validation.*`` / ``dev.*``, ``test.*``)
            files or one written by ``save_to_disk``, or ``hf:<name>[:<config>]`` (e.g. ``hf:glue:sst2``).
        train_file: a data file instead of ``source``; labels and the vocabulary come from it.
        validation_file: default: split off the training file.
        test_file: default (or one of hidden labels, as GLUE's): the validation split tests.
        predict_file: texts to predict, one a line (pairs: tab-separated), or a table; default: the test split.
        text_column: the column of the texts.
        text_pair_column: the column of a pair's second texts.
        label_column: names or integers (single-label), lists of names or ``;``-joined names (multi-label), numbers.
        problem_type: ``single_label``, ``multi_label`` or ``regression``; default: from the data.
        tokenizer: a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding one (a pretraining run's);
            default: train a WordPiece vocabulary on the training texts (cached).
        vocab_size: size of the vocabulary to train.
        lowercase: whether the vocabulary to train is uncased.
        max_seq_length: tokens per example with ``[CLS]`` and ``[SEP]``; longer texts are truncated, longer first.
        val_fraction: share held out for validation when splits are made from the training data.
        test_fraction: share held out for testing, likewise.
        split_seed: seed of those splits.
        streaming: read the training split of a ``hf:`` or ``save_to_disk`` dataset as trained on: blocks shuffled
            from ``(seed, epoch, block)``, resumed exactly; validation (needed) and test read whole; label names from
            a ClassLabel, else the validation split; the vocabulary from the stream's first 100,000 rows.
        stream_block_size: rows per shuffled block of a stream (larger: better mixed, more memory).
        **kwargs: ``cache_dir``, ``pad_to_multiple_of`` (:class:`~tfm.data.tokenizers.TextDataModule`), ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``seed`` (:class:`~tfm.data.loading.ResumableDataModule`).
    """

    def __init__(self, source: str = "fortunes", train_file: str | None = None, validation_file: str | None = None,
                 test_file: str | None = None, predict_file: str | None = None, text_column: str = "text",
                 text_pair_column: str | None = None, label_column: str = "label",
                 problem_type: ProblemType | None = None, tokenizer: str | None = None, vocab_size: int = 8192,
                 lowercase: bool = True, max_seq_length: int = 128,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, split_seed: int = 0, streaming: bool = False,
                 stream_block_size: int = 10_000,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        least, needs = (5, "[CLS] A [SEP] B [SEP]") if text_pair_column else (3, "[CLS] text [SEP]")
        table, vocab = "a CSV, TSV, JSON or JSON-lines file", "a tokenizer.json, a vocab.txt or a folder holding one"
        files = {"train_file": (train_file, table), "validation_file": (validation_file, table),
                 "test_file": (test_file, table), "tokenizer": (tokenizer, vocab),
                 "predict_file": (predict_file, "a text file (one text a line) or a CSV/TSV/JSON/JSONL file")}
        for mistake, message in (
            (problem_type is not None and problem_type not in PROBLEM_TYPES, (f"--data.problem_type {problem_type!r} "
             "is unknown: choose single_label, multi_label or regression (or leave it unset)")),
            *((not 0.0 <= p < 1.0, f"--data.{name} {p} is not in [0, 1)")
              for name, p in (("val_fraction", val_fraction), ("test_fraction", test_fraction))),
            (val_fraction + test_fraction >= 1.0,
             f"--data.val_fraction + --data.test_fraction = {val_fraction + test_fraction} leaves no training data"),
            (max_seq_length < least,
             f"--data.max_seq_length {max_seq_length} is too short: {needs} needs at least {least}"),
            (train_file is None and (validation_file or test_file), ("--data.validation_file and --data.test_file "
             "need --data.train_file (labels and the vocabulary come from it)")),
            *((f is not None and not Path(f).expanduser().exists(), f"--data.{option} {f} does not exist: pass {kind}")
              for option, (f, kind) in files.items()),
        ):
            if mistake:
                raise UserError(message)
        self.source, self.train_file, self.validation_file = source, train_file, validation_file
        self.test_file, self.predict_file = test_file, predict_file
        self.text_column, self.text_pair_column = text_column, text_pair_column
        self.label_column, self._problem_type_arg = label_column, problem_type
        self.tokenizer_path, self.vocab_size, self.lowercase = tokenizer, vocab_size, lowercase
        self.max_seq_length, self.val_fraction, self.test_fraction = max_seq_length, val_fraction, test_fraction
        self.split_seed, self.streaming, self.stream_block_size = split_seed, streaming, stream_block_size
        self.folder = self.cache_dir / "classification"  # read files
        self._kind = self._check_source() if train_file is None else "files"
        if streaming and self._kind not in ("hf", "disk"):
            raise UserError(f"--data.streaming reads hf: datasets and save_to_disk folders, not {train_file or source}")
        self._info: dict[str, Any] = {}  # what the source says of its labels: ``names``, ``problem_type``
        self._encoded: dict[str, EncodedTexts] = {}
        self._hidden_test: RawSplit | None = None

    def _check_source(self) -> str:
        """What ``source`` is (reads nothing): ``fortunes``, ``hf``, ``disk`` (saved), ``folder`` or ``file``."""
        src, path = self.source, Path(self.source).expanduser()
        if src == "fortunes":
            if not FORTUNES.is_file():
                raise UserError(f"the bundled fortunes {FORTUNES} are missing: restore data/fortunes/ or pass "
                                "--data.source")
            return "fortunes"
        if src.startswith("hf:"):
            HubSpec.parse(src)
            return "hf"
        if path.is_dir():
            if not is_saved_dataset(path) and _split_files(path)["train"] is None:
                raise UserError(f"--data.source {src} is a folder without train.csv/.tsv/.json/.jsonl/.parquet/.arrow "
                                "or a saved dataset (dataset_dict.json)")
            return "disk" if is_saved_dataset(path) else "folder"
        if not path.is_file():
            raise UserError(f"--data.source {src!r} does not exist: pass fortunes, a CSV/TSV/JSON/JSONL file, a folder "
                            "of split files or a saved dataset, or hf:<name>[:<config>]")
        return "file"

    def _read(self) -> dict[str, RawSplit]:
        """The splits as read (a ``train`` alone: split here); ``_info``: what the source says of its labels."""
        columns = (self.text_column, self.text_pair_column, self.label_column)
        if self._kind == "fortunes":
            if self.text_pair_column is not None:
                raise UserError("the fortunes are single texts: unset --data.text_pair_column (or pass another "
                                "--data.source)")
            topics, self._info = read_fortunes(FORTUNES), {"problem_type": "single_label"}
            texts, labels = [t for ts in topics.values() for t in ts], [name for name, ts in topics.items() for _ in ts]
            return {"train": RawSplit(texts, None, labels, f"fortunes {FORTUNES}")}
        if self._kind in ("hf", "disk"):
            ds = self._streams() if self.streaming else load_splits(self.source)
            require_train(ds, self.source)
            self._info = label_info((ds["train"].features or {}).get(self.label_column))
            whole = {s: _columns(list(ds[s])) if self.streaming else ds[s]  # streamed: validation and test read whole
                     for s in SPLITS if s in ds and not (self.streaming and s == "train")}
            names = self._info.get("names")
            return {s: read_split(d, f"{self.source} [{s}]", *columns, names) for s, d in whole.items()}
        if self._kind == "files":
            files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        else:
            files = _split_files(Path(self.source).expanduser()) if self._kind == "folder" else {"train": self.source}
        return {s: read_split(read_table(f, self.folder), str(f), *columns) for s, f in files.items() if f is not None}

    @cached_property
    def raw_splits(self) -> dict[str, RawSplit]:
        """``train``, ``validation``, ``test`` as read (streamed: no ``train``); sets the problem type and labels."""
        raw = self._read()
        known = raw["train" if "train" in raw else "validation"]  # the labels the label names come from
        values = known.labels or []
        self._problem_type = self._problem_type_arg or self._info.get("problem_type") or infer_problem_type(values)
        if "validation" not in raw:  # split here, stratified by label for single-label data
            whole = raw.pop("train")
            self._check_labelled(whole, "train")
            made = [s for s in SPLITS if s not in raw]
            keys = [label_name(v) for v in values] if self._problem_type == "single_label" else None
            test_fraction = self.test_fraction if "test" in made else 0.0
            picks = stratified_split(keys, len(whole), self.val_fraction, test_fraction, self.split_seed)
            raw.update({s: whole.select(picks[s]) for s in made})
        if "test" in raw and all(_missing(v) for v in raw["test"].labels or [None]):
            self._hidden_test = raw.pop("test")  # hidden labels (GLUE): predicted by default, not tested
        raw.setdefault("test", raw["validation"])  # no labelled test split: test on the validation split
        raw = {s: raw[s] for s in SPLITS if s in raw}
        for split, s in raw.items():
            self._check_labelled(s, split)
            if not len(s):
                raise UserError(f"the {split} split of {self.train_file or self.source} is empty: use more data or "
                                "raise --data.val_fraction/--data.test_fraction")
        self._label_names = self._names(known)
        self._labels = {split: self._label_array(s, split) for split, s in raw.items()}
        return raw

    def _check_labelled(self, split: RawSplit, name: str) -> None:
        """An empty label is one line naming the row (but multi-label: none of the labels applies)."""
        empty = (r for r, v in zip(split.rows, split.labels or []) if _missing(v))
        if self._problem_type != "multi_label" and (row := next(empty, None)):
            raise UserError(f"{split.where} row {row}: the label in column {self.label_column!r} is empty ({name} "
                            "split): fill it in or remove the row")

    def _parse(self, v: Any) -> list[str]:
        return label_names_of(v) if self._problem_type == "multi_label" else [label_name(v)]

    def _names(self, known: RawSplit) -> list[str]:
        """The label names: the source's (a ClassLabel), else those of the ``known`` (training) split, sorted."""
        if self._problem_type == "regression" or "names" in self._info:
            return [self.label_column] if self._problem_type == "regression" else list(self._info["names"])
        names = sorted({n for v in known.labels or [] for n in self._parse(v)}, key=_sort_key)
        if self._problem_type == "single_label" and len(names) < 2:
            raise UserError(f"the training data of {self.train_file or self.source} has only the label {names[0]!r}: "
                            "a classifier needs at least two (or set --data.problem_type)")
        if not names:
            raise UserError(f"the training data of {self.train_file or self.source} has no label names in column "
                            f"{self.label_column!r}")
        return names

    def _label_array(self, split: RawSplit, name: str) -> np.ndarray:
        """A split's labels as ids (int64), multi-hot rows (float32) or numbers (float32)."""
        labels = split.labels or []
        if self._problem_type == "regression":
            values = [_as_number(v) for v in labels]
            if (bad := next((i for i, x in enumerate(values) if x is None or not math.isfinite(x)), None)) is not None:
                raise UserError(f"{split.where} row {split.rows[bad]}: label {labels[bad]!r} is not a number "
                                "(problem_type regression): fix it or set --data.problem_type")
            return np.asarray(values, dtype=np.float32)
        index = {n: i for i, n in enumerate(self._label_names)}
        parsed = [self._parse(v) for v in labels]
        for row, names in zip(split.rows, parsed):
            if unknown := [n for n in names if n not in index]:
                shown = ", ".join(list(index)[:20]) + (" ..." if len(index) > 20 else "")
                raise UserError(f"label {unknown[0]!r} of the {name} split ({split.where} row {row}) is not in the "
                                f"training data (labels: {shown}): fix the label or add training examples of it")
        if self._problem_type == "single_label":
            return np.asarray([index[names[0]] for names in parsed], dtype=np.int64)
        hot = np.zeros((len(split), len(index)), dtype=np.float32)
        for i, names in enumerate(parsed):
            hot[i, [index[n] for n in names]] = 1.0
        return hot

    @property
    def problem_type(self) -> str:
        """``single_label``, ``multi_label`` or ``regression`` (given, or found in the data)."""
        self.raw_splits  # noqa: B018
        return self._problem_type

    @property
    def label_names(self) -> list[str]:
        """The labels in id order (regression: the label column's name)."""
        self.raw_splits  # noqa: B018
        return list(self._label_names)

    @property
    def num_labels(self) -> int:
        """Outputs the model needs: the number of labels (regression: 1)."""
        return 1 if self.problem_type == "regression" else len(self.label_names)

    def train_tokenizer(self) -> Tokenizer:
        """A WordPiece vocabulary trained (once, then cached) on the training texts (streamed: the stream's head)."""
        if self.streaming:
            rows = list(islice(self._streams()["train"], STREAM_TOKENIZER_ROWS))
            where = f"{self.source} [train, first {len(rows)} rows]"
            train = read_split(_columns(rows), where, self.text_column, self.text_pair_column, None)
        else:
            train = self.raw_splits["train"]
        texts = [*train.texts, *(train.pairs or [])]
        return wordpiece_tokenizer(lambda: texts, f"classification:{text_digest(texts)}", vocab_size=self.vocab_size,
                                   lowercase=self.lowercase, cache_dir=self.cache_dir / "tokenizers")

    @cached_property
    def encoder(self) -> Tokenizer:
        """The tokenizer as examples are encoded: truncating to ``max_seq_length`` (the longer text first)."""
        tok = Tokenizer.from_str(self.tokenizer.to_str())
        tok.no_padding()
        tok.enable_truncation(self.max_seq_length, strategy="longest_first")
        return tok

    def encoded(self, split: str) -> EncodedTexts:
        """A split tokenized (``train``, ``validation``, ``test`` or ``predict``), on first use."""
        if split not in self._encoded:
            import datasets  # 0.35 s to import: only when a dataset is read

            raw = self.predict_raw if split == "predict" else self.raw_splits[split]
            texts = {"text": raw.texts, **({"pair": raw.pairs} if raw.pairs is not None else {})}
            labels = {"labels": self._labels[split]} if split != "predict" else {}
            ds = datasets.Dataset.from_dict({**texts, **labels})
            features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                          "token_type_ids": datasets.List(datasets.Value("int8")),
                                          **{k: v for k, v in ds.features.items() if k == "labels"}})
            ds = ds.map(encode_texts, batched=True, fn_kwargs={"tok": self.encoder}, remove_columns=list(texts),
                        features=features)
            self._encoded[split] = EncodedTexts(ds)
        return self._encoded[split]

    @cached_property
    def predict_raw(self) -> RawSplit:
        """The texts to predict: ``predict_file``'s, else the test split's (hidden labels, as GLUE's, included)."""
        if self.predict_file is not None:
            return read_predict_file(self.predict_file, self.text_column, self.text_pair_column, self.folder)
        test = self.raw_splits["test"] if self._hidden_test is None else self._hidden_test
        return replace(test, labels=None, ids=test.ids or [str(i) for i in range(len(test))])

    @property
    def predict_texts(self) -> list[str] | list[tuple[str, str]]:
        """The raw text of each predicted row, in order (pairs: ``(text, pair)`` tuples)."""
        raw = self.predict_raw
        return list(zip(raw.texts, raw.pairs)) if raw.pairs is not None else list(raw.texts)

    @property
    def predict_ids(self) -> list[str]:
        """A name for each predicted row: the file's ``id`` column, its line or row number, or its test split index."""
        return list(self.predict_raw.ids or [str(r) for r in self.predict_raw.rows])

    def prepare_data(self) -> None:
        self.tokenizer  # noqa: B018  (trains and caches the vocabulary once, before DDP ranks need it)

    def setup(self, stage: str) -> None:
        pads = {"input_ids": self.pad_token_id, "token_type_ids": 0}
        self.collator = PadCollator(pads, ["labels"], self.pad_to_multiple_of, self.max_seq_length)
        for split in STAGE_SPLITS.get(stage, SPLITS):
            if not (self.streaming and split == "train"):
                self.encoded(split)

    train_set = property(lambda self: self.encoded("train"))
    val_set = property(lambda self: self.encoded("validation"))
    test_set = property(lambda self: self.encoded("test"))
    predict_set = property(lambda self: self.encoded("predict"))

    def _streams(self) -> Any:
        """The splits as ``datasets`` streams (an ``IterableDatasetDict``); train and validation needed."""
        streams = load_splits(self.source, streaming=True)
        require_train(streams, self.source)
        if "validation" not in streams:
            raise UserError(f"--data.streaming needs a validation split, and {self.source} has none (it has "
                            f"{', '.join(streams)}): pass a dataset with one")
        return streams

    def _stream_batches(self, rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
        """A block of streamed rows as shuffled, collated training batches of ``batch_size``."""
        block = read_split(_columns(rows), f"{self.source} [train stream block]", self.text_column,
                           self.text_pair_column, self.label_column, self._info.get("names"))
        encoded = encode_texts({"text": block.texts, **({"pair": block.pairs} if block.pairs else {})}, self.encoder)
        items = [{"input_ids": ids, "token_type_ids": types, "labels": label} for ids, types, label
                 in zip(encoded["input_ids"], encoded["token_type_ids"], self._label_array(block, "train"))]
        rng.shuffle(items)
        return [self.collator(items[k : k + self.batch_size]) for k in range(0, len(items), self.batch_size)]

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self.stream_loader(self._streams()["train"], self._stream_batches, self.stream_block_size)
        return self.train_loader(self.train_set, self.collator, collate=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set, self.collator, collate=True)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, self.collator, collate=True)

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader(self.predict_set, self.collator, collate=True)
