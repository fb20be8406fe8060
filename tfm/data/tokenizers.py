"""Tokenizers (HF ``tokenizers``) trained on a corpus with a cache, loaded, saved with a run. WordPiece (BERT tasks):
``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4 when trained), ``[CLS] A [SEP] B [SEP]``. BPE (translation): NFKC, a
Metaspace (``▁``) pre-tokenizer and byte fallback (decoding gives the text back), ``[PAD] [UNK] [START] [END]``."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ..errors import UserError
from .loading import ResumableDataModule
from .sources import build_cached

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION_PREFIX = "##"
_CACHE_FORMAT = 1  # bump when a trained tokenizer would come out differently for the same settings


def cache_root(override: str | Path | None = None) -> Path:
    """tfm's cache folder: ``override``, else ``$TFM_CACHE``, else ``~/.cache/tfm``."""
    return Path(override or os.environ.get("TFM_CACHE") or Path.home() / ".cache" / "tfm").expanduser()


def _token_ids(tok: Tokenizer, tokens: Sequence[str], where: str, needs: str) -> dict[str, int]:
    ids = {t: tok.token_to_id(t) for t in tokens}
    if missing := [t for t, i in ids.items() if i is None]:
        raise UserError(f"{where} has no {', '.join(missing)} token: {needs}")
    return ids  # type: ignore[return-value]


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """The ids of ``[PAD] [UNK] [CLS] [SEP] [MASK]``; a tokenizer lacking one is a user error."""
    return _token_ids(tok, SPECIAL_TOKENS, "the tokenizer",
                      f"tfm needs a BERT vocabulary with {' '.join(SPECIAL_TOKENS)}")


def bert_tokenizer(vocab: dict[str, int] | None = None, lowercase: bool = True) -> Tokenizer:
    """A BERT WordPiece tokenizer over ``vocab`` (``None``: empty, to be trained)."""
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix=CONTINUATION_PREFIX))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    if vocab is not None:
        tok.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])  # kept whole, skipped by decode
        ids = special_ids(tok)
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return tok


