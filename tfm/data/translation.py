"""Machine translation data: the bundled English-Spanish Bible, TSV / JSON-lines files of sentence
pairs and Hugging Face translation datasets; a BPE vocabulary; batches packed by token count.

Sources (``--data.source``):

* ``bible`` (default): 30,270 verse pairs of the King James Version (English, ``en``) and the
  Reina-Valera 1909 (Spanish, ``es``) in ``data/bible_en_es`` (both public domain). Split **by
  book** (:func:`split_books`, seeded by ``split_seed``), so no verse of a test book is seen in
  training. The reader drops two markers of the English source: the pilcrow ``¶`` that opens
  2,916 verses (a paragraph mark, absent from the Spanish) and the USFM ``\\nd`` (divine name)
  tag left in 26 verses (``the \\nd LORD``).
* ``tsv`` / ``jsonl``: files given by ``--data.train_file`` (and optionally ``validation_file``,
  ``test_file``): a TSV with a header row (no quoting) or JSON lines (one object a line; a
  ``{"translation": {"en": ..., "es": ...}}`` object as Hugging Face writes them also works),
  ``.csv`` / ``.json`` files are read too, ``.gz`` is decompressed. The columns are the language
  codes unless ``source_column`` / ``target_column`` say otherwise.
* ``hf:<name>[:<config>]``: a Hugging Face dataset, e.g. ``hf:opus_books:en-es`` or
  ``hf:wmt14:de-en``, with a ``translation`` column of ``{lang: text}`` dicts (or the two named
  columns). Pairs with an empty side are skipped with a warning.

A missing validation split is cut at random (``val_fraction``, ``split_seed``) from the training
pairs; a missing test split is the validation split. Texts are NFKC-normalised and stripped of
surrounding whitespace (the ``src_text`` / ``tgt_text`` of a batch); an empty text in a file is a
:class:`~tfm.errors.UserError` naming the file and line.

Framing: the source is ``x [END]``; the decoder reads ``tgt_in = [START] y`` and predicts
``tgt_out = y [END]``. ``max_source_length`` / ``max_target_length`` count those sequences
(``len(x) + 1``, ``len(y) + 1``): longer training pairs are dropped, longer evaluation and
prediction lines truncated (with a warning; ``tgt_text`` keeps the whole reference for BLEU).

Training batches are packed by token count (:class:`~tfm.data.loading.TokenBatchSampler`): at most
``max_tokens`` padded tokens on each side, pairs of similar lengths together. On the Bible
(en-es, the default 8,000-token joint BPE vocabulary, ``max_tokens=4096``) an epoch has 221
batches of ~124 pairs and 4.1% of their tokens are padding (:meth:`TranslationDataModule.padding_fraction`;
es-en 4.1%, separate vocabularies 4.3%). Reading, training the vocabulary and encoding the
training and validation splits takes ~4 s on 2 cores, ~2 s with the vocabulary cached.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .classification import _open_text, _table_kind, read_table
from .loading import ArrowRows, ResumableDataModule, TokenBatchSampler, mix_seed
from .sources import (
    HubSpec,
    build_cached,
    check_num_proc,
    load_shards,
    load_splits,
    load_table_file,
    preparation_processes,
    quiet_fork,
    require_train,
    write_records,
)
from .text import sample_rows, text_bytes
from .tokenizers import (
    BPE_SPECIAL_TOKENS,
    BYTE_TOKENS,
    bpe_special_ids,
    bpe_tokenizer,
    cache_root,
    load_bpe_tokenizers,
    save_bpe_tokenizers,
)

BIBLE = Path(__file__).resolve().parents[2] / "data" / "bible_en_es" / "bible_en_es.tsv.gz"
BIBLE_LANGS = ("en", "es")
SPLITS = ("train", "validation", "test")
FILE_SOURCES = ("tsv", "jsonl")
PAIR_FILES = ("tsv", "jsonl", "json", "csv", "parquet", "arrow")


def normalize_text(text: str) -> str:
    """NFKC, without surrounding whitespace: the form in which texts are tokenised and scored."""
    return unicodedata.normalize("NFKC", text).strip()


# --- the bundled Bible ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verse:
    """One verse pair: the book (``I Samuel``, ``Song of Solomon``, ...), chapter, verse number,
    the cleaned English and Spanish texts and the line of the TSV file."""

    book: str
    chapter: int
    verse: int
    en: str
    es: str
    line: int = 0


def clean_verse(text: str) -> str:
    """A verse without the KJV's opening pilcrow (``¶ ``) and USFM ``\\nd`` markers, normalised."""
    return normalize_text(text.replace("\\nd ", "").replace("\\nd", "").removeprefix("¶").strip())


def read_bible(path: str | Path = BIBLE) -> list[Verse]:
    """The verse pairs of ``bible_en_es.tsv.gz`` (columns ``book chapter verse en es``), in order."""
    return list(_read_bible(str(Path(path).expanduser().resolve())))


@lru_cache(maxsize=2)
def _read_bible(path_str: str) -> tuple[Verse, ...]:
    path = Path(path_str)
    if not path.is_file():
        raise UserError(f"the bundled Bible {path} is missing: restore data/bible_en_es/ or pass another --data.source")
    lines = _open_text(path).split("\n")
    header = lines[0].rstrip("\r").split("\t")
    if header != ["book", "chapter", "verse", "en", "es"]:
        raise UserError(f"{path} is not the bundled Bible: its header is {header}, not book chapter verse en es")
    verses = []
    for n, line in enumerate(lines[1:], 2):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 5 or not fields[2].isdigit():
            raise UserError(f"{path} line {n} is not a verse pair (book, chapter, verse, en, es)")
        book, chapter, verse, en, es = fields
        en, es = clean_verse(en), clean_verse(es)
        if not en or not es:
            raise UserError(f"{path} line {n} ({book} {chapter}:{verse}) has an empty text")
        verses.append(Verse(book, int(chapter), int(verse), en, es, n))
    return tuple(verses)


