"""Machine translation data: the bundled English-Spanish Bible (split by book), files of sentence pairs and Hugging
Face translation datasets; a BPE vocabulary; batches packed by token count (the Bible, with the defaults: 221 batches
of ~124 pairs, 4.1% padding). Texts are NFKC-normalised and stripped. The source is ``x [END]``; the decoder reads
``tgt_in = [START] y`` and predicts ``tgt_out = y [END]``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import chain, takewhile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .loading import ArrowRows, ResumableDataModule, TokenBatchSampler, mix_seed
from .sources import (
    SPLITS,
    STAGE_SPLITS,
    TABLE_FILES,
    HubSpec,
    build_cached,
    check_num_proc,
    dataset_rows,
    file_kind,
    flat,
    load_shards,
    load_splits,
    preparation_processes,
    quiet_fork,
    read_records,
    require_train,
    text_digest,
    text_lines,
    write_records,
)
from .text import remapped, sample_rows, text_bytes
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
FILE_SOURCES = ("tsv", "jsonl")
SIDES = ("source_column", "target_column")  # the options naming the two texts' columns


def normalize_text(text: str) -> str:
    """NFKC, without surrounding whitespace: the form in which texts are tokenised and scored."""
    return unicodedata.normalize("NFKC", text).strip()


def _refuse(mistake: object, message: str) -> None:
    if mistake:
        raise UserError(message)


# --- the bundled Bible ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verse:
    """One verse pair: book (``I Samuel``), chapter, verse, the cleaned texts and the line of the TSV file."""

    book: str
    chapter: int
    verse: int
    en: str
    es: str
    line: int = 0


def read_bible(path: str | Path = BIBLE) -> list[Verse]:
    """The verse pairs of ``bible_en_es.tsv.gz`` (columns ``book chapter verse en es``), in order."""
    return list(_read_bible(str(Path(path).expanduser().resolve())))


@lru_cache(maxsize=2)
def _read_bible(path_str: str) -> tuple[Verse, ...]:
    path = Path(path_str)
    _refuse(not path.is_file(),
            f"the bundled Bible {path} is missing: restore data/bible_en_es/ or pass another --data.source")
    lines = text_lines(path)
    header = next(lines, (1, ""))[1].split("\t")
    _refuse(header != ["book", "chapter", "verse", "en", "es"],
            f"{path} is not the bundled Bible: its header is {header}, not book chapter verse en es")
    verses = []
    for n, line in lines:
        if not line:
            continue
        fields = line.split("\t")
        _refuse(len(fields) != 5 or not fields[2].isdigit(),
                f"{path} line {n} is not a verse pair (book, chapter, verse, en, es)")
        book, chapter, verse, en, es = fields
        # the texts without the KJV's opening pilcrow ("¶ ") and USFM \nd (divine name) markers
        en, es = (normalize_text(t.replace("\\nd ", "").replace("\\nd", "").removeprefix("¶").strip())
                  for t in (en, es))
        _refuse(not en or not es, f"{path} line {n} ({book} {chapter}:{verse}) has an empty text")
        verses.append(Verse(book, int(chapter), int(verse), en, es, n))
    return tuple(verses)


def split_books(sizes: dict[str, int], val_fraction: float = 0.05, test_fraction: float = 0.05,
                seed: int = 0) -> dict[str, list[str]]:
    """Books of each split (in the order of ``sizes``): validation, then test, take the seeded shuffled books until
    they hold 95% of their share of the pairs, passing over a book that would take them beyond 110%."""
    books = list(sizes)
    random.Random(mix_seed(seed, 0xB1B1E)).shuffle(shuffled := books[:])
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


# --- pairs as read: Arrow tables ------------------------------------------------------------------------------------
def pair_features(with_target: bool = True) -> Any:
    """``src_text``, ``tgt_text`` (absent: sources only) and ``row`` (the line or row in its file or dataset)."""
    import datasets  # 0.35 s to import: only when a dataset is read

    text = datasets.Value("string")
    return datasets.Features({"src_text": text, **({"tgt_text": text} if with_target else {}),
                              "row": datasets.Value("int64")})


@dataclass
class Pairs:
    """Sentence pairs as read: a ``datasets.Dataset`` of :func:`pair_features` (memory-mapped for files and
    datasets), where they came from, and ``key``, what identifies them for caches."""

    ds: Any
    where: str
    key: str
    base: Pairs | None = None  # a selection: the pairs it selects from, and which (``picks``)
    picks: np.ndarray | None = None

    @classmethod
    def of(cls, pairs: list[tuple[int, str, str]], where: str) -> Pairs:
        """``(row, source, target)`` held in memory (the Bible, the validation split of a stream)."""
        import datasets  # 0.35 s to import: only when a dataset is read

        rows, src, tgt = ([p[i] for p in pairs] for i in range(3))
        ds = datasets.Dataset.from_dict({"src_text": src, "tgt_text": tgt, "row": rows}, features=pair_features())
        return cls(ds, where, text_digest(chain(src, tgt)))

    @classmethod
    def written(cls, records: Callable[[], Iterable[dict[str, Any]]], where: str, path: Path, with_target: bool = True,
                empty: str | None = None) -> Pairs:
        """Pairs of ``records()``, written once to the Arrow file ``path`` (its name is their key), memory-mapped."""
        import datasets  # 0.35 s to import: only when a dataset is read

        build_cached(path, lambda tmp: write_records(records(), tmp, pair_features(with_target)))
        ds = datasets.Dataset.from_file(str(path))
        _refuse(not len(ds), empty or f"{where} holds no sentence pairs")
        return cls(ds, where, path.stem)

    has_target = property(lambda self: "tgt_text" in self.ds.column_names)
    src = property(lambda self: self.ds["src_text"][:])
    tgt = property(lambda self: self.ds["tgt_text"][:] if self.has_target else None)
    rows = property(lambda self: self.ds["row"][:])

    def texts(self, column: str) -> Iterator[Any]:
        """A column's values, read 10,000 at a time."""
        for batch in self.ds.select_columns([column]).iter(batch_size=10_000):
            yield from batch[column]

    def __len__(self) -> int:
        return len(self.ds)

    def select(self, picks: Sequence[int]) -> Pairs:
        picks = np.asarray(picks, dtype=np.int64)
        key = hashlib.sha256(self.key.encode() + picks.tobytes()).hexdigest()
        rows = picks if self.picks is None else self.picks[picks]
        return Pairs(self.ds.select(picks), self.where, key, self.base or self, rows)