def _cached(name: str, corpus_key: str, cache_dir: str | Path | None, tok: Tokenizer, trainer: Any,
            texts: Callable[[], Iterable[str]], write: Callable[[Tokenizer, Path], None], **settings: Any) -> Path:
    """The cache file of a tokenizer of ``corpus_key`` and ``settings``; on a miss ``tok`` is trained on ``texts()``
    (fed 1,000 at a time) and written by ``write(tok, tmp)``."""

    def build(tmp: Path) -> None:
        it = iter(texts())
        tok.train_from_iterator(iter(lambda: list(islice(it, 1000)), []), trainer)
        if tok.get_vocab_size() <= len(trainer.special_tokens):
            raise UserError(f"the corpus {corpus_key!r} has no text to train a tokenizer on")
        write(tok, tmp)

    blob = json.dumps({"corpus": corpus_key, "format": _CACHE_FORMAT, **settings}, sort_keys=True)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "tokenizers"
    return build_cached(folder / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json", build)


def wordpiece_tokenizer(texts: Callable[[], Iterable[str]], corpus_key: str, vocab_size: int = 8192,
                        lowercase: bool = True, min_frequency: int = 2, limit_alphabet: int = 1000,
                        cache_dir: str | Path | None = None) -> Tokenizer:
    """A WordPiece tokenizer trained on ``texts()`` (called on a cache miss only), cached in ``cache_dir`` under a
    hash of ``corpus_key`` and the settings; ids canonical (training orders ties by hash: tokenizers#1794)."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise UserError(f"vocab_size {vocab_size} is too small: it must exceed the {len(SPECIAL_TOKENS)} special "
                        "tokens")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), limit_alphabet=limit_alphabet,
                                        continuing_subword_prefix=CONTINUATION_PREFIX, show_progress=False)

    def write(tok: Tokenizer, tmp: Path) -> None:
        vocab = tok.get_vocab()
        rest = sorted((t for t in vocab if t not in SPECIAL_TOKENS),
                      key=lambda t: (len(t.removeprefix(CONTINUATION_PREFIX)) > 1, t))
        bert_tokenizer({t: i for i, t in enumerate([*SPECIAL_TOKENS, *rest])}, lowercase).save(str(tmp))

    name = f"wordpiece-{vocab_size}-{'uncased' if lowercase else 'cased'}"
    path = _cached(name, corpus_key, cache_dir, bert_tokenizer(None, lowercase), trainer, texts, write,
                   vocab_size=vocab_size, lowercase=lowercase, min_frequency=min_frequency,
                   limit_alphabet=limit_alphabet)
    return Tokenizer.from_file(str(path))


def _tokenizer_file(path: str | Path, names: Sequence[str], lacks: str, wanted: str) -> Path:
    """``path``, or the first of ``names`` in the folder ``path``."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = next((path / f for f in names if (path / f).is_file()), None)
        if found is None:
            raise UserError(f"tokenizer folder {path} {lacks}")
        path = found
    if not path.is_file():
        raise UserError(f"tokenizer {path} does not exist: pass {wanted}")
    return path


def _from_file(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001  (not a tokenizers JSON file)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path} is not a Hugging Face tokenizer.json: {first}") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding either; a ``vocab.txt`` is
    lowercased as ``do_lower_case`` of a ``tokenizer_config.json`` beside it says, else if it has no upper case."""
    path = _tokenizer_file(path, ("tokenizer.json", "vocab.txt"), "has neither tokenizer.json nor vocab.txt",
                           "a tokenizer.json, a vocab.txt or a folder holding one")
    if path.suffix == ".json":
        tok = _from_file(path)
        special_ids(tok)
        return tok
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    vocab = {t: i for i, t in enumerate(tokens[:-1] if tokens and tokens[-1] == "" else tokens)}
    config = path.parent / "tokenizer_config.json"
    if config.is_file() and "do_lower_case" in (cfg := json.loads(config.read_text())):
        return bert_tokenizer(vocab, bool(cfg["do_lower_case"]))
    plain = "".join(t for t in vocab if not (t.startswith("[") and t.endswith("]")))  # no special token
    return bert_tokenizer(vocab, not any(c.isupper() for c in plain))


def save_tokenizer(tok: Tokenizer, folder: str | Path) -> Path:
    """``tokenizer.json``, ``vocab.txt`` and ``tokenizer_config.json`` (for ``BertTokenizer``) written to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": bool(getattr(tok.normalizer, "lowercase", False))}
    config.update({f"{name}_token": f"[{name.upper()}]" for name in ("pad", "unk", "cls", "sep", "mask")})
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


class TextDataModule(ResumableDataModule):
    """Base of the text DataModules: the tokenizer, loaded from ``self.tokenizer_path`` or trained by the subclass's
    :meth:`train_tokenizer`, built on first use (the CLI reads its vocabulary size before ``setup``).

    Args:
        cache_dir: cache folder of tokenizers and prepared data (default ``$TFM_CACHE`` or ``~/.cache/tfm``).
        pad_to_multiple_of: pad a batch's length up to a multiple of this (None: the longest).
        **kwargs: ``batch_size``, ``eval_batch_size``, ``num_workers``, ``seed`` (:class:`ResumableDataModule`).
    """

    tokenizer_path: str | None = None
    _tokenizer: Tokenizer | None = None

    def __init__(self, cache_dir: str | None = None, pad_to_multiple_of: int | None = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise UserError(f"--data.pad_to_multiple_of {pad_to_multiple_of} must be at least 1 (or null)")
        self.cache_dir, self.pad_to_multiple_of = cache_root(cache_dir), pad_to_multiple_of

    def train_tokenizer(self) -> Tokenizer:
        raise NotImplementedError

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            path = self.tokenizer_path
            self._tokenizer = load_tokenizer(path) if path is not None else self.train_tokenizer()
        return self._tokenizer

    @property
    def tokenizer_vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def pad_token_id(self) -> int:
        return special_ids(self.tokenizer)["[PAD]"]

    def save_tokenizer(self, folder: str | Path) -> Path:
        """Write the tokenizer into ``folder`` (a run's folder); returns its ``tokenizer.json``."""
        return save_tokenizer(self.tokenizer, folder)


# --- BPE (translation) ------------------------------------------------------------------------------
BPE_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[START]", "[END]")
METASPACE = "\u2581"  # "▁": a space, as SentencePiece writes it
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
TARGET_TOKENIZER_FILE = "target_tokenizer.json"
_BPE_FORMAT = 1  # bump when a trained BPE tokenizer would come out differently for the same settings


def build_bpe_tokenizer(vocab: dict[str, int] | None = None, merges: Sequence[tuple[str, str]] | None = None,
                        byte_fallback: bool = True) -> Tokenizer:
    """tfm's BPE pipeline over ``vocab`` and ``merges`` (``None``: to be trained): ``decode(encode(s).ids) == s`` for
    NFKC text without a leading space or ``▁``; special tokens written in the text are encoded as text."""
    tok = Tokenizer(models.BPE(vocab, None if vocab is None else list(merges or []), unk_token="[UNK]",
                               byte_fallback=byte_fallback))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    steps = [decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)]
    tok.decoder = decoders.Sequence(steps + [decoders.ByteFallback(), decoders.Fuse()] if byte_fallback else steps)
    if vocab is not None:
        tok.add_special_tokens([t for t in BPE_SPECIAL_TOKENS if t in vocab])  # kept whole, skipped by decode
    tok.encode_special_tokens = True  # not saved: load_bpe_tokenizer sets it again
    return tok


def bpe_special_ids(tok: Tokenizer, where: str = "the tokenizer") -> dict[str, int]:
    """The ids of ``[PAD] [UNK] [START] [END]``; a tokenizer lacking one is a user error."""
    return _token_ids(tok, BPE_SPECIAL_TOKENS, where, f"translation needs a vocabulary with "
                      f"{' '.join(BPE_SPECIAL_TOKENS)} (one trained by tfm, saved as a run's tokenizer.json)")


def bpe_tokenizer(texts: Callable[[], Iterable[str]], corpus_key: str, vocab_size: int = 8000, min_frequency: int = 2,
                  byte_fallback: bool = True, limit_alphabet: int = 1000,
                  cache_dir: str | Path | None = None) -> Tokenizer:
    """A BPE tokenizer trained on ``texts()``, cached as :func:`wordpiece_tokenizer`, of ``vocab_size`` tokens at
    most: the special tokens (ids 0-3), with ``byte_fallback`` the 256 bytes (4-259), then the rest, sorted."""
    head = [*BPE_SPECIAL_TOKENS, *(BYTE_TOKENS if byte_fallback else ())]
    if vocab_size <= len(head):
        raise UserError(f"vocab_size {vocab_size} is too small: it must exceed the {len(head)} reserved tokens "
                        f"(special{' and byte-fallback' if byte_fallback else ''} tokens)")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(head) + len(BPE_SPECIAL_TOKENS),
                                  min_frequency=min_frequency, special_tokens=list(BPE_SPECIAL_TOKENS),
                                  limit_alphabet=limit_alphabet, show_progress=False)

    def write(tok: Tokenizer, tmp: Path) -> None:
        model = json.loads(tok.to_str())["model"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        rest = sorted((t for t in model["vocab"] if t not in set(head)), key=lambda t: (len(t) > 1, t))
        build_bpe_tokenizer({t: i for i, t in enumerate([*head, *rest])}, merges,
                            byte_fallback).save(str(tmp))  # type: ignore[arg-type]

    path = _cached(f"bpe-{vocab_size}", corpus_key, cache_dir, build_bpe_tokenizer(None, None, byte_fallback), trainer,
                   texts, write, kind="bpe", bpe_format=_BPE_FORMAT, vocab_size=vocab_size,
                   min_frequency=min_frequency, byte_fallback=byte_fallback, limit_alphabet=limit_alphabet)
    return load_bpe_tokenizer(path)


def load_bpe_tokenizer(path: str | Path) -> Tokenizer:
    """A BPE tokenizer with tfm's special tokens from a ``tokenizer.json`` (or a folder holding one)."""
    path = _tokenizer_file(path, ("tokenizer.json",), "has no tokenizer.json: pass a run folder or a tokenizer.json "
                           "file", "a tokenizer.json or a run folder holding one")
    tok = _from_file(path)
    bpe_special_ids(tok, f"tokenizer {path}")
    tok.encode_special_tokens = True
    return tok


def load_bpe_tokenizers(path: str | Path) -> tuple[Tokenizer, Tokenizer | None]:
    """``(source or joint tokenizer, target tokenizer or None)`` from a run folder or a ``tokenizer.json`` (with the
    ``target_tokenizer.json`` beside it, if any); the two must give the special tokens the same ids."""
    path = Path(path).expanduser()
    first = path / "tokenizer.json" if path.is_dir() else path
    tok = load_bpe_tokenizer(path)
    target_path = first.parent / TARGET_TOKENIZER_FILE
    if first.name != "tokenizer.json" or not target_path.is_file():
        return tok, None
    target = load_bpe_tokenizer(target_path)
    if bpe_special_ids(target) != bpe_special_ids(tok):
        raise UserError(f"{target_path} and {first} give the special tokens different ids: both must have "
                        f"{' '.join(BPE_SPECIAL_TOKENS)} as ids 0-3")
    return tok, target


def save_bpe_tokenizers(folder: str | Path, tok: Tokenizer, target: Tokenizer | None = None) -> Path:
    """``tokenizer.json`` (source, or joint) and a separate target vocabulary's ``target_tokenizer.json`` written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if target is not None:
        target.save(str(folder / TARGET_TOKENIZER_FILE))
    elif (folder / TARGET_TOKENIZER_FILE).is_file():
        (folder / TARGET_TOKENIZER_FILE).unlink()  # a stale one would make the joint vocabulary look separate
    return folder / "tokenizer.json"