def split_books(sizes: dict[str, int], val_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0) -> dict[str, list[str]]:
    """Books for ``train``, ``validation`` and ``test`` (each book in one split), deterministic for
    ``seed``: the books are shuffled, then validation and in turn test take books in that order
    until they hold 95% of their share of the pairs, passing over a book that would take them
    beyond 110%. Each list keeps the order of ``sizes``. The Bible with the defaults (seed 0):
    validation Joshua, Amos, Zechariah, Hebrews, I Peter, II John, Jude (1,461 pairs); test
    II Chronicles, Mark (1,499); train the other 50 books (27,310)."""
    books = list(sizes)
    shuffled = books[:]
    random.Random(mix_seed(seed, 0xB1B1E)).shuffle(shuffled)
    total = sum(sizes.values())
    chosen: dict[str, str] = {}
    for split, fraction in (("validation", val_fraction), ("test", test_fraction)):
        target, count = fraction * total, 0
        for book in shuffled:
            if count >= target * 0.95:
                break
            if book not in chosen and count + sizes[book] <= target * 1.1:
                chosen[book] = split
                count += sizes[book]
    return {s: [b for b in books if chosen.get(b, "train") == s] for s in SPLITS}


# --- pairs as read: Arrow tables ---------------------------------------------------------------------
def pair_features(with_target: bool = True) -> Any:
    """The columns of pairs as read: ``src_text``, ``tgt_text`` (absent: sources only) and ``row``
    (the line or row of each in its file or dataset)."""
    import datasets

    text = datasets.Value("string")
    return datasets.Features({"src_text": text, **({"tgt_text": text} if with_target else {}), "row": datasets.Value("int64")})


@dataclass
class Pairs:
    """Sentence pairs as read (normalised): a ``datasets.Dataset`` of :func:`pair_features` (on disk
    for files and datasets, memory-mapped), where they came from, and ``key``, what identifies
    them for caches."""

    ds: Any
    where: str
    key: str

    @classmethod
    def of(cls, src: list[str], tgt: list[str] | None, where: str, rows: list[int] | None = None) -> Pairs:
        """Pairs held in memory (the Bible, tests)."""
        import datasets

        columns = {"src_text": src, **({"tgt_text": tgt} if tgt is not None else {}), "row": rows or list(range(1, len(src) + 1))}
        return cls(datasets.Dataset.from_dict(columns, features=pair_features(tgt is not None)), where, _digest(chain(src, tgt or ())))

    @classmethod
    def written(cls, records: Callable[[], Iterable[dict[str, Any]]], where: str, path: Path, with_target: bool = True) -> Pairs:
        """Pairs of ``records()`` (dicts of :func:`pair_features`), written once to the Arrow file
        ``path`` (its name is their key) and memory-mapped."""
        import datasets

        build_cached(path, lambda tmp: write_records(records(), tmp, pair_features(with_target)))
        ds = datasets.Dataset.from_file(str(path))
        if not len(ds):
            raise UserError(f"{where} holds no sentence pairs")
        return cls(ds, where, path.stem)

    @property
    def has_target(self) -> bool:
        return "tgt_text" in self.ds.column_names

    def texts(self, column: str) -> Iterator[Any]:
        """A column's values, read 10,000 at a time."""
        for batch in self.ds.select_columns([column]).iter(batch_size=10_000):
            yield from batch[column]

    @property
    def src(self) -> list[str]:
        return list(self.texts("src_text"))

    @property
    def tgt(self) -> list[str] | None:
        return list(self.texts("tgt_text")) if self.has_target else None

    @property
    def rows(self) -> list[int]:
        return list(self.texts("row"))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.ds)

    def select(self, picks: Sequence[int]) -> Pairs:
        key = hashlib.sha256(self.key.encode() + np.asarray(picks, dtype=np.int64).tobytes()).hexdigest()
        return Pairs(self.ds.select(picks), self.where, key)

    def sources_only(self) -> Pairs:
        return Pairs(self.ds.remove_columns(["tgt_text"]) if self.has_target else self.ds, self.where, self.key + "-src")


def _columns_text(obj: dict[str, Any]) -> str:
    cols = []
    for k, v in obj.items():
        cols.append(str(k))
        if isinstance(v, dict):
            cols += [f"{k}.{lang}" for lang in v]
    return ", ".join(cols) or "none"


def _field(obj: dict[str, Any], column: str) -> Any:
    """``obj[column]``, or ``obj["translation"][column]`` (Hugging Face's translation format);
    ``KeyError`` when neither exists."""
    if column in obj:
        return obj[column]
    inner = obj.get("translation")
    if isinstance(inner, dict) and column in inner:
        return inner[column]
    raise KeyError(column)


def _text(value: Any, where: str, column: str) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else normalize_text(str(value))
    if not text:
        raise UserError(f"{where}: the {column!r} text is empty: fill it in or remove the line")
    return text


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(number, line)`` of a UTF-8 text file (``.gz`` decompressed), one at a time."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:  # type: ignore[operator]
        for n, line in enumerate(f, 1):
            yield n, line.rstrip("\r\n")


def _file_key(path: Path, *settings: Any) -> str:
    st = path.stat()
    return _digest([str(path.resolve()), str(st.st_size), str(st.st_mtime_ns), *map(str, settings)])[:16]