def _pairs(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Iterator[tuple[int, str, str]]:
    """``(number, source, target)`` of the rows (of a dataset or stream) whose two texts are not empty."""
    for n, row in enumerate(map(flat, rows), 1):
        a, b = (normalize_text(str(row[c] or "")) for c in columns)
        if a and b:
            yield n, a, b


def _file_rows(path: Path, columns: dict[str, str], kind: str, cache_dir: Path) -> Iterator[dict[str, Any]]:
    """A pairs file's records, as a ``datasets`` stream reads them."""
    yield from (record for *_, record in read_records(path, columns, cache_dir, kind))


def _text(value: Any, where: str, column: str) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else normalize_text(str(value))
    _refuse(not text, f"{where}: the {column!r} text is empty: fill it in or remove the line")
    return text


def read_pair_file(path: str | Path, columns: list[str], fmt: str, folder: Path) -> Pairs:
    """The texts of ``columns`` (source and target, or the source alone) of a table file (``fmt`` for other suffixes:
    ``txt``, one sentence a line), read line by line into an Arrow file in ``folder``; a mistake names its line."""
    path = Path(path).expanduser()
    kind = file_kind(path) if file_kind(path) in TABLE_FILES else fmt

    def records() -> Iterator[dict[str, Any]]:
        if kind == "txt":  # sentences to translate, one a line
            rows = (("line", n, {columns[0]: line}) for n, line in text_lines(path) if normalize_text(line))
        else:
            rows = read_records(path, dict(zip(columns, SIDES)), folder / "datasets", kind)
        for unit, n, record in rows:
            where = f"{path} {unit} {n}"
            if missing := [c for c in columns if c not in record]:
                raise UserError(f"{where} has no {missing[0]!r} field (fields: {', '.join(record) or 'none'}): every "
                                "line needs both texts")
            yield {**{name: _text(record[c], where, c) for name, c in zip(("src_text", "tgt_text"), columns)}, "row": n}

    stat = path.stat()
    key = text_digest([str(path.resolve()), str(stat.st_size), str(stat.st_mtime_ns), kind, *columns])[:16]
    return Pairs.written(records, str(path), folder / f"pairs-{key}.arrow", len(columns) == 2,
                         f"--data.predict_file {path} holds no text" if kind == "txt" else None)


def hf_pairs(spec: str, both: list[str], folder: Path) -> dict[str, Pairs]:
    """The splits of a Hugging Face translation dataset (``translation`` dicts or ``both`` columns); pairs with an
    empty side are skipped with a warning."""
    ds = load_splits(HubSpec.parse(spec, example="hf:wmt14:de-en"))
    require_train(ds, spec)
    out = {}
    for split in (s for s in SPLITS if s in ds):
        d = ds[split]
        key = text_digest([spec, split, *both, d._fingerprint])[:16]  # the fingerprint: what datasets' cache keys on
        columns = both if set(both) <= set(d.column_names) else ["translation"]
        if columns != both:
            missing = next(c for c in both if c not in d.column_names)
            _refuse("translation" not in d.column_names, f"split {split!r} of dataset {spec!r} has no column "
                    f"{missing!r} (columns: {', '.join(d.column_names)}): set "
                    "--data.source_column/--data.target_column")
            first = d[0]["translation"] if len(d) else {}
            for c, option in zip(both, SIDES):
                _refuse(c not in first, f"dataset {spec!r} has no {c!r} text (translation languages: "
                        f"{', '.join(first) or 'none'}): set --data.source_lang/--data.target_lang or --data.{option}")

        def records(d: Any = d, split: str = split, columns: list[str] = columns) -> Iterator[dict[str, Any]]:
            kept = 0
            for n, a, b in _pairs(dataset_rows(d.select_columns(columns)), both):
                kept += 1
                yield {"src_text": a, "tgt_text": b, "row": n}
            if kept < len(d):
                rank_zero_warn(f"{len(d) - kept} pairs of the {split!r} split of {spec} have an empty text and are "
                               "skipped")

        out[split] = Pairs.written(records, f"{spec} [{split}]", folder / f"hf-{key}.arrow",
                                   empty=f"the {split!r} split of dataset {spec!r} holds no sentence pairs")
    return out


def held_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held out)`` indices: ``round(n * fraction)`` (at least one) drawn with ``seed``, both in order."""
    if n < 2:
        raise UserError(f"{n} training pair{'s' if n != 1 else ''} cannot be split into training and validation: "
                        "pass --data.validation_file")
    k = min(n - 1, max(1, round(n * fraction)))
    held = np.zeros(n, dtype=bool)
    held[random.Random(mix_seed(seed, n)).sample(range(n), k)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _sample(pairs: Pairs, budget: int, seed: int) -> Pairs:
    """A seeded random sample of about ``budget`` bytes of text (all of smaller pairs), read through a memory
    map of its own (:func:`~tfm.data.text.remapped`): the vocabulary's sample does not stay in memory."""
    rows = sample_rows(text_bytes(pairs.ds, ["src_text", "tgt_text"]), budget, seed)
    whole = Pairs(remapped(pairs.ds), pairs.where, pairs.key)
    return whole if len(rows) == len(pairs) else whole.select(rows.tolist())


