"""WordPiece tokenizers (HF ``tokenizers``): train on a corpus with a cache, load, save with a run.

Every tokenizer here is BERT-shaped: BERT normalisation and pre-tokenisation, the special tokens
``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4 in a trained one), ``[CLS] A [SEP] B [SEP]`` with
token type ids added by ``encode(a, b)``, and the WordPiece ``##`` decoder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ..errors import UserError
from .loading import ResumableDataModule

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION_PREFIX = "##"
_CACHE_FORMAT = 1  # bump when a trained tokenizer would come out differently for the same settings


def cache_root(override: str | Path | None = None) -> Path:
    """tfm's cache folder: ``override``, else ``$TFM_CACHE``, else ``~/.cache/tfm``."""
    return Path(override or os.environ.get("TFM_CACHE") or Path.home() / ".cache" / "tfm").expanduser()


def bert_tokenizer(vocab: dict[str, int] | None = None, lowercase: bool = True) -> Tokenizer:
    """A BERT WordPiece tokenizer over ``vocab`` (``None``: empty, to be trained)."""
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix=CONTINUATION_PREFIX))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    if vocab is not None:
        tok.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])  # kept whole, skipped by decode
        _add_post_processor(tok)
    return tok


def _add_post_processor(tok: Tokenizer) -> None:
    ids = special_ids(tok)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """The ids of ``[PAD] [UNK] [CLS] [SEP] [MASK]``; a tokenizer lacking one is a user error."""
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise UserError(f"the tokenizer has no {', '.join(missing)} token: tfm needs a BERT vocabulary with {' '.join(SPECIAL_TOKENS)}")
    return ids  # type: ignore[return-value]


def is_lowercase(tok: Tokenizer) -> bool:
    """Whether the tokenizer's normaliser lower-cases its input."""
    return bool(getattr(tok.normalizer, "lowercase", False))