def _records(path: Path, kind: str, wanted: list[str], options: dict[str | None, str], cache_dir: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(unit, number, record)`` of a pairs file, checked: its columns first (one line naming the
    columns there are), then each line as it is read."""
    if kind in ("parquet", "arrow"):
        ds = load_table_file(path, {c: options[c].removeprefix("--data.") for c in wanted}, cache_dir / "datasets")
        n = 0
        for batch in ds.select_columns(wanted).iter(batch_size=10_000):
            for values in zip(*(batch[c] for c in wanted)):
                n += 1
                yield "row", n, dict(zip(wanted, values))
        return
    if kind == "tsv":
        lines = _lines(path)
        header = next(lines, (1, ""))[1].split("\t")
        for c in wanted:
            if c not in header:
                raise UserError(f"{path} has no column {c!r} (columns: {', '.join(h for h in header if h) or 'none'}): set {options[c]} or write a header row")
        for n, line in lines:
            if not line.strip():
                continue
            values = line.split("\t")
            if len(values) != len(header):
                raise UserError(f"{path} line {n} has {len(values)} tab-separated fields but the header has {len(header)}")
            yield "line", n, dict(zip(header, values))
        return
    if kind == "csv":
        columns, table = read_table(path)
        for c in wanted:
            if c not in columns:
                raise UserError(f"{path} has no column {c!r} (columns: {', '.join(columns) or 'none'}): set {options[c]}")
        yield from (("row", n, r) for n, r in enumerate(table, 1))
        return
    data = None
    if kind == "json":
        try:
            data = json.loads(_open_text(path))
        except json.JSONDecodeError:
            data = None  # JSON lines in a .json file
    if data is not None:
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UserError(f"{path} holds no list of objects: write one object per line (JSON lines) or a list of objects")
        records: Iterable[tuple[str, int, dict[str, Any]]] = (("row", n, r) for n, r in enumerate(data, 1))
    else:
        records = _json_lines(path)
    first = True
    for unit, n, record in records:
        if first:
            for c in wanted:
                try:
                    _field(record, c)
                except KeyError:
                    raise UserError(f"{path} has no column {c!r} (columns: {_columns_text(record)}): set {options[c]}") from None
            first = False
        yield unit, n, record


def _json_lines(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {n} is not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path} line {n} is not a JSON object: write one object per line")
        yield "line", n, obj


def read_pair_file(path: str | Path, source_column: str, target_column: str | None, fmt: str = "tsv", cache_dir: Path | None = None) -> Pairs:
    """Pairs (``target_column=None``: sources only) of a TSV with a header row (no quoting), JSON
    lines, a JSON list of objects or a CSV file (by the name's suffix, else ``fmt``; ``.gz`` is
    decompressed), read line by line into an Arrow file in ``cache_dir``. A missing column or an
    empty text is a :class:`UserError` naming the file and the line (for ``.json`` / ``.csv``: the row)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data file {path} does not exist: pass a TSV or JSON-lines file of sentence pairs")
    kind = _table_kind(path)
    kind = kind if kind in PAIR_FILES else fmt
    if kind not in PAIR_FILES:
        raise UserError(f"data file {path} has an unknown type {path.suffix!r}: use .tsv or .jsonl (or .csv / .json / .parquet / .arrow)")
    options = {source_column: "--data.source_column", target_column: "--data.target_column"}
    wanted = [c for c in (source_column, target_column) if c is not None]
    names = ["src_text", "tgt_text"]

    folder = cache_dir if cache_dir is not None else cache_root() / "translation"

    def records() -> Iterator[dict[str, Any]]:
        for unit, n, record in _records(path, kind, wanted, options, folder):
            where = f"{path} {unit} {n}"
            try:
                row = {name: _text(_field(record, c), where, c) for name, c in zip(names, wanted)}
            except KeyError as e:
                raise UserError(f"{where} has no {e.args[0]!r} field (fields: {_columns_text(record)}): every line needs both texts") from None
            yield {**row, "row": n}

    return Pairs.written(records, str(path), folder / f"pairs-{_file_key(path, kind, *wanted)}.arrow", target_column is not None)


def read_source_lines(path: str | Path, source_column: str, fmt: str = "txt", cache_dir: Path | None = None) -> Pairs:
    """Sentences to translate: a text file of one sentence a line (blank lines skipped; ``rows``
    are the line numbers) or a TSV / JSONL / CSV / JSON file with the source column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--data.predict_file {path} does not exist: pass a text file (one sentence a line) or a TSV/JSONL file")
    if _table_kind(path) in PAIR_FILES:
        return read_pair_file(path, source_column, None, cache_dir=cache_dir)

    def records() -> Iterator[dict[str, Any]]:
        for n, line in _lines(path):
            if text := normalize_text(line):
                yield {"src_text": text, "row": n}

    folder = cache_dir if cache_dir is not None else cache_root() / "translation"
    try:
        return Pairs.written(records, str(path), folder / f"lines-{_file_key(path)}.arrow", with_target=False)
    except UserError:
        raise UserError(f"--data.predict_file {path} holds no text") from None


def hf_pairs(spec: str, source_column: str, target_column: str, cache_dir: Path | None = None) -> dict[str, Pairs]:
    """The splits of a Hugging Face translation dataset (``translation`` dicts or two columns);
    pairs with an empty side are skipped with a warning."""
    label = spec
    ds = load_splits(HubSpec.parse(spec, example="hf:wmt14:de-en"))
    require_train(ds, label)
    folder = cache_dir if cache_dir is not None else cache_root() / "translation"
    out: dict[str, Pairs] = {}
    for split in (s for s in SPLITS if s in ds):
        d = ds[split]
        columns = list(d.column_names)
        if source_column in columns and target_column in columns:
            def pairs(d: Any = d) -> Iterator[tuple[Any, Any]]:
                for batch in d.select_columns([source_column, target_column]).iter(batch_size=10_000):
                    yield from zip(batch[source_column], batch[target_column])
        elif "translation" in columns:
            first = d[0]["translation"] if len(d) else {}
            for c, option in ((source_column, "source_column"), (target_column, "target_column")):
                if c not in first:
                    raise UserError(f"dataset {label!r} has no {c!r} text (translation languages: {', '.join(first) or 'none'}): set --data.source_lang/--data.target_lang or --data.{option}")

            def pairs(d: Any = d) -> Iterator[tuple[Any, Any]]:
                for batch in d.select_columns(["translation"]).iter(batch_size=10_000):
                    yield from ((t.get(source_column), t.get(target_column)) for t in batch["translation"])
        else:
            missing = next(c for c in (source_column, target_column) if c not in columns)
            raise UserError(f"split {split!r} of dataset {label!r} has no column {missing!r} (columns: {', '.join(columns)}): set --data.source_column/--data.target_column")

        def records(pairs: Callable = pairs, split: str = split) -> Iterator[dict[str, Any]]:
            skipped = 0
            for n, (a, b) in enumerate(pairs(), 1):
                a, b = normalize_text(str(a or "")), normalize_text(str(b or ""))
                if a and b:
                    yield {"src_text": a, "tgt_text": b, "row": n}
                else:
                    skipped += 1
            if skipped:
                from lightning.pytorch.utilities import rank_zero_warn

                rank_zero_warn(f"{skipped} pairs of the {split!r} split of {label} have an empty text and are skipped")

        # the fingerprint of a datasets table: what datasets' own cache keys on
        key = _digest([label, split, source_column, target_column, d._fingerprint])[:16]
        try:
            out[split] = Pairs.written(records, f"{label} [{split}]", folder / f"hf-{key}.arrow")
        except UserError:
            raise UserError(f"the {split!r} split of dataset {label!r} holds no sentence pairs") from None
    return out


def held_out(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(kept, held out)`` indices: ``round(n * fraction)`` (at least one) drawn with ``seed``,
    both in their original order."""
    if n < 2:
        raise UserError(f"{n} training pair{'s' if n != 1 else ''} cannot be split into training and validation: pass --data.validation_file")
    k = min(n - 1, max(1, round(n * fraction)))
    picks = set(random.Random(mix_seed(seed, n)).sample(range(n), k))
    return [i for i in range(n) if i not in picks], sorted(picks)


def _sample(pairs: Pairs, budget: int, seed: int) -> Pairs:
    """A seeded random sample of about ``budget`` bytes of text (all of smaller pairs)."""
    rows = sample_rows(text_bytes(pairs.ds, [c for c in ("src_text", "tgt_text") if c in pairs.ds.column_names]), budget, seed)
    return pairs if len(rows) == len(pairs) else pairs.select(rows.tolist())


# --- encoded pairs --------------------------------------------------------------------------------------
def _encode_pairs(batch: dict[str, list], src_tok: Tokenizer, tgt_tok: Tokenizer) -> dict[str, list]:
    """A batch of pairs' token ids (no special tokens, whole: limits apply when they are read)."""
    out = {"src": [e.ids for e in src_tok.encode_batch_fast(batch["src_text"], add_special_tokens=False)]}
    if "tgt_text" in batch:
        out["tgt"] = [e.ids for e in tgt_tok.encode_batch_fast(batch["tgt_text"], add_special_tokens=False)]
    return out


def encode_pairs(pairs: Pairs, src_tok: Tokenizer, tgt_tok: Tokenizer, folder: Path, num_proc: int | None = None) -> Any:
    """The pairs with their token ids (``src``, ``tgt``), prepared once (a batched ``Dataset.map``
    in ``num_proc`` processes) into an Arrow cache under a key of the pairs and the tokenizers,
    and memory-mapped."""
    import datasets

    key = _digest([pairs.key, src_tok.to_str(), tgt_tok.to_str()])[:16]
    ids = datasets.Sequence(datasets.Value("int32"))
    features = datasets.Features({**pair_features(pairs.has_target), "src": ids, **({"tgt": ids} if pairs.has_target else {})})

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        processes = preparation_processes(num_proc, len(pairs))
        with quiet_fork(processes):
            pairs.ds.map(_encode_pairs, batched=True, batch_size=1000, num_proc=processes, features=features, fn_kwargs={"src_tok": src_tok, "tgt_tok": tgt_tok},
                         cache_file_name=str(tmp / "pairs.arrow"), new_fingerprint=f"encoded-{key}", desc="Tokenizing pairs")

    return load_shards(build_cached(folder / f"encoded-{key}", build), "pairs")


class EncodedPairs(Dataset):
    """A tokenised split read in place from its memory-mapped Arrow table: item ``i`` is a dict of
    the source tokens ``src`` (int32, no special tokens, at most ``limits[0]``), the target tokens
    ``tgt`` (at most ``limits[1]``; absent for prediction), the texts ``src_text`` / ``tgt_text``
    (the whole reference) and its position ``index``. ``picks``: the rows of the table in the
    split (default: all)."""

    def __init__(self, ds: Any, picks: np.ndarray | None = None, limits: tuple[int | None, int | None] = (None, None)) -> None:
        import pyarrow.compute as pc

        self.has_target = "tgt" in ds.column_names
        self.table = ArrowRows(ds, ["src", "src_text", *(["tgt", "tgt_text"] if self.has_target else [])])
        self.picks = np.arange(len(ds)) if picks is None else picks
        self.limits = limits
        columns = ds.with_format("arrow")[:]
        self.full = {side: pc.list_value_length(columns.column(side)).to_numpy().astype(np.int64) for side in ("src", "tgt") if side in ds.column_names}

    def __len__(self) -> int:
        return len(self.picks)

    def _lengths(self, side: str, limit: int | None) -> np.ndarray:
        n = self.full[side][self.picks]
        return (n if limit is None else np.minimum(n, limit)) + 1

    def source_lengths(self) -> np.ndarray:
        """Encoder positions of each item: its tokens and ``[END]``."""
        return self._lengths("src", self.limits[0])

    def target_lengths(self) -> np.ndarray:
        """Decoder positions of each item: ``[START] y`` (equally ``y [END]``)."""
        return self._lengths("tgt", self.limits[1])

    def lengths(self) -> np.ndarray:
        """``(n, 2)`` source and target lengths (``(n, 1)`` without targets), for batching."""
        if not self.has_target:
            return self.source_lengths()[:, None]
        return np.stack([self.source_lengths(), self.target_lengths()], 1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row, (src_limit, tgt_limit) = int(self.picks[i]), self.limits
        item = {"src": self.table.column("src", row)[:src_limit], "src_text": self.table.column("src_text", row), "index": i}
        if self.has_target:
            item["tgt"], item["tgt_text"] = self.table.column("tgt", row)[:tgt_limit], self.table.column("tgt_text", row)
        return item


class TranslationCollator:
    """Pads samples into a batch: int64 ``src_ids`` ``(B, S)`` (``x [END]``), ``tgt_in`` and
    ``tgt_out`` ``(B, T)`` (``[START] y`` and ``y [END]``), padded with ``pad_id``; ``src_text``,
    ``tgt_text`` (lists of str) and ``index`` (int64 ``(B,)``). Without targets (prediction):
    ``src_ids``, ``src_text`` and ``index``."""

    def __init__(self, pad_id: int, bos_id: int, eos_id: int) -> None:
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        n = len(samples)
        src = np.full((n, max(len(s["src"]) for s in samples) + 1), self.pad_id, dtype=np.int64)
        for row, s in enumerate(samples):
            k = len(s["src"])
            src[row, :k], src[row, k] = s["src"], self.eos_id
        batch: dict[str, Any] = {"src_ids": torch.from_numpy(src), "src_text": [s["src_text"] for s in samples]}
        if "tgt" in samples[0]:
            width = max(len(s["tgt"]) for s in samples) + 1
            tgt_in = np.full((n, width), self.pad_id, dtype=np.int64)
            tgt_out = np.full((n, width), self.pad_id, dtype=np.int64)
            for row, s in enumerate(samples):
                k = len(s["tgt"])
                tgt_in[row, 0], tgt_in[row, 1 : k + 1] = self.bos_id, s["tgt"]
                tgt_out[row, :k], tgt_out[row, k] = s["tgt"], self.eos_id
            batch.update(tgt_in=torch.from_numpy(tgt_in), tgt_out=torch.from_numpy(tgt_out), tgt_text=[s["tgt_text"] for s in samples])
        batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        return batch


def _digest(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


# --- the DataModule -----------------------------------------------------------------------------------
class TranslationDataModule(ResumableDataModule):
    """Sentence pairs for sequence-to-sequence translation, batched by token count.

    Batches are dicts: ``src_ids`` int64 ``(B, S)`` = ``x [END]``; ``tgt_in`` int64 ``(B, T)`` =
    ``[START] y`` and ``tgt_out`` ``(B, T)`` = ``y [END]``, all padded with ``pad_token_id``;
    ``src_text``, ``tgt_text``: the normalised texts (lists of str, for BLEU and tables);
    ``index``: int64 ``(B,)`` positions in the split (evaluation batches come sorted by length:
    ``index`` restores the file order). Predict batches have ``src_ids``, ``src_text`` and
    ``index`` (the position among :attr:`predict_pairs`, whose ``rows`` are the file's lines).

    Args:
        source: ``bible`` (bundled en/es verse pairs, split by book), ``tsv`` or ``jsonl`` (files
            named by ``train_file`` ...), or ``hf:<name>[:<config>]`` (e.g. ``hf:opus_books:en-es``,
            ``hf:wmt14:de-en``; needs the network the first time).
        source_lang: the language translated from (Bible: ``en`` or ``es``; files: the default
            source column; ``hf:``: the key in the ``translation`` dicts).
        target_lang: the language translated into (the other one).
        train_file: the training pairs for ``source`` ``tsv`` / ``jsonl``: a TSV with a header
            row or JSON lines (``.csv`` / ``.json`` / ``.gz`` also read).
        validation_file: validation pairs; default: ``val_fraction`` of the training pairs.
        test_file: test pairs; default: the validation split.
        predict_file: sentences to translate, one a line (or a TSV/JSONL with the source
            column); default: the test split's sources.
        source_column: the source texts' column in files or a dataset (default: ``source_lang``).
        target_column: the target texts' column (default: ``target_lang``).
        tokenizer: a saved tokenizer (a run folder, or its ``tokenizer.json``; a
            ``target_tokenizer.json`` beside it makes the vocabularies separate); default: train
            a BPE vocabulary on the training pairs (cached).
        joint_vocab: one vocabulary for both languages (else one per side) when training one.
        vocab_size: tokens per trained vocabulary (4 special and 256 byte-fallback tokens included).
        max_source_length: longest source in tokens, ``x [END]``: longer training pairs are
            dropped, longer evaluation and prediction lines truncated (with a warning).
        max_target_length: longest target in tokens, ``[START] y``: the same.
        max_tokens: padded tokens per training batch on each side (per device).
        eval_max_tokens: the same for evaluation and prediction batches (default ``max_tokens``).
        bucket_width: length bucket width for training batches: items of a bucket trade places
            each epoch; wider buckets mix batches more, at more padding (Bible: 1: 3.8%, 2: 4.1%, 4: 6.3%).
        val_fraction: share of the pairs held out for validation (Bible: of its pairs, in whole
            books; files and datasets: when there is no validation split).
        test_fraction: share held out for testing (the Bible only).
        split_seed: seed of the held-out splits (the Bible's books) and of the tokenizer's sample.
        tokenizer_sample_bytes: train the vocabulary on a seeded random sample of the training pairs
            of about this many bytes (all of a smaller corpus).
        cache_dir: cache folder of trained tokenizers and prepared pairs (default ``$TFM_CACHE`` or
            ``~/.cache/tfm``).
        streaming: read the training pairs of a ``hf:`` dataset or a file as they are trained on
            (``datasets`` streaming: nothing downloaded or prepared ahead): blocks of pairs,
            each shuffled and packed into batches from ``(seed, epoch, block)``, resumed exactly
            at the batch a run stopped after; validation and test splits (needed) are read whole.
        stream_block_size: pairs per shuffled block of a stream (larger: better mixed, more memory).
        num_proc: tokenising processes (``Dataset.map``); None: one per CPU (at most 8) for 10,000
            pairs or more, else one.
        num_workers: DataLoader worker processes (default: none on a CPU, up to 8 on a GPU).
        seed: training batch order seed (runs resume with exactly the same batches).
    """

    def __init__(
        self,
        source: str = "bible",
        source_lang: str = "en",
        target_lang: str = "es",
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        source_column: str | None = None,
        target_column: str | None = None,
        tokenizer: str | None = None,
        joint_vocab: bool = True,
        vocab_size: int = 8000,
        max_source_length: int = 256,
        max_target_length: int = 256,
        max_tokens: int = 4096,
        eval_max_tokens: int | None = None,
        bucket_width: int = 2,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        split_seed: int = 0,
        tokenizer_sample_bytes: int = 100_000_000,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        streaming: bool = False,
        stream_block_size: int = 10_000,
        num_workers: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=1, num_workers=num_workers, seed=seed)
        check_num_proc(num_proc)
        self.num_proc, self.streaming, self.stream_block_size = num_proc, streaming, stream_block_size
        if streaming and source == "bible":
            raise UserError("--data.streaming reads hf: datasets and files (--data.source tsv/jsonl), not the bundled Bible")
        files = {"train": train_file, "validation": validation_file, "test": test_file}
        given = [f"--data.{s}_file" for s, f in files.items() if f is not None]
        if source in FILE_SOURCES:
            if train_file is None:
                raise UserError(f"--data.source {source} needs --data.train_file (and optionally --data.validation_file, --data.test_file)")
            for split, f in files.items():
                if f is not None and not Path(f).expanduser().is_file():
                    raise UserError(f"--data.{split}_file {f} does not exist: pass a {source.upper()} file of sentence pairs")
        elif source == "bible" or source.startswith("hf:"):
            if given:
                raise UserError(f"{', '.join(given)} is read only with --data.source tsv or jsonl, not {source}")
            if source == "bible":
                if not BIBLE.is_file():
                    raise UserError(f"the bundled Bible {BIBLE} is missing: restore data/bible_en_es/ or pass another --data.source")
                for option, lang in (("source_lang", source_lang), ("target_lang", target_lang)):
                    if lang not in BIBLE_LANGS:
                        raise UserError(f"--data.{option} {lang!r} is not a language of the bundled Bible: choose en or es")
                if source_column is not None or target_column is not None:
                    raise UserError("--data.source_column/--data.target_column apply to files and datasets, not to the bundled Bible")
            elif source.startswith("hf:"):
                HubSpec.parse(source, example="hf:opus_books:en-es")
        else:
            raise UserError(f"--data.source {source!r} is unknown: choose bible, tsv, jsonl or hf:<name>[:<config>]")
        if (source_column or source_lang) == (target_column or target_lang):
            raise UserError(f"the source and the target are both {source_column or source_lang!r}: set --data.source_lang/--data.target_lang (or the columns) to two languages")
        if predict_file is not None and not Path(predict_file).expanduser().is_file():
            raise UserError(f"--data.predict_file {predict_file} does not exist: pass a text file (one sentence a line) or a TSV/JSONL file")
        if tokenizer is not None and not Path(tokenizer).expanduser().exists():
            raise UserError(f"--data.tokenizer {tokenizer} does not exist: pass a run folder or its tokenizer.json")
        reserved = len(BPE_SPECIAL_TOKENS) + len(BYTE_TOKENS)
        if tokenizer is None and vocab_size <= reserved:
            raise UserError(f"--data.vocab_size {vocab_size} is too small: it must exceed the {reserved} special and byte-fallback tokens")
        for option, value in (("max_source_length", max_source_length), ("max_target_length", max_target_length)):
            if value < 2:
                raise UserError(f"--data.{option} {value} is too short: a sentence of one token and [END] needs 2")
        for option, value in (("max_tokens", max_tokens), ("eval_max_tokens", eval_max_tokens)):
            if value is not None and value < max(max_source_length, max_target_length):
                raise UserError(
                    f"--data.{option} {value} is less than the longest sequence allowed (--data.max_source_length {max_source_length}, "
                    f"--data.max_target_length {max_target_length}): raise it or lower those"
                )
        if bucket_width < 1:
            raise UserError(f"--data.bucket_width {bucket_width} must be at least 1")
        for option, p in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= p < 1.0:
                raise UserError(f"--data.{option} {p} is not in [0, 1)")
        if val_fraction + test_fraction >= 1.0:
            raise UserError(f"--data.val_fraction + --data.test_fraction = {val_fraction + test_fraction} leaves no training pairs")
        self.source, self.source_lang, self.target_lang, self.files = source, source_lang, target_lang, files
        self.predict_file = predict_file
        self.source_column, self.target_column = source_column or source_lang, target_column or target_lang
        self.tokenizer_path, self.joint_vocab, self.vocab_size = tokenizer, joint_vocab, vocab_size
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.max_tokens, self.eval_max_tokens = max_tokens, eval_max_tokens or max_tokens
        self.bucket_width, self.val_fraction, self.test_fraction, self.split_seed = bucket_width, val_fraction, test_fraction, split_seed
        self.tokenizer_sample_bytes = tokenizer_sample_bytes
        self.cache_dir = cache_root(cache_dir)
        self._raw: dict[str, Pairs] | None = None
        self._books: dict[str, list[str]] | None = None
        self._tokenizers: tuple[Tokenizer, Tokenizer] | None = None
        self._encoded: dict[str, EncodedPairs] = {}
        self._predict_pairs: Pairs | None = None
        self.dropped_pairs = 0  # training pairs over the length limits
        self.collator: TranslationCollator | None = None

    # --- reading (on first use: the CLI reads the vocabulary size before setup) ----------------------
    def _read(self) -> dict[str, Pairs]:
        if self.source == "bible":
            verses = read_bible(BIBLE)
            sizes: dict[str, int] = {}
            for v in verses:
                sizes[v.book] = sizes.get(v.book, 0) + 1
            self._books = split_books(sizes, self.val_fraction, self.test_fraction, self.split_seed)
            where = f"the bundled Bible {BIBLE}"
            out = {}
            for split, books in self._books.items():
                chosen = set(books)
                picked = [v for v in verses if v.book in chosen]
                out[split] = Pairs.of([getattr(v, self.source_lang) for v in picked], [getattr(v, self.target_lang) for v in picked], where, [v.line for v in picked])
            if not out["validation"]:
                raise UserError("--data.val_fraction 0 leaves the Bible without a validation split: raise it")
            if not out["test"]:
                out["test"] = out["validation"]
            return out
        if self.streaming:
            raw = self._streamed_splits()
        elif self.source.startswith("hf:"):
            raw = hf_pairs(self.source, self.source_column, self.target_column, self.cache_dir / "translation")
        else:
            raw = {s: read_pair_file(f, self.source_column, self.target_column, self.source, self.cache_dir / "translation")
                   for s, f in self.files.items() if f is not None}
        if "validation" not in raw:
            if self.val_fraction <= 0:
                raise UserError(f"{raw['train'].where} comes without a validation split and --data.val_fraction is 0: pass --data.validation_file or raise it")
            kept, held = held_out(len(raw["train"]), self.val_fraction, self.split_seed)
            raw["validation"], raw["train"] = raw["train"].select(held), raw["train"].select(kept)
        if "test" not in raw:
            raw["test"] = raw["validation"]
        return raw

    @property
    def raw_splits(self) -> dict[str, Pairs]:
        """``train``, ``validation`` and ``test`` pairs as read (normalised, before length filtering)."""
        if self._raw is None:
            self._raw = self._read()
        return self._raw

    @property
    def books(self) -> dict[str, list[str]] | None:
        """The Bible's books in each split (``None`` for other sources)."""
        self.raw_splits  # noqa: B018
        return self._books

    # --- tokenizers -------------------------------------------------------------------------------
    def _load_tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        if self.tokenizer_path is not None:
            tok, target = load_bpe_tokenizers(self.tokenizer_path)
            if (target is not None) == self.joint_vocab:
                from lightning.pytorch.utilities import rank_zero_warn

                found = "separate source and target vocabularies" if target is not None else "one joint vocabulary"
                rank_zero_warn(f"--data.tokenizer {self.tokenizer_path} holds {found}: used as saved (--data.joint_vocab={self.joint_vocab} is ignored)")
            return tok, target if target is not None else tok
        train = _sample(self.raw_splits["train"], self.tokenizer_sample_bytes, self.split_seed)
        sides = {"src": "src_text", "tgt": "tgt_text"}
        digests = {k: _digest(train.texts(column)) for k, column in sides.items()}
        where = str(BIBLE) if self.source == "bible" else (self.source if self.source.startswith("hf:") else str(self.files["train"]))

        def train_on(keys: list[str]) -> Tokenizer:
            keys = sorted(keys, key=lambda k: digests[k])  # the same vocabulary for either direction
            corpus = "translation:" + "+".join(digests[k] for k in keys)
            return bpe_tokenizer(lambda: chain.from_iterable(train.texts(sides[k]) for k in keys), corpus, vocab_size=self.vocab_size,
                                 cache_dir=self.cache_dir / "tokenizers")

        try:
            if self.joint_vocab:
                tok = train_on(["src", "tgt"])
                return tok, tok
            return train_on(["src"]), train_on(["tgt"])
        except UserError as e:
            raise UserError(f"{e} ({where})") from None

    @property
    def tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        if self._tokenizers is None:
            self._tokenizers = self._load_tokenizers()
        return self._tokenizers

    @property
    def tokenizer(self) -> Tokenizer:
        """The source tokenizer (the joint one with ``joint_vocab``), loaded or trained on first use."""
        return self.tokenizers[0]

    @property
    def target_tokenizer(self) -> Tokenizer:
        """The target tokenizer (the same object as :attr:`tokenizer` for a joint vocabulary)."""
        return self.tokenizers[1]

    @property
    def joint(self) -> bool:
        """Whether source and target share one vocabulary (as trained, or as loaded)."""
        return self.tokenizer is self.target_tokenizer

    @property
    def tokenizer_vocab_size(self) -> int:
        """The source vocabulary's size (the model's ``vocab_size``)."""
        return self.tokenizer.get_vocab_size()

    @property
    def target_vocab_size(self) -> int | None:
        """The target vocabulary's size; None with one joint vocabulary (the model then shares one
        embedding between encoder, decoder and output projection)."""
        return None if self.joint else self.target_tokenizer.get_vocab_size()

    @property
    def special_ids(self) -> dict[str, int]:
        return bpe_special_ids(self.tokenizer)

    @property
    def pad_token_id(self) -> int:
        return self.special_ids["[PAD]"]

    @property
    def bos_token_id(self) -> int:
        """``[START]``: the decoder's first input."""
        return self.special_ids["[START]"]

    @property
    def eos_token_id(self) -> int:
        """``[END]``: closes every source and target."""
        return self.special_ids["[END]"]

    def save_tokenizer(self, folder: str | Path) -> Path:
        """Write ``tokenizer.json`` (and ``target_tokenizer.json`` for separate vocabularies) into
        ``folder`` (a run's folder); returns the ``tokenizer.json`` path."""
        return save_bpe_tokenizers(folder, self.tokenizer, None if self.joint else self.target_tokenizer)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Target-side token ids as text: up to the first ``[END]``, special tokens skipped."""
        ids = ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        eos = self.eos_token_id
        if eos in ids:
            ids = ids[: ids.index(eos)]
        return self.target_tokenizer.decode(ids, skip_special_tokens=True)

    def decode_batch(self, rows: Sequence[Sequence[int]] | Tensor) -> list[str]:
        """:meth:`decode` of each row (e.g. generated ``(B, T)`` ids)."""
        return [self.decode(r) for r in (rows.tolist() if isinstance(rows, Tensor) else rows)]

    # --- encoded splits ---------------------------------------------------------------------------
    @property
    def predict_pairs(self) -> Pairs:
        """The sentences to translate: ``predict_file``'s (``rows``: their line numbers), else the
        test split's sources."""
        if self._predict_pairs is None:
            if self.predict_file is not None:
                self._predict_pairs = read_source_lines(self.predict_file, self.source_column, cache_dir=self.cache_dir / "translation")
            else:
                self._predict_pairs = self.raw_splits["test"].sources_only()
        return self._predict_pairs

    def predict_lines(self, translations: Sequence[str]) -> list[str]:
        """The output file's lines: ``translations`` (one per sentence of :attr:`predict_pairs`, in
        order) each on its input's line, and an empty line for every blank input line, so that
        line ``i`` of the output translates line ``i`` of ``predict_file``."""
        rows = self.predict_pairs.rows
        if len(translations) != len(rows):
            raise ValueError(f"{len(translations)} translations for {len(rows)} sentences")
        if self.predict_file is None or _table_kind(Path(self.predict_file)) in PAIR_FILES:
            return list(translations)
        lines = [""] * max(rows, default=0)
        for row, text in zip(rows, translations):
            lines[row - 1] = text
        return lines

    def encoded(self, split: str) -> EncodedPairs:
        """A split tokenised (``train``, ``validation``, ``test`` or ``predict``), on first use.
        Training pairs over the length limits are dropped (counted in :attr:`dropped_pairs`);
        longer evaluation and prediction lines are truncated with a warning."""
        if split not in self._encoded:
            pairs = self.predict_pairs if split == "predict" else self.raw_splits[split]
            ds = encode_pairs(pairs, self.tokenizer, self.target_tokenizer, self.cache_dir / "translation", self.num_proc)
            full = EncodedPairs(ds)
            too_long = full.source_lengths() > self.max_source_length
            if full.has_target:
                too_long |= full.target_lengths() > self.max_target_length
            if split == "train":
                self.dropped_pairs = int(too_long.sum())
                if self.dropped_pairs == len(full):
                    raise UserError(f"no training pair of {pairs.where} fits --data.max_source_length {self.max_source_length} and --data.max_target_length {self.max_target_length}")
                if self.dropped_pairs:
                    from lightning.pytorch.utilities import rank_zero_info

                    rank_zero_info(f"{self.dropped_pairs} of {len(full)} training pairs are longer than --data.max_source_length "
                                   f"{self.max_source_length} / --data.max_target_length {self.max_target_length} tokens: left out")
                self._encoded[split] = EncodedPairs(ds, np.flatnonzero(~too_long))
            else:
                if too_long.any():
                    from lightning.pytorch.utilities import rank_zero_warn

                    rank_zero_warn(
                        f"{int(too_long.sum())} of the {len(too_long)} {split} lines ({pairs.where}) are longer than --data.max_source_length "
                        f"{self.max_source_length} / --data.max_target_length {self.max_target_length} tokens: truncated"
                        + (" (the references stay whole)" if full.has_target else "")
                    )
                self._encoded[split] = EncodedPairs(ds, limits=(self.max_source_length - 1, self.max_target_length - 1))
        return self._encoded[split]

    def prepare_data(self) -> None:
        self.tokenizer  # noqa: B018  (trains and caches the vocabulary once, before DDP ranks need it)

    def setup(self, stage: str) -> None:
        self.collator = TranslationCollator(self.pad_token_id, self.bos_token_id, self.eos_token_id)
        wanted = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}.get(stage, SPLITS)
        for split in wanted if not self.streaming else [w for w in wanted if w != "train"]:
            self.encoded(split)

    @property
    def train_set(self) -> EncodedPairs:
        return self.encoded("train")

    @property
    def val_set(self) -> EncodedPairs:
        return self.encoded("validation")

    @property
    def test_set(self) -> EncodedPairs:
        return self.encoded("test")

    @property
    def predict_set(self) -> EncodedPairs:
        return self.encoded("predict")

    # --- loaders ------------------------------------------------------------------------------------
    def batch_sampler(self, split: str, replicas: int | None = None, rank: int = 0) -> TokenBatchSampler:
        """The batch sampler of a split (``train``: shuffled per epoch, resumable; else sorted by
        length, in the same order every time), for ``replicas`` ranks (default: the trainer's)."""
        data = self.encoded(split)
        if replicas is None:
            replicas, rank = self._replicas()
        if split == "train":
            return TokenBatchSampler(data.lengths(), self.max_tokens, shuffle=True, seed=self.seed, num_replicas=replicas, rank=rank,
                                     drop_last=True, bucket_width=self.bucket_width)
        return TokenBatchSampler(data.lengths(), self.eval_max_tokens, shuffle=False, num_replicas=replicas, rank=rank, per_epoch=False)

    def padding_fraction(self, split: str = "train", epoch: int = 0) -> float:
        """The share of padding tokens (source and target together) in the batches of an epoch
        of ``split``: 0.041 for the Bible's training split with the defaults (its validation
        split, in sorted batches of ``eval_max_tokens``: 0.097)."""
        return self.batch_sampler(split, replicas=1).padding_fraction(epoch)

    def _collator(self) -> TranslationCollator:
        if self.collator is None:
            self.collator = TranslationCollator(self.pad_token_id, self.bos_token_id, self.eos_token_id)
        return self.collator

    # --- streaming ----------------------------------------------------------------------------------
    def _streams(self) -> Any:
        """The splits as ``datasets`` streams (an ``IterableDatasetDict``), train and validation needed."""
        import datasets

        if self.source.startswith("hf:"):
            streams = load_splits(self.source, streaming=True)
        else:
            files = {split: str(Path(f).expanduser()) for split, f in self.files.items() if f is not None}
            kind = _table_kind(Path(files["train"]))
            builder, options = {"tsv": ("csv", {"delimiter": "\t", "quoting": 3}), "csv": ("csv", {}), "json": ("json", {}), "jsonl": ("json", {}),
                                "parquet": ("parquet", {}), "arrow": ("arrow", {})}.get(kind, ("csv", {"delimiter": "\t", "quoting": 3}))
            streams = datasets.load_dataset(builder, data_files=files, streaming=True, **options)
        require_train(streams, self.source if self.source.startswith("hf:") else str(self.files["train"]))
        if "validation" not in streams:
            raise UserError(f"--data.streaming needs a validation split, and {self.source} has none (it has {', '.join(streams)}): "
                            "pass --data.validation_file or a dataset with one")
        return streams

    def _stream_pairs(self, rows: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for row in rows:
            a, b = (normalize_text(str(_field(row, c) or "")) for c in (self.source_column, self.target_column))
            if a and b:
                yield a, b

    def _streamed_splits(self) -> dict[str, Pairs]:
        """Validation and test pairs read whole; ``train``: the head of the training stream, of
        ``tokenizer_sample_bytes``, to train the vocabulary on."""
        streams = self._streams()
        out = {}
        for split in ("validation", "test"):
            if split in streams:
                pairs = list(self._stream_pairs(streams[split]))
                if not pairs:
                    raise UserError(f"the {split!r} split of {self.source} holds no sentence pairs")
                out[split] = Pairs.of([a for a, _ in pairs], [b for _, b in pairs], f"{self.source} [{split}]")
        head, size = [], 0
        for pair in self._stream_pairs(streams["train"]):
            head.append(pair)
            size += len(pair[0]) + len(pair[1])
            if size >= self.tokenizer_sample_bytes:
                break
        out["train"] = Pairs.of([a for a, _ in head], [b for _, b in head], f"{self.source} [train, first {len(head)} pairs]")
        return out

    def _stream_batches(self, rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
        """A block of streamed rows as collated training batches: pairs over the length limits
        left out, the rest packed by token count and shuffled (:class:`TokenBatchSampler`)."""
        pairs = list(self._stream_pairs(rows))
        src = [e.ids for e in self.tokenizer.encode_batch_fast([a for a, _ in pairs], add_special_tokens=False)]
        tgt = [e.ids for e in self.target_tokenizer.encode_batch_fast([b for _, b in pairs], add_special_tokens=False)]
        keep = [i for i in range(len(pairs)) if len(src[i]) < self.max_source_length and len(tgt[i]) < self.max_target_length]
        lengths = [(len(src[i]) + 1, len(tgt[i]) + 1) for i in keep]
        sampler = TokenBatchSampler(lengths, self.max_tokens, shuffle=True, seed=rng.getrandbits(62), bucket_width=self.bucket_width)
        collate = self._collator()
        return [collate([{"src": src[keep[j]], "tgt": tgt[keep[j]], "src_text": pairs[keep[j]][0], "tgt_text": pairs[keep[j]][1], "index": keep[j]}
                         for j in batch]) for batch in sampler.global_batches(0)]

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self.stream_loader(self._streams()["train"], self._stream_batches, self.stream_block_size)
        return self.train_loader(self.train_set, collate_fn=self._collator(), batch_sampler=self.batch_sampler("train"))

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set, collate_fn=self._collator(), batch_sampler=self.batch_sampler("validation"))

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, collate_fn=self._collator(), batch_sampler=self.batch_sampler("test"))

    def predict_dataloader(self) -> DataLoader:
        import warnings

        # Lightning warns that it cannot set drop_last on a custom batch sampler: this one drops nothing
        warnings.filterwarnings("ignore", message=r"You are using a custom batch sampler `TokenBatchSampler` for prediction")
        return self.eval_loader(self.predict_set, collate_fn=self._collator(), batch_sampler=self.batch_sampler("predict"))

