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

import hashlib
import json
import math
import random
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
from .loading import ResumableDataModule, TokenBatchSampler, mix_seed
from .sources import HubSpec, load_splits, require_train
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
_ENCODE_CHUNK = 20_000


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


# --- pairs as read ------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """Sentence pairs as read (normalised): source texts, target texts (``None``: sources only,
    to translate), where they came from and each one's line (or row) there."""

    src: list[str]
    tgt: list[str] | None
    where: str
    rows: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows = list(range(1, len(self.src) + 1))

    def __len__(self) -> int:
        return len(self.src)

    def select(self, picks: Sequence[int]) -> Pairs:
        return Pairs([self.src[i] for i in picks], None if self.tgt is None else [self.tgt[i] for i in picks], self.where, [self.rows[i] for i in picks])


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


def read_pair_file(path: str | Path, source_column: str, target_column: str | None, fmt: str = "tsv") -> Pairs:
    """Pairs (``target_column=None``: sources only) of a TSV with a header row (no quoting), JSON
    lines, a JSON list of objects or a CSV file (by the name's suffix, else ``fmt``; ``.gz`` is
    decompressed). A missing column or an empty text is a :class:`UserError` naming the file and
    the line (for ``.json`` / ``.csv``: the row)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data file {path} does not exist: pass a TSV or JSON-lines file of sentence pairs")
    kind = _table_kind(path)
    kind = kind if kind in ("tsv", "jsonl", "json", "csv") else fmt
    options = {source_column: "--data.source_column", target_column: "--data.target_column"}
    wanted = [c for c in (source_column, target_column) if c is not None]
    src: list[str] = []
    tgt: list[str] | None = [] if target_column is not None else None
    rows: list[int] = []
    records: Iterable[tuple[str, int, dict[str, Any]]]
    if kind == "tsv":
        lines = _open_text(path).split("\n")
        header = lines[0].rstrip("\r").split("\t") if lines else []
        for c in wanted:
            if c not in header:
                raise UserError(f"{path} has no column {c!r} (columns: {', '.join(header) or 'none'}): set {options[c]} or write a header row")

        def tsv_records() -> Iterable[tuple[str, int, dict[str, Any]]]:
            for n, line in enumerate(lines[1:], 2):
                line = line.rstrip("\r")
                if not line.strip():
                    continue
                values = line.split("\t")
                if len(values) != len(header):
                    raise UserError(f"{path} line {n} has {len(values)} tab-separated fields but the header has {len(header)}")
                yield "line", n, dict(zip(header, values))

        records = tsv_records()
    elif kind in ("jsonl", "json"):
        text = _open_text(path)
        data = None
        if kind == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = None  # JSON lines in a .json file
        if data is not None:
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise UserError(f"{path} holds no list of objects: write one object per line (JSON lines) or a list of objects")
            records = [("row", n, r) for n, r in enumerate(data, 1)]
        else:
            parsed = []
            for n, line in enumerate(text.split("\n"), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {n} is not valid JSON: {e.msg}") from None
                if not isinstance(obj, dict):
                    raise UserError(f"{path} line {n} is not a JSON object: write one object per line")
                parsed.append(("line", n, obj))
            records = parsed
        if records:
            first = records[0][2]
            for c in wanted:
                try:
                    _field(first, c)
                except KeyError:
                    raise UserError(f"{path} has no column {c!r} (columns: {_columns_text(first)}): set {options[c]}") from None
    elif kind == "csv":
        columns, table = read_table(path)
        for c in wanted:
            if c not in columns:
                raise UserError(f"{path} has no column {c!r} (columns: {', '.join(columns) or 'none'}): set {options[c]}")
        records = [("row", n, r) for n, r in enumerate(table, 1)]
    else:
        raise UserError(f"data file {path} has an unknown type {path.suffix!r}: use .tsv or .jsonl (or .csv / .json)")
    for unit, n, record in records:
        where = f"{path} {unit} {n}"
        values = []
        for c in wanted:
            try:
                values.append(_text(_field(record, c), where, c))
            except KeyError:
                raise UserError(f"{where} has no {c!r} field (fields: {_columns_text(record)}): every line needs both texts") from None
        src.append(values[0])
        if tgt is not None:
            tgt.append(values[1])
        rows.append(n)
    if not src:
        raise UserError(f"{path} holds no sentence pairs")
    return Pairs(src, tgt, str(path), rows)


def read_source_lines(path: str | Path, source_column: str, fmt: str = "txt") -> Pairs:
    """Sentences to translate: a text file of one sentence a line (blank lines skipped; ``rows``
    are the line numbers) or a TSV / JSONL / CSV / JSON file with the source column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--data.predict_file {path} does not exist: pass a text file (one sentence a line) or a TSV/JSONL file")
    if _table_kind(path) in ("tsv", "jsonl", "json", "csv"):
        return read_pair_file(path, source_column, None)
    src, rows = [], []
    for n, line in enumerate(_open_text(path).split("\n"), 1):
        text = normalize_text(line)
        if text:
            src.append(text)
            rows.append(n)
    if not src:
        raise UserError(f"--data.predict_file {path} holds no text")
    return Pairs(src, None, str(path), rows)