# --- encoded pairs --------------------------------------------------------------------------------------------------
def _encode_pairs(batch: dict[str, list], src_tok: Tokenizer, tgt_tok: Tokenizer) -> dict[str, list]:
    """A batch of pairs' token ids (no special tokens, whole: limits apply when they are read)."""
    out = {"src": [e.ids for e in src_tok.encode_batch_fast(batch["src_text"], add_special_tokens=False)]}
    if "tgt_text" in batch:
        out["tgt"] = [e.ids for e in tgt_tok.encode_batch_fast(batch["tgt_text"], add_special_tokens=False)]
    return out


def encode_pairs(pairs: Pairs, src_tok: Tokenizer, tgt_tok: Tokenizer, folder: Path, num_proc: int | None) -> Any:
    """The pairs with their token ids (``src``, ``tgt``), prepared once (a batched ``Dataset.map`` in ``num_proc``
    processes) into an Arrow cache keyed by the pairs and the tokenizers, memory-mapped."""
    import datasets  # 0.35 s to import: only when a dataset is read

    key = text_digest([pairs.key, src_tok.to_str(), tgt_tok.to_str()])[:16]
    ids = datasets.Sequence(datasets.Value("int32"))
    features = datasets.Features({**pair_features(pairs.has_target), "src": ids,
                                  **({"tgt": ids} if pairs.has_target else {})})

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        processes = preparation_processes(num_proc, len(pairs))
        with quiet_fork(processes):
            # batches of 10,000 rows: a tenth of the record batches to index when the table is mapped
            pairs.ds.map(_encode_pairs, batched=True, batch_size=1000, writer_batch_size=10_000, num_proc=processes,
                         features=features, fn_kwargs={"src_tok": src_tok, "tgt_tok": tgt_tok}, desc="Tokenizing pairs",
                         cache_file_name=str(tmp / "pairs.arrow"), new_fingerprint=f"encoded-{key}")

    return load_shards(build_cached(folder / f"encoded-{key}", build), "pairs")