def _settings_key(corpus_key: str, **settings: object) -> str:
    blob = json.dumps({"corpus": corpus_key, "format": _CACHE_FORMAT, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def wordpiece_tokenizer(
    texts: Callable[[], Iterable[str]],
    corpus_key: str,
    vocab_size: int = 8192,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    cache_dir: str | Path | None = None,
) -> Tokenizer:
    """A WordPiece tokenizer trained on ``texts()`` (an iterable of sentences or documents).

    The result is cached in ``cache_dir`` (default ``cache_root() / "tokenizers"``) under a hash
    of ``corpus_key`` (what identifies the corpus: paths, sizes and times, or a dataset name)
    and the settings; ``texts`` is called only on a cache miss. Processes that ask at once (DDP
    ranks) train once: the others wait for the file. Training itself is not reproducible to the
    token (huggingface/tokenizers#1794: ties break in hash-map order), so a run keeps its own copy
    (:func:`save_tokenizer`) and a resumed run should load that one.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise UserError(f"vocab_size {vocab_size} is too small: it must exceed the {len(SPECIAL_TOKENS)} special tokens")
    key = _settings_key(corpus_key, vocab_size=vocab_size, lowercase=lowercase, min_frequency=min_frequency, limit_alphabet=limit_alphabet)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "tokenizers"
    path = folder / f"wordpiece-{vocab_size}-{'uncased' if lowercase else 'cased'}-{key}.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():  # another process trained it while this one waited
            return Tokenizer.from_file(str(path))
        tok = bert_tokenizer(None, lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            limit_alphabet=limit_alphabet,
            continuing_subword_prefix=CONTINUATION_PREFIX,
            show_progress=False,
        )
        tok.train_from_iterator(_batches(texts()), trainer)
        if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
            raise UserError(f"the corpus {corpus_key!r} has no text to train a tokenizer on")
        tok = bert_tokenizer(_canonical_ids(tok.get_vocab()), lowercase)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tok.save(str(tmp))
        os.replace(tmp, path)  # never a half-written cache file
    return tok


def _canonical_ids(vocab: dict[str, int]) -> dict[str, int]:
    """The trained vocabulary with ids that depend on its tokens alone (training numbers tied
    tokens in hash-map order): the special tokens, the alphabet, then the rest sorted."""
    rest = sorted((t for t in vocab if t not in SPECIAL_TOKENS), key=lambda t: (len(t.removeprefix(CONTINUATION_PREFIX)) > 1, t))
    return {t: i for i, t in enumerate([*SPECIAL_TOKENS, *rest])}


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_vocab(path: str | Path) -> dict[str, int]:
    """A BERT ``vocab.txt``: one token a line, the line number is its id."""
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    if tokens and tokens[-1] == "":
        tokens.pop()
    return {t: i for i, t in enumerate(tokens)}


def load_tokenizer(path: str | Path, lowercase: bool | None = None) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json``, a BERT ``vocab.txt``, or a folder holding either
    (a saved run or a Hugging Face BERT folder; ``tokenizer.json`` wins).

    For a ``vocab.txt``, ``lowercase`` defaults to ``do_lower_case`` in a ``tokenizer_config.json``
    beside it, else to whether the vocabulary has no upper-case token.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        found = next((path / f for f in ("tokenizer.json", "vocab.txt") if (path / f).is_file()), None)
        if found is None:
            raise UserError(f"tokenizer folder {path} has neither tokenizer.json nor vocab.txt")
        path = found
    if not path.is_file():
        raise UserError(f"tokenizer {path} does not exist: pass a tokenizer.json, a vocab.txt or a folder holding one")
    if path.suffix == ".json":
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # not a tokenizers JSON file
            raise UserError(f"{path} is not a Hugging Face tokenizer.json: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        special_ids(tok)
        return tok
    vocab = read_vocab(path)
    if lowercase is None:
        config = path.parent / "tokenizer_config.json"
        if config.is_file() and "do_lower_case" in (cfg := json.loads(config.read_text())):
            lowercase = bool(cfg["do_lower_case"])
        else:
            lowercase = not any(c.isupper() for t in vocab if not (t.startswith("[") and t.endswith("]")) for c in t)
    return bert_tokenizer(vocab, lowercase)


def save_tokenizer(tok: Tokenizer, folder: str | Path) -> Path:
    """Write ``tokenizer.json``, ``vocab.txt`` and ``tokenizer_config.json`` (what Hugging Face's
    ``BertTokenizer`` reads) into ``folder``; returns the ``tokenizer.json`` path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": is_lowercase(tok)}
    config.update({f"{name}_token": f"[{name.upper()}]" for name in ("pad", "unk", "cls", "sep", "mask")})
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


class TextDataModule(ResumableDataModule):
    """Base of the text DataModules: the tokenizer, loaded from ``self.tokenizer_path`` or trained
    on the corpus by the subclass's :meth:`train_tokenizer`, built on first use (the CLI reads its
    vocabulary size right after instantiating the DataModule, before ``setup``)."""

    tokenizer_path: str | None = None
    _tokenizer: Tokenizer | None = None

    def train_tokenizer(self) -> Tokenizer:
        raise NotImplementedError

    @property
    def tokenizer(self) -> Tokenizer:
        """The loaded tokenizer, or the one trained (or found cached) for the corpus."""
        if self._tokenizer is None:
            tok = load_tokenizer(self.tokenizer_path) if self.tokenizer_path is not None else self.train_tokenizer()
            special_ids(tok)  # fails clearly when a special token is missing
            self._tokenizer = tok
        return self._tokenizer

    @property
    def tokenizer_vocab_size(self) -> int:
        """The tokenizer's vocabulary size (the model's ``vocab_size``)."""
        return self.tokenizer.get_vocab_size()

    @property
    def pad_token_id(self) -> int:
        return special_ids(self.tokenizer)["[PAD]"]

    def save_tokenizer(self, folder: str | Path) -> Path:
        """Write the tokenizer into ``folder`` (a run's folder); returns its ``tokenizer.json``."""
        return save_tokenizer(self.tokenizer, folder)