def hf_pairs(spec: str, source_column: str, target_column: str) -> dict[str, Pairs]:
    """The splits of a Hugging Face translation dataset (``translation`` dicts or two columns);
    pairs with an empty side are skipped with a warning."""
    label = spec
    ds = load_splits(HubSpec.parse(spec, example="hf:wmt14:de-en"))
    require_train(ds, label)
    picked = {s: (s if s in ds else None) for s in SPLITS}
    out: dict[str, Pairs] = {}
    for split, key in picked.items():
        if key is None:
            continue
        d = ds[key]
        columns = list(d.column_names)
        if source_column in columns and target_column in columns:
            pairs: Iterable[tuple[Any, Any]] = zip(d[source_column], d[target_column])
        elif "translation" in columns:
            first = d[0]["translation"] if len(d) else {}
            for c, option in ((source_column, "source_column"), (target_column, "target_column")):
                if c not in first:
                    raise UserError(f"dataset {label!r} has no {c!r} text (translation languages: {', '.join(first) or 'none'}): set --data.source_lang/--data.target_lang or --data.{option}")
            pairs = ((t.get(source_column), t.get(target_column)) for t in d["translation"])
        else:
            missing = next(c for c in (source_column, target_column) if c not in columns)
            raise UserError(f"split {key!r} of dataset {label!r} has no column {missing!r} (columns: {', '.join(columns)}): set --data.source_column/--data.target_column")
        src, tgt, rows, skipped = [], [], [], 0
        for n, (a, b) in enumerate(pairs, 1):
            a, b = normalize_text(str(a or "")), normalize_text(str(b or ""))
            if not a or not b:
                skipped += 1
                continue
            src.append(a)
            tgt.append(b)
            rows.append(n)
        if skipped:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(f"{skipped} pairs of the {key!r} split of {label} have an empty text and are skipped")
        if not src:
            raise UserError(f"the {key!r} split of dataset {label!r} holds no sentence pairs")
        out[split] = Pairs(src, tgt, f"{label} [{key}]", rows)
    return out