class EncodedPairs(Dataset):
    """A tokenised table read in place (memory-mapped), or a split of its rows (:meth:`select`): item ``i`` holds
    ``src`` and ``tgt`` (int32 tokens, at most ``limits``; no ``tgt`` to predict), the whole ``src_text`` /
    ``tgt_text`` and ``index``."""

    def __init__(self, ds: Any) -> None:
        sides = [side for side in ("src", "tgt") if side in ds.column_names]
        self.table = ArrowRows(ds, [c for side in sides for c in (side, f"{side}_text")])
        self.picks = np.arange(len(ds))  # the table's rows in the split (:meth:`select`)
        self.limits: tuple[int | None, ...] = (None, None)
        columns = ds.with_format("arrow")[:]
        self.full = {side: pc.list_value_length(columns.column(side)).to_numpy().astype(np.int64) for side in sides}

    def __len__(self) -> int:
        return len(self.picks)

    def select(self, picks: np.ndarray | None, limits: tuple[int | None, int | None] = (None, None)) -> EncodedPairs:
        """The rows ``picks`` of the table (None: all), within ``limits``: the table and its lengths shared."""
        out = copy.copy(self)
        out.picks, out.limits = self.picks if picks is None else picks, limits
        return out

    def lengths(self) -> np.ndarray:
        """``(n, 2)`` positions of each item's ``x [END]`` and ``[START] y`` (``(n, 1)`` to predict), within limits."""
        n = [self.full[side][self.picks] for side in self.full]
        return np.stack([k if limit is None else np.minimum(k, limit) for k, limit in zip(n, self.limits)], 1) + 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        row, item = int(self.picks[i]), {"index": i}
        for side, limit in zip(self.full, self.limits):
            item[side] = self.table.column(side, row)[:limit]
            item[f"{side}_text"] = self.table.column(f"{side}_text", row)
        return item


class TranslationCollator:
    """A batch of int64 ``src_ids`` ``(B, S)`` = ``x [END]``, ``tgt_in`` / ``tgt_out`` ``(B, T)`` = ``[START] y`` /
    ``y [END]`` (not to predict), padded with ``pad_id``; the ``src_text``, ``tgt_text`` and ``index`` of each."""

    def __init__(self, pad_id: int, bos_id: int, eos_id: int) -> None:
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    def _pad(self, seqs: list[Any], start: bool) -> Tensor:
        """``[START] s`` (``start``) or ``s [END]`` of each sequence, padded."""
        out = np.full((len(seqs), max(len(s) for s in seqs) + 1), self.pad_id, dtype=np.int64)
        for row, s in enumerate(seqs):
            if start:
                out[row, 0], out[row, 1 : len(s) + 1] = self.bos_id, s
            else:
                out[row, : len(s)], out[row, len(s)] = s, self.eos_id
        return torch.from_numpy(out)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"src_ids": self._pad([s["src"] for s in samples], start=False),
                                 "src_text": [s["src_text"] for s in samples]}
        if "tgt" in samples[0]:
            tgt = [s["tgt"] for s in samples]
            batch.update(tgt_in=self._pad(tgt, start=True), tgt_out=self._pad(tgt, start=False),
                         tgt_text=[s["tgt_text"] for s in samples])
        batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        return batch