def held_out(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(kept, held out)`` indices: ``round(n * fraction)`` (at least one) drawn with ``seed``,
    both in their original order."""
    if n < 2:
        raise UserError(f"{n} training pair{'s' if n != 1 else ''} cannot be split into training and validation: pass --data.validation_file")
    k = min(n - 1, max(1, round(n * fraction)))
    picks = set(random.Random(mix_seed(seed, n)).sample(range(n), k))
    return [i for i in range(n) if i not in picks], sorted(picks)


# --- encoded pairs --------------------------------------------------------------------------------------
def encode_texts(tok: Tokenizer, texts: Sequence[str], limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, offsets, full lengths)``: the texts' tokens (no special tokens) as one flat int32
    array, each cut to ``limit`` tokens, and every text's length before the cut."""
    ids_parts, lengths_parts, full_parts = [], [], []
    for start in range(0, len(texts), _ENCODE_CHUNK):
        encodings = tok.encode_batch(list(texts[start : start + _ENCODE_CHUNK]), add_special_tokens=False)
        full = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        kept = full if limit is None else np.minimum(full, limit)
        ids_parts.append(np.fromiter(chain.from_iterable(e.ids[:limit] for e in encodings), np.int32, int(kept.sum())))
        lengths_parts.append(kept)
        full_parts.append(full)
    lengths = np.concatenate(lengths_parts) if lengths_parts else np.zeros(0, np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
    return ids, offsets, np.concatenate(full_parts) if full_parts else np.zeros(0, np.int64)


class EncodedPairs(Dataset):
    """A tokenised split held as flat arrays: item ``i`` is a dict of the source tokens ``src``
    (int32, no special tokens), the target tokens ``tgt`` (``None`` for prediction), the texts
    ``src_text`` / ``tgt_text`` and its position ``index``."""

    def __init__(self, pairs: Pairs, src: tuple[np.ndarray, np.ndarray], tgt: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.pairs = pairs
        self.src_ids, self.src_offsets = src
        self.tgt_ids, self.tgt_offsets = tgt if tgt is not None else (None, None)

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    def source_lengths(self) -> np.ndarray:
        """Encoder positions of each item: its tokens and ``[END]``."""
        return np.diff(self.src_offsets) + 1

    def target_lengths(self) -> np.ndarray:
        """Decoder positions of each item: ``[START] y`` (equally ``y [END]``)."""
        return np.diff(self.tgt_offsets) + 1  # type: ignore[arg-type]

    def lengths(self) -> np.ndarray:
        """``(n, 2)`` source and target lengths (``(n, 1)`` without targets), for batching."""
        if self.tgt_ids is None:
            return self.source_lengths()[:, None]
        return np.stack([self.source_lengths(), self.target_lengths()], 1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b = self.src_offsets[i], self.src_offsets[i + 1]
        item = {"src": self.src_ids[a:b], "src_text": self.pairs.src[i], "index": i}
        if self.tgt_ids is not None:
            c, d = self.tgt_offsets[i], self.tgt_offsets[i + 1]  # type: ignore[index]
            item["tgt"], item["tgt_text"] = self.tgt_ids[c:d], self.pairs.tgt[i]  # type: ignore[index]
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
        split_seed: seed of the held-out splits (the Bible's books).
        cache_dir: cache folder of trained tokenizers (default ``$TFM_CACHE`` or ``~/.cache/tfm``).
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
        cache_dir: str | None = None,
        num_workers: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=1, num_workers=num_workers, seed=seed)
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
                out[split] = Pairs([getattr(v, self.source_lang) for v in picked], [getattr(v, self.target_lang) for v in picked], where, [v.line for v in picked])
            if not out["validation"]:
                raise UserError("--data.val_fraction 0 leaves the Bible without a validation split: raise it")
            if not out["test"]:
                out["test"] = out["validation"]
            return out
        if self.source.startswith("hf:"):
            raw = hf_pairs(self.source, self.source_column, self.target_column)
        else:
            raw = {s: read_pair_file(f, self.source_column, self.target_column, self.source) for s, f in self.files.items() if f is not None}
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
        train = self.raw_splits["train"]
        sides = {"src": (self.source_column, train.src), "tgt": (self.target_column, train.tgt)}
        digests = {k: _digest(texts) for k, (_, texts) in sides.items()}  # type: ignore[arg-type]
        where = str(BIBLE) if self.source == "bible" else (self.source if self.source.startswith("hf:") else str(self.files["train"]))

        def train_on(keys: list[str]) -> Tokenizer:
            keys = sorted(keys, key=lambda k: digests[k])  # the same vocabulary for either direction
            corpus = "translation:" + "+".join(digests[k] for k in keys)
            return bpe_tokenizer(lambda: chain.from_iterable(sides[k][1] for k in keys), corpus, vocab_size=self.vocab_size,
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
                self._predict_pairs = read_source_lines(self.predict_file, self.source_column)
            else:
                test = self.raw_splits["test"]
                self._predict_pairs = Pairs(test.src, None, test.where, test.rows)
        return self._predict_pairs

    def predict_lines(self, translations: Sequence[str]) -> list[str]:
        """The output file's lines: ``translations`` (one per sentence of :attr:`predict_pairs`, in
        order) each on its input's line, and an empty line for every blank input line, so that
        line ``i`` of the output translates line ``i`` of ``predict_file``."""
        rows = self.predict_pairs.rows
        if len(translations) != len(rows):
            raise ValueError(f"{len(translations)} translations for {len(rows)} sentences")
        if self.predict_file is None or _table_kind(Path(self.predict_file)) in ("tsv", "jsonl", "json", "csv"):
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
            if split == "train":
                src_ids, src_off, src_len = encode_texts(self.tokenizer, pairs.src)
                tgt_ids, tgt_off, tgt_len = encode_texts(self.target_tokenizer, pairs.tgt)  # type: ignore[arg-type]
                keep = (src_len + 1 <= self.max_source_length) & (tgt_len + 1 <= self.max_target_length)
                self.dropped_pairs = int(len(keep) - keep.sum())
                if not keep.any():
                    raise UserError(f"no training pair of {pairs.where} fits --data.max_source_length {self.max_source_length} and --data.max_target_length {self.max_target_length}")
                if self.dropped_pairs:
                    from lightning.pytorch.utilities import rank_zero_info

                    rank_zero_info(f"{self.dropped_pairs} of {len(keep)} training pairs are longer than --data.max_source_length "
                                   f"{self.max_source_length} / --data.max_target_length {self.max_target_length} tokens: left out")
                    picks = np.flatnonzero(keep)
                    pairs = pairs.select(picks.tolist())
                    src = _select(src_ids, src_off, picks)
                    tgt = _select(tgt_ids, tgt_off, picks)
                else:
                    src, tgt = (src_ids, src_off), (tgt_ids, tgt_off)
                self._encoded[split] = EncodedPairs(pairs, src, tgt)
            else:
                src_ids, src_off, src_len = encode_texts(self.tokenizer, pairs.src, self.max_source_length - 1)
                long = src_len + 1 > self.max_source_length
                tgt = None
                if pairs.tgt is not None:
                    tgt_ids, tgt_off, tgt_len = encode_texts(self.target_tokenizer, pairs.tgt, self.max_target_length - 1)
                    long |= tgt_len + 1 > self.max_target_length
                    tgt = (tgt_ids, tgt_off)
                if long.any():
                    from lightning.pytorch.utilities import rank_zero_warn

                    rank_zero_warn(
                        f"{int(long.sum())} of the {len(long)} {split} lines ({pairs.where}) are longer than --data.max_source_length "
                        f"{self.max_source_length} / --data.max_target_length {self.max_target_length} tokens: truncated"
                        + (" (the references stay whole)" if pairs.tgt is not None else "")
                    )
                self._encoded[split] = EncodedPairs(pairs, (src_ids, src_off), tgt)
        return self._encoded[split]

    def prepare_data(self) -> None:
        self.tokenizer  # noqa: B018  (trains and caches the vocabulary once, before DDP ranks need it)

    def setup(self, stage: str) -> None:
        self.collator = TranslationCollator(self.pad_token_id, self.bos_token_id, self.eos_token_id)
        wanted = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}.get(stage, SPLITS)
        for split in wanted:
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

    def train_dataloader(self) -> DataLoader:
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


def _select(ids: np.ndarray, offsets: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat-array rows ``picks`` of ``(ids, offsets)``."""
    lengths = (offsets[1:] - offsets[:-1])[picks]
    new_offsets = np.zeros(len(picks) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    index = np.repeat(offsets[picks] - new_offsets[:-1], lengths) + np.arange(int(new_offsets[-1]))
    return ids[index], new_offsets