# --- the DataModule -------------------------------------------------------------------------------------------------
class TranslationDataModule(ResumableDataModule):
    """Sentence pairs for sequence-to-sequence translation, batched by token count (see :class:`TranslationCollator`;
    ``index``: positions in the split, or among :attr:`predict_pairs`, whose ``rows`` are the file's lines).

    Args:
        source: ``bible`` (30,270 KJV / Reina-Valera 1909 verse pairs, split by book), ``tsv`` or ``jsonl`` (files
            named by ``train_file`` ...), or ``hf:<name>[:<config>]`` (``translation`` dicts or the two columns).
        source_lang: the language translated from (the Bible: ``en`` or ``es``; else the default source column).
        target_lang: the language translated into.
        train_file: training pairs: TSV with a header row (no quoting), JSON lines, CSV, JSON, Parquet or Arrow.
        validation_file: validation pairs; default: ``val_fraction`` of the training pairs.
        test_file: test pairs; default: the validation split.
        predict_file: sentences to translate, one a line (or a pairs file); default: the test split's sources.
        source_column: the source texts' column in files or a dataset (default: ``source_lang``).
        target_column: the target texts' column (default: ``target_lang``).
        tokenizer: a run folder or its ``tokenizer.json`` (with ``target_tokenizer.json``: separate vocabularies);
            default: a BPE vocabulary trained on the training pairs (cached).
        joint_vocab: one vocabulary for both languages (else one per side) when training one.
        vocab_size: tokens per trained vocabulary (4 special and 256 byte-fallback tokens included).
        max_source_length: longest ``x [END]`` in tokens: longer training pairs dropped, other lines truncated.
        max_target_length: longest ``[START] y`` in tokens: the same.
        max_tokens: padded tokens per training batch on each side (per device).
        eval_max_tokens: the same for evaluation and prediction batches (default ``max_tokens``).
        bucket_width: length bucket width of training batches: wider mixes more, pads more (Bible: 1: 3.8%, 4: 6.3%).
        val_fraction: share held out for validation (Bible: in whole books; else when there is no validation split).
        test_fraction: share held out for testing (the Bible only).
        split_seed: seed of the held-out splits (the Bible's books) and of the tokenizer's sample.
        tokenizer_sample_bytes: train the vocabulary on a seeded sample of the training pairs of about this many bytes.
        cache_dir: cache of tokenizers and prepared pairs (default ``$TFM_CACHE`` or ``~/.cache/tfm``).
        num_proc: tokenising processes; None: one per CPU (at most 8) for 10,000 pairs or more, else one.
        streaming: read the training pairs of a ``hf:`` dataset or a file as trained on, in blocks shuffled from
            ``(seed, epoch, block)``, resumed exactly; validation and test read whole.
        stream_block_size: pairs per shuffled block of a stream (larger: better mixed, more memory).
        num_workers: DataLoader worker processes (default: none on a CPU, up to 8 on a GPU).
        seed: training batch order seed (runs resume with exactly the same batches).
    """

    def __init__(self, source: str = "bible", source_lang: str = "en", target_lang: str = "es",
                 train_file: str | None = None, validation_file: str | None = None, test_file: str | None = None,
                 predict_file: str | None = None, source_column: str | None = None, target_column: str | None = None,
                 tokenizer: str | None = None, joint_vocab: bool = True, vocab_size: int = 8000,
                 max_source_length: int = 256, max_target_length: int = 256, max_tokens: int = 4096,
                 eval_max_tokens: int | None = None, bucket_width: int = 2, val_fraction: float = 0.05,
                 test_fraction: float = 0.05, split_seed: int = 0, tokenizer_sample_bytes: int = 100_000_000,
                 cache_dir: str | None = None, num_proc: int | None = None, streaming: bool = False,
                 stream_block_size: int = 10_000, num_workers: int | None = None, seed: int = 0) -> None:
        super().__init__(batch_size=1, num_workers=num_workers, seed=seed)
        check_num_proc(num_proc)
        _refuse(streaming and source == "bible",
                "--data.streaming reads hf: datasets and files (--data.source tsv/jsonl), not the bundled Bible")
        files = {"train": train_file, "validation": validation_file, "test": test_file}
        if source in FILE_SOURCES:
            _refuse(train_file is None, f"--data.source {source} needs --data.train_file (and optionally "
                                        "--data.validation_file, --data.test_file)")
            for split, f in files.items():
                _refuse(f is not None and not Path(f).expanduser().is_file(),
                        f"--data.{split}_file {f} does not exist: pass a {source.upper()} file of sentence pairs")
        else:
            _refuse(source != "bible" and not source.startswith("hf:"),
                    f"--data.source {source!r} is unknown: choose bible, tsv, jsonl or hf:<name>[:<config>]")
            given = ", ".join(f"--data.{s}_file" for s, f in files.items() if f is not None)
            _refuse(given, f"{given} is read only with --data.source tsv or jsonl, not {source}")
        if source.startswith("hf:"):
            HubSpec.parse(source, example="hf:opus_books:en-es")
        elif source == "bible":  # a missing Bible: refused as it is read
            for option, lang in (("source_lang", source_lang), ("target_lang", target_lang)):
                _refuse(lang not in ("en", "es"),
                        f"--data.{option} {lang!r} is not a language of the bundled Bible: choose en or es")
            _refuse(source_column is not None or target_column is not None,
                    "--data.source_column/--data.target_column apply to files and datasets, not to the bundled Bible")
        self.columns = [source_column or source_lang, target_column or target_lang]
        _refuse(self.columns[0] == self.columns[1], f"the source and the target are both {self.columns[0]!r}: set "
                "--data.source_lang/--data.target_lang (or the columns) to two languages")
        _refuse(predict_file is not None and not Path(predict_file).expanduser().is_file(),
                f"--data.predict_file {predict_file} does not exist: pass a text file (one sentence a line) or a "
                "TSV/JSONL file")
        _refuse(tokenizer is not None and not Path(tokenizer).expanduser().exists(),
                f"--data.tokenizer {tokenizer} does not exist: pass a run folder or its tokenizer.json")
        reserved = len(BPE_SPECIAL_TOKENS) + len(BYTE_TOKENS)
        _refuse(tokenizer is None and vocab_size <= reserved, f"--data.vocab_size {vocab_size} is too small: it must "
                                                              f"exceed the {reserved} special and byte-fallback tokens")
        for option, value in (("max_source_length", max_source_length), ("max_target_length", max_target_length)):
            _refuse(value < 2, f"--data.{option} {value} is too short: a sentence of one token and [END] needs 2")
        for option, value in (("max_tokens", max_tokens), ("eval_max_tokens", eval_max_tokens)):
            _refuse(value is not None and value < max(max_source_length, max_target_length),
                    f"--data.{option} {value} is less than the longest sequence allowed (--data.max_source_length "
                    f"{max_source_length}, --data.max_target_length {max_target_length}): raise it or lower those")
        _refuse(bucket_width < 1, f"--data.bucket_width {bucket_width} must be at least 1")
        for option, p in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            _refuse(not 0.0 <= p < 1.0, f"--data.{option} {p} is not in [0, 1)")
        _refuse(val_fraction + test_fraction >= 1.0, f"--data.val_fraction + --data.test_fraction = "
                                                     f"{val_fraction + test_fraction} leaves no training pairs")
        self.source, self.source_lang, self.target_lang, self.files = source, source_lang, target_lang, files
        self.predict_file, self.num_proc, self.streaming = predict_file, num_proc, streaming
        self.tokenizer_path, self.joint_vocab, self.vocab_size = tokenizer, joint_vocab, vocab_size
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.max_tokens, self.eval_max_tokens = max_tokens, eval_max_tokens or max_tokens
        self.bucket_width, self.val_fraction, self.test_fraction = bucket_width, val_fraction, test_fraction
        self.split_seed, self.tokenizer_sample_bytes = split_seed, tokenizer_sample_bytes
        self.stream_block_size, self.cache_dir = stream_block_size, cache_root(cache_dir)
        self.folder = self.cache_dir / "translation"  # prepared pairs
        self._encoded: dict[str, EncodedPairs] = {}
        self._tables: dict[str, EncodedPairs] = {}  # each encoded table, by the key of its pairs
        self.dropped_pairs = 0  # training pairs over the length limits

    # --- reading (on first use: the CLI reads the vocabulary size before setup) ----------------------------------
    @cached_property
    def raw_splits(self) -> dict[str, Pairs]:
        """``train``, ``validation`` and ``test`` pairs as read (normalised, before length filtering)."""
        if self.books is not None:
            raw = {split: Pairs.of([(v.line, getattr(v, self.source_lang), getattr(v, self.target_lang))
                                    for v in read_bible(BIBLE) if v.book in books], f"the bundled Bible {BIBLE}")
                   for split, books in self.books.items()}
            _refuse(not raw["validation"],
                    "--data.val_fraction 0 leaves the Bible without a validation split: raise it")
        elif self.streaming:
            raw = self._streamed_splits()
        elif self.source.startswith("hf:"):
            raw = hf_pairs(self.source, self.columns, self.folder)
        else:
            raw = {s: read_pair_file(f, self.columns, self.source, self.folder)
                   for s, f in self.files.items() if f is not None}
        if "validation" not in raw:
            _refuse(self.val_fraction <= 0, f"{raw['train'].where} comes without a validation split and "
                                            "--data.val_fraction is 0: pass --data.validation_file or raise it")
            kept, held = held_out(len(raw["train"]), self.val_fraction, self.split_seed)
            raw["validation"], raw["train"] = raw["train"].select(held), raw["train"].select(kept)
        if not raw.get("test"):  # none, or none of the Bible's books
            raw["test"] = raw["validation"]
        return raw

    @cached_property
    def books(self) -> dict[str, list[str]] | None:
        """The Bible's books in each split (``None`` for other sources)."""
        if self.source != "bible":
            return None
        sizes = Counter(v.book for v in read_bible(BIBLE))
        return split_books(sizes, self.val_fraction, self.test_fraction, self.split_seed)

    # --- tokenizers ---------------------------------------------------------------------------------------------
    @cached_property
    def tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        """The source and target tokenizers (one object for a joint vocabulary), loaded or trained on first use."""
        if self.tokenizer_path is not None:
            tok, target = load_bpe_tokenizers(self.tokenizer_path)
            if (target is not None) == self.joint_vocab:
                found = "separate source and target vocabularies" if target is not None else "one joint vocabulary"
                rank_zero_warn(f"--data.tokenizer {self.tokenizer_path} holds {found}: used as saved "
                               f"(--data.joint_vocab={self.joint_vocab} is ignored)")
            return tok, target if target is not None else tok
        train = _sample(self.raw_splits["train"], self.tokenizer_sample_bytes, self.split_seed)
        digests = {side: text_digest(train.texts(f"{side}_text")) for side in ("src", "tgt")}

        def train_on(*sides: str) -> Tokenizer:
            sides = tuple(sorted(sides, key=digests.__getitem__))  # the same vocabulary for either direction
            return bpe_tokenizer(lambda: chain.from_iterable(train.texts(f"{side}_text") for side in sides),
                                 "translation:" + "+".join(digests[side] for side in sides), vocab_size=self.vocab_size,
                                 cache_dir=self.cache_dir / "tokenizers")

        try:
            return (train_on("src", "tgt"),) * 2 if self.joint_vocab else (train_on("src"), train_on("tgt"))
        except UserError as e:
            where = {"bible": BIBLE, **dict.fromkeys(FILE_SOURCES, self.files["train"])}.get(self.source, self.source)
            raise UserError(f"{e} ({where})") from None

    tokenizer = property(lambda self: self.tokenizers[0], doc="The source tokenizer (the joint one with joint_vocab).")
    target_tokenizer = property(lambda self: self.tokenizers[1])
    joint = property(lambda self: self.tokenizer is self.target_tokenizer, doc="One vocabulary for both sides.")
    tokenizer_vocab_size = property(lambda self: self.tokenizer.get_vocab_size())
    target_vocab_size = property(lambda self: None if self.joint else self.target_tokenizer.get_vocab_size(),
                                 doc="The target vocabulary's size; None with a joint one (embeddings shared).")
    pad_token_id = property(lambda self: bpe_special_ids(self.tokenizer)["[PAD]"])
    bos_token_id = property(lambda self: bpe_special_ids(self.tokenizer)["[START]"], doc="The decoder's first input.")
    eos_token_id = property(lambda self: bpe_special_ids(self.tokenizer)["[END]"], doc="Closes sources and targets.")

    def save_tokenizer(self, folder: str | Path) -> Path:
        """``tokenizer.json`` (and ``target_tokenizer.json`` for separate vocabularies) in ``folder``; its path."""
        return save_bpe_tokenizers(folder, self.tokenizer, None if self.joint else self.target_tokenizer)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Target-side token ids as text: up to the first ``[END]``, special tokens skipped."""
        ids, eos = ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids], self.eos_token_id
        return self.target_tokenizer.decode(list(takewhile(lambda i: i != eos, ids)), skip_special_tokens=True)

    # --- encoded splits -----------------------------------------------------------------------------------------
    @cached_property
    def predict_pairs(self) -> Pairs:
        """The sentences to translate: ``predict_file``'s (``rows``: their lines), else the test split's sources."""
        if self.predict_file is None:
            test = self.raw_splits["test"]
            return Pairs(test.ds.remove_columns(["tgt_text"]), test.where, test.key + "-src")
        return read_pair_file(self.predict_file, self.columns[:1], "txt", self.folder)

    def predict_lines(self, translations: Sequence[str]) -> list[str]:
        """The output file's lines: line ``i`` translates line ``i`` of a text ``predict_file`` (blank for a blank
        line), else one line per sentence."""
        rows = self.predict_pairs.rows
        if len(translations) != len(rows):
            raise ValueError(f"{len(translations)} translations for {len(rows)} sentences")
        if self.predict_file is None or file_kind(self.predict_file) in TABLE_FILES:
            return list(translations)
        by_row = dict(zip(rows, translations))
        return [by_row.get(row, "") for row in range(1, max(rows, default=0) + 1)]

    def encoded(self, split: str) -> EncodedPairs:
        """A split tokenised (``train``, ``validation``, ``test`` or ``predict``), on first use. Training pairs over
        the length limits are dropped (:attr:`dropped_pairs`); longer evaluation lines are truncated with a warning."""
        if split in self._encoded:
            return self._encoded[split]
        pairs = self.predict_pairs if split == "predict" else self.raw_splits[split]
        # a selection (training and held-out pairs of one file) reads the table of the whole, encoded and opened once
        base = pairs.base or pairs
        if base.key not in self._tables:
            ds = encode_pairs(base, self.tokenizer, self.target_tokenizer, self.folder, self.num_proc)
            self._tables[base.key] = EncodedPairs(ds)
        full = self._tables[base.key].select(pairs.picks)
        lengths = full.lengths()
        too_long = (lengths > np.array([self.max_source_length, self.max_target_length])[: lengths.shape[1]]).any(1)
        limits = (f"--data.max_source_length {self.max_source_length} / --data.max_target_length "
                  f"{self.max_target_length}")
        if split == "train":
            self.dropped_pairs = int(too_long.sum())
            _refuse(self.dropped_pairs == len(full),
                    f"no training pair of {pairs.where} fits {limits.replace(' / ', ' and ')}")
            if self.dropped_pairs:
                rank_zero_info(f"{self.dropped_pairs} of {len(full)} training pairs are longer than {limits} tokens: "
                               "left out")
            self._encoded[split] = full.select(full.picks[~too_long])
        else:
            if too_long.any():
                whole = " (the references stay whole)" if "tgt" in full.full else ""
                rank_zero_warn(f"{int(too_long.sum())} of the {len(too_long)} {split} lines ({pairs.where}) are longer "
                               f"than {limits} tokens: truncated{whole}")
            cut = (self.max_source_length - 1, self.max_target_length - 1)
            self._encoded[split] = full.select(full.picks, cut)
        return self._encoded[split]

    def prepare_data(self) -> None:
        self.tokenizer  # noqa: B018  (trains and caches the vocabulary once, before DDP ranks need it)

    def setup(self, stage: str) -> None:
        for split in STAGE_SPLITS.get(stage, SPLITS):
            if split != "train" or not self.streaming:
                self.encoded(split)

    train_set = property(lambda self: self.encoded("train"))
    val_set = property(lambda self: self.encoded("validation"))
    test_set = property(lambda self: self.encoded("test"))

    # --- loaders ------------------------------------------------------------------------------------------------
    def batch_sampler(self, split: str, replicas: int | None = None, rank: int = 0) -> TokenBatchSampler:
        """The batch sampler of a split (``train``: shuffled per epoch, resumable; else sorted by length), for
        ``replicas`` ranks (default: the trainer's)."""
        lengths = self.encoded(split).lengths()
        if replicas is None:
            replicas, rank = self._replicas()
        if split == "train":
            return TokenBatchSampler(lengths, self.max_tokens, shuffle=True, seed=self.seed, num_replicas=replicas,
                                     rank=rank, drop_last=True, bucket_width=self.bucket_width)
        return TokenBatchSampler(lengths, self.eval_max_tokens, shuffle=False, num_replicas=replicas, rank=rank,
                                 per_epoch=False)

    def padding_fraction(self, split: str = "train", epoch: int = 0) -> float:
        """The share of padding tokens (both sides) in the batches of an epoch of ``split`` (the Bible with the
        defaults: 0.041 in training, 0.097 in validation)."""
        return self.batch_sampler(split, replicas=1).padding_fraction(epoch)

    @cached_property
    def collator(self) -> TranslationCollator:
        return TranslationCollator(self.pad_token_id, self.bos_token_id, self.eos_token_id)

    def _split_loader(self, split: str) -> DataLoader:
        loader = self.train_loader if split == "train" else self.eval_loader
        return loader(self.encoded(split), collate_fn=self.collator, batch_sampler=self.batch_sampler(split))

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self.stream_loader(self._streams()["train"], self._stream_batches, self.stream_block_size)
        return self._split_loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._split_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._split_loader("test")

    def predict_dataloader(self) -> DataLoader:
        # Lightning warns that it cannot set drop_last on a custom batch sampler: this one drops nothing
        warnings.filterwarnings("ignore", message="You are using a custom batch sampler `TokenBatchSampler` for "
                                "prediction")
        return self._split_loader("predict")

    # --- streaming ----------------------------------------------------------------------------------------------
    def _streams(self) -> Any:
        """The splits as ``datasets`` streams, train and validation needed."""
        import datasets  # 0.35 s to import: only when a dataset is read

        if self.source.startswith("hf:"):
            streams = load_splits(self.source, streaming=True)
        else:
            read = {"columns": dict(zip(self.columns, SIDES)), "kind": self.source,
                    "cache_dir": self.folder / "datasets"}
            streams = datasets.IterableDatasetDict({split: datasets.IterableDataset.from_generator(
                _file_rows, gen_kwargs={"path": Path(f).expanduser(), **read}) for split, f in self.files.items() if f})
        require_train(streams, self.source if self.source.startswith("hf:") else str(self.files["train"]))
        _refuse("validation" not in streams, f"--data.streaming needs a validation split, and {self.source} has none "
                                             f"(it has {', '.join(streams)}): pass --data.validation_file or a "
                                             "dataset with one")
        return streams

    def _streamed_splits(self) -> dict[str, Pairs]:
        """Validation and test pairs read whole; ``train``: the stream's head, of ``tokenizer_sample_bytes``, to train
        the vocabulary on."""
        streams, out = self._streams(), {}
        for split in ("validation", "test"):
            if split in streams:
                pairs = list(_pairs(streams[split], self.columns))
                _refuse(not pairs, f"the {split!r} split of {self.source} holds no sentence pairs")
                out[split] = Pairs.of(pairs, f"{self.source} [{split}]")
        head, size = [], 0
        for n, a, b in _pairs(streams["train"], self.columns):
            head.append((n, a, b))
            size += len(a) + len(b)
            if size >= self.tokenizer_sample_bytes:
                break
        out["train"] = Pairs.of(head, f"{self.source} [train, first {len(head)} pairs]")
        return out

    def _stream_batches(self, rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
        """A block of streamed rows as collated training batches: pairs over the length limits left out, the rest
        packed by token count and shuffled (:class:`TokenBatchSampler`)."""
        pairs = list(_pairs(rows, self.columns))
        texts = {"src_text": [a for _, a, _ in pairs], "tgt_text": [b for *_, b in pairs]}
        ids = _encode_pairs(texts, self.tokenizer, self.target_tokenizer)
        items = [{"src": s, "tgt": t, "src_text": a, "tgt_text": b, "index": i}
                 for i, (s, t, (_, a, b)) in enumerate(zip(ids["src"], ids["tgt"], pairs))
                 if len(s) < self.max_source_length and len(t) < self.max_target_length]
        sampler = TokenBatchSampler([(len(x["src"]) + 1, len(x["tgt"]) + 1) for x in items], self.max_tokens,
                                    shuffle=True, seed=rng.getrandbits(62), bucket_width=self.bucket_width)
        return [self.collator([items[j] for j in batch]) for batch in sampler.global_batches(0)]
