"""BERT pretraining data: sentence pairs as google-research/bert's ``create_pretraining_data.py`` builds them (a
document's from ``(seed, its index)`` alone, prepared once by ``Dataset.map`` into a cache), masked-LM masks drawn per
batch from :class:`~tfm.data.loading.SeededTransform`'s seeded RNG (a resumed run masks as an uninterrupted one).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from itertools import accumulate, islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .loading import ArrowRows, PadCollator, mix_seed, seeded_rngs
from .sources import SPLITS, build_cached, check_num_proc, load_shards, preparation_processes, quiet_fork
from .text import resolve_source, row_sentences, row_sizes, sample_rows
from .tokenizers import CONTINUATION_PREFIX, TextDataModule, special_ids, wordpiece_tokenizer

Document = Sequence[list[int]]  # one token-id list per sentence
Instance = tuple[list[int], list[int], bool]  # segment A, segment B, B is a random next
_CACHE_FORMAT = 2


# --- instances, as google-research/bert create_pretraining_data.py ---------------------------------
def document_instances(
    documents: Sequence[Document], index: int, max_seq_length: int, short_seq_prob: float, nsp_prob: float,
    dupe_factor: int, seed: int
) -> list[Instance]:
    """The sentence pairs of ``documents[index]`` by google's ``create_instances_from_document`` (``nsp_prob`` for
    its 0.5: B from elsewhere), ``dupe_factor`` times over, each from ``(seed, time, index)``."""
    document = documents[index]
    max_num_tokens = max_seq_length - 3  # [CLS] A [SEP] B [SEP]
    instances: list[Instance] = []
    for dupe in range(dupe_factor):
        rng = random.Random(mix_seed(seed, dupe, index))
        target_seq_length = rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens
        chunk: list[list[int]] = []
        length, i = 0, 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target_seq_length:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for segment in chunk[:a_end] for t in segment]
                is_random_next = len(chunk) == 1 or rng.random() < nsp_prob
                if is_random_next:
                    tokens_b: list[int] = []
                    for _ in range(10):  # another document, if there is one
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    random_document = documents[other]
                    for j in range(rng.randint(0, len(random_document) - 1), len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_seq_length - len(tokens_a):
                            break
                    i -= len(chunk) - a_end  # the unused segments go back for the next instance
                else:
                    tokens_b = [t for segment in chunk[a_end:] for t in segment]
                while len(tokens_a) + len(tokens_b) > max_num_tokens:  # google's truncate_seq_pair
                    trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                    trunc.pop(0 if rng.random() < 0.5 else -1)
                instances.append((tokens_a, tokens_b, is_random_next))
                chunk, length = [], 0
            i += 1
    return instances


def create_instances(
    documents: Sequence[Document], max_seq_length: int = 128, short_seq_prob: float = 0.1, nsp_prob: float = 0.5,
    dupe_factor: int = 1, seed: int = 12345
) -> list[Instance]:
    """All instances of ``documents`` (empty sentences and documents dropped), deterministic for ``seed``."""
    if max_seq_length < 5:
        raise UserError(f"max_seq_length {max_seq_length} is too short: [CLS] A [SEP] B [SEP] needs at least 5")
    docs = [d for d in ([s for s in doc if len(s)] for doc in documents) if d]
    return [inst for i in range(len(docs)) for inst in document_instances(docs, i, max_seq_length, short_seq_prob,
                                                                          nsp_prob, dupe_factor, seed)]


def instance_columns(instances: Sequence[Instance], cls_id: int, sep_id: int) -> dict[str, list]:
    """``input_ids`` (``[CLS] A [SEP] B [SEP]``), ``token_type_ids``, ``next_sentence_label`` (1: B is random)."""
    return {"input_ids": [[cls_id, *a, sep_id, *b, sep_id] for a, b, _ in instances],
            "token_type_ids": [[0] * (len(a) + 2) + [1] * (len(b) + 1) for a, b, _ in instances],
            "next_sentence_label": [int(r) for *_, r in instances]}


def tokenize_documents(tok: Tokenizer, documents: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Each sentence as token ids, without special tokens."""
    encoded = iter(tok.encode_batch_fast([s for d in documents for s in d], add_special_tokens=False))
    return [[next(encoded).ids for _ in d] for d in documents]


# --- the pipeline on datasets: tokenised documents, then instances ----------------------------------
def _encode_documents(batch: dict[str, list], tok: Tokenizer) -> dict[str, list]:
    """A batch of documents as ``ids`` (all their tokens) and ``ends`` (where each non-empty sentence ends)."""
    docs = [[s for s in doc if s] for doc in tokenize_documents(tok, row_sentences(batch))]
    return {"ids": [[t for s in doc for t in s] for doc in docs], "ends": [list(accumulate(map(len, d))) for d in docs]}


class _TokenDocument(Sequence):
    """One tokenised document, its sentences as id lists made on access."""

    def __init__(self, ids: np.ndarray, ends: np.ndarray) -> None:
        self.ids, self.ends = ids, ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, k: int) -> list[int]:  # type: ignore[override]
        return self.ids[self.ends[k - 1] if k else 0 : self.ends[k]].tolist()


class SplitDocuments(Sequence):
    """The documents ``picks`` of the tokenised corpus (:class:`_TokenDocument`)."""

    def __init__(self, tokens: ArrowRows, picks: np.ndarray) -> None:
        self.tokens, self.picks = tokens, picks

    def __len__(self) -> int:
        return len(self.picks)

    def __getitem__(self, k: int) -> _TokenDocument:  # type: ignore[override]
        row = int(self.picks[k])
        return _TokenDocument(self.tokens.column("ids", row), self.tokens.column("ends", row))


def _instances_batch(batch: dict[str, list], indices: list[int], docs: SplitDocuments, settings: tuple,
                     cls_sep: tuple[int, int]) -> dict[str, list]:
    return instance_columns([inst for index in indices for inst in document_instances(docs, index, *settings)],
                            *cls_sep)


def PretrainingInstances(ds: Any) -> ArrowRows:
    """A split of instances read in place: ``input_ids`` (int32), ``token_type_ids`` (int8), ``next_sentence_label``."""
    return ArrowRows(ds, ["input_ids", "token_type_ids", "next_sentence_label"])


# --- dynamic masking --------------------------------------------------------------------------------
class MaskedLMCollator(PadCollator):
    """Pads instances into a batch and masks it for the masked-LM loss, from torch's global RNG (seeded per batch).

    Per sequence, ``round(mlm_probability * eligible)`` non-special tokens (at least one) are chosen; 80% become
    ``[MASK]``, 10% a random non-special token, 10% stay; ``labels`` is the original id there, -100 elsewhere. With
    ``whole_word_masking``, ``##`` pieces join the token before into a word, words are chosen whole and a word that
    would overshoot the token budget is skipped (google's ``create_masked_lm_predictions``).
    """

    def __init__(self, tok: Tokenizer, mlm_probability: float = 0.15, whole_word_masking: bool = False,
                 pad_to_multiple_of: int | None = 8, max_length: int | None = None) -> None:
        ids = special_ids(tok)
        super().__init__({"input_ids": ids["[PAD]"], "token_type_ids": 0, "labels": -100}, ["next_sentence_label"],
                         pad_to_multiple_of, max_length)
        self.mask_id, self.mlm_probability, self.whole_word_masking = ids["[MASK]"], mlm_probability, whole_word_masking
        vocab = tok.get_vocab()
        every_id = torch.arange(max(vocab.values()) + 1)
        self.special = torch.isin(every_id, torch.tensor(list(ids.values())))
        pieces = [i for t, i in vocab.items() if t.startswith(CONTINUATION_PREFIX) and len(t) > 2]
        self.continuation = torch.isin(every_id, torch.tensor(pieces, dtype=torch.long))
        self.random_ids = (~self.special).nonzero().flatten()

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Pads and masks; samples that carry ``labels`` are masked already (:class:`StaticMasks`)."""
        batch = super().__call__(samples)
        if "labels" not in batch:
            batch["input_ids"], batch["labels"] = self.mask(batch["input_ids"])
        batch["next_sentence_label"] = batch["next_sentence_label"].long()
        return batch

    def mask(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(masked input_ids, labels)`` for a padded ``(batch, length)`` batch."""
        b, n = input_ids.shape
        eligible = ~self.special[input_ids]
        starts = eligible
        if self.whole_word_masking:  # a ## piece continues the word before it, if that is eligible
            before = torch.cat([torch.zeros(b, 1, dtype=torch.bool), eligible[:, :-1]], 1)
            starts = eligible & ~(self.continuation[input_ids] & before)
        word = (starts.long().cumsum(1) - 1).clamp(min=0)  # each token's word number in its row
        num_words = starts.sum(1, keepdim=True)
        budget = (eligible.sum(1, keepdim=True) * self.mlm_probability).round().long().clamp(min=1)
        slots = torch.arange(n).expand(b, n)
        order = torch.rand(b, n).masked_fill(slots >= num_words, 2.0).argsort(1)  # words in random order
        if self.whole_word_masking:
            sizes = torch.zeros(b, n, dtype=torch.long).scatter_add_(1, word, eligible.long()).gather(1, order)
            take = torch.zeros(b, n, dtype=torch.bool)
            count = torch.zeros(b, 1, dtype=torch.long)
            for k in range(int(num_words.max())):  # greedy: skip a word that overshoots the budget
                fits = (sizes[:, k : k + 1] > 0) & (count + sizes[:, k : k + 1] <= budget)
                take[:, k : k + 1] = fits
                count += sizes[:, k : k + 1] * fits
        else:
            take = (slots < budget) & (slots < num_words)
        chosen_words = torch.zeros(b, n, dtype=torch.bool).scatter_(1, order, take)
        chosen = eligible & chosen_words.gather(1, word)
        labels = input_ids.masked_fill(~chosen, -100)
        r = torch.rand(b, n)
        random_tokens = self.random_ids[torch.randint(len(self.random_ids), (b, n))]
        masked = torch.where(chosen & (r < 0.8), self.mask_id, input_ids)
        masked = torch.where(chosen & (r >= 0.9), random_tokens, masked)
        return masked, labels


class StaticMasks(Dataset):
    """An evaluation split whose instance ``i`` is masked on access from ``(seed, i)`` alone: the same masks every
    epoch, whatever the batch size or number of ranks (as google-research/bert's fixed evaluation set)."""

    def __init__(self, instances: ArrowRows, collator: MaskedLMCollator, seed: int) -> None:
        self.instances, self.collator, self.seed = instances, collator, seed

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.instances[i]
        with seeded_rngs(mix_seed(self.seed, i)):
            masked, labels = self.collator.mask(torch.from_numpy(item["input_ids"].astype(np.int64))[None])
        return {**item, "input_ids": masked[0].numpy(), "labels": labels[0].numpy()}


# --- the DataModule ---------------------------------------------------------------------------------
class BertPretrainingDataModule(TextDataModule):
    """Masked-LM and next-sentence-prediction batches for BERT pretraining: int64 ``input_ids``, ``token_type_ids``,
    ``attention_mask``, ``labels`` (-100: not predicted) and ``next_sentence_label`` (1: B is random).

    Args:
        source: ``brown`` (bundled), a text file or folder, or ``hf:<name>[:<config>]``.
        tokenizer: a ``tokenizer.json``, a BERT ``vocab.txt`` or a folder holding one (default: train one, cached).
        vocab_size: size of the vocabulary to train.
        lowercase: lower-case (uncased) vocabulary to train; a loaded one keeps its own.
        max_seq_length: tokens per instance, ``[CLS]`` and both ``[SEP]`` included.
        short_seq_prob: chance that a document's instances aim at a random shorter length.
        nsp_prob: chance that segment B comes from another document.
        mlm_probability: share of the non-special tokens to predict.
        whole_word_masking: mask all pieces of a word together.
        dupe_factor: times each document is turned into instances (with other random pairs).
        val_fraction: share of the documents held out for validation.
        test_fraction: share of the documents held out for testing.
        split_seed: seed of the document split and of the sentence pairs built from them.
        max_documents: use only the first documents of the source.
        tokenizer_sample_bytes: train the vocabulary on a seeded sample of about this many bytes of documents.
        num_proc: preparation processes (default: one per CPU, at most 8, from 10,000 documents on, else one).
        streaming: stream the training documents of a ``hf:`` dataset or text / Parquet files (resumes exactly);
            validation and test are held out by text hash from the first ``max_documents`` (default 10,000).
        stream_block_size: documents per block of a stream, whose pairs are drawn, shuffled and masked together.
        **kwargs: ``cache_dir``, ``pad_to_multiple_of`` (:class:`~tfm.data.tokenizers.TextDataModule`), ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``seed`` (:class:`~tfm.data.loading.ResumableDataModule`).
    """

    def __init__(self, source: str = "brown", tokenizer: str | None = None, vocab_size: int = 8192,
                 lowercase: bool = True, max_seq_length: int = 128, short_seq_prob: float = 0.1,
                 nsp_prob: float = 0.5, mlm_probability: float = 0.15, whole_word_masking: bool = False,
                 dupe_factor: int = 1, val_fraction: float = 0.05, test_fraction: float = 0.05, split_seed: int = 0,
                 max_documents: int | None = None, tokenizer_sample_bytes: int = 100_000_000,
                 num_proc: int | None = None, streaming: bool = False, stream_block_size: int = 1000,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, p in (("short_seq_prob", short_seq_prob), ("nsp_prob", nsp_prob), ("val_fraction", val_fraction),
                        ("test_fraction", test_fraction)):
            if not 0.0 <= p <= 1.0:
                raise UserError(f"--data.{name} {p} is not between 0 and 1")
        if not 0.0 < mlm_probability <= 1.0:
            raise UserError(f"--data.mlm_probability {mlm_probability} is not in (0, 1]")
        if val_fraction + test_fraction >= 1.0:
            raise UserError(f"--data.val_fraction + --data.test_fraction = {val_fraction + test_fraction} leaves no "
                            "training documents")
        if max_seq_length < 5:
            raise UserError(f"--data.max_seq_length {max_seq_length} is too short: [CLS] A [SEP] B [SEP] needs at "
                            "least 5")
        if dupe_factor < 1 or (max_documents is not None and max_documents < 1):
            raise UserError("--data.dupe_factor and --data.max_documents must be at least 1")
        self.source = resolve_source(source)
        self.tokenizer_path = tokenizer
        if tokenizer is not None and not Path(tokenizer).expanduser().exists():
            raise UserError(f"--data.tokenizer {tokenizer} does not exist: pass a tokenizer.json, a vocab.txt or a "
                            "folder holding one")
        check_num_proc(num_proc)
        if streaming and self.source.kind == "brown":
            raise UserError("--data.streaming reads hf: datasets and text or Parquet files, not the bundled Brown "
                            "corpus")
        self.vocab_size, self.lowercase = vocab_size, lowercase
        self.max_seq_length, self.short_seq_prob, self.nsp_prob = max_seq_length, short_seq_prob, nsp_prob
        self.dupe_factor, self.mlm_probability = dupe_factor, mlm_probability
        self.whole_word_masking = whole_word_masking
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.streaming, self.stream_block_size = streaming, stream_block_size
        self.max_documents, self.tokenizer_sample_bytes, self.num_proc = max_documents, tokenizer_sample_bytes, num_proc
        self._documents: Any = None
        self._splits: dict[str, ArrowRows] = {}

    def train_tokenizer(self) -> Tokenizer:
        """A WordPiece vocabulary trained (once, then cached) on a seeded sample of the documents."""

        def texts() -> Iterator[str]:  # read on a cache miss only
            docs = self.documents()
            sample = docs.select(sample_rows(row_sizes(docs), self.tokenizer_sample_bytes, self.split_seed))
            count = 0
            for batch in sample.iter(batch_size=256):
                for d in row_sentences(batch):
                    count += len(d)
                    yield from d
            if not count:
                raise UserError(f"the corpus {self.source} holds no text")

        key = (f"{self.source.key}|max_documents={self.max_documents}"
               f"|sample={self.tokenizer_sample_bytes},{self.split_seed}")
        return wordpiece_tokenizer(texts, key, vocab_size=self.vocab_size, lowercase=self.lowercase,
                                   cache_dir=self.cache_dir / "tokenizers")

    def documents(self) -> Any:
        """The first ``max_documents`` (streaming: or 10,000, in memory) documents, a ``datasets.Dataset`` row each."""
        if self._documents is None and self.streaming:
            import datasets  # 0.35 s to import: only when a dataset is read

            head = list(islice(self.source.stream(), self.max_documents or 10_000))
            if not head:
                raise UserError(f"the corpus {self.source} holds no text")
            self._documents = datasets.Dataset.from_list(head)
        elif self._documents is None:
            self._documents = self.source.dataset(self.max_documents, self.cache_dir / "datasets")
        return self._documents

    def held_out(self, text: str) -> str:
        """The split of a streamed document, from a hash of its text and ``split_seed``."""
        u = mix_seed(self.split_seed,
                     int(hashlib.sha1(text[:4096].encode("utf-8", "replace")).hexdigest()[:15], 16)) / 2**63
        return ("validation" if u < self.val_fraction else
                "test" if u < self.val_fraction + self.test_fraction else "train")

    def _stream_batches(self, rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Tensor]]:
        """A block of streamed documents (those of the training split) as masked batches, a partial last one dropped."""
        texts = [r["text"] for r in rows if r["text"] and self.held_out(r["text"]) == "train"]
        made = create_instances(tokenize_documents(self.tokenizer, row_sentences({"text": texts})),
                                self.max_seq_length, self.short_seq_prob, self.nsp_prob, self.dupe_factor,
                                rng.getrandbits(62))
        rng.shuffle(made)
        ids = special_ids(self.tokenizer)
        columns = instance_columns(made, ids["[CLS]"], ids["[SEP]"])
        items = [dict(zip(columns, values)) for values in zip(*columns.values())]
        batches = []
        for start in range(0, len(items) - self.batch_size + 1, self.batch_size):
            with seeded_rngs(rng.getrandbits(62)):
                batches.append(self.collator(items[start : start + self.batch_size]))
        return batches

    def _split_picks(self, docs: Any, nonempty: np.ndarray) -> dict[str, np.ndarray]:
        """Positions among the non-empty documents of each split's: seeded by ``split_seed``, or (streaming) by
        :meth:`held_out`, as the training stream skips them."""
        if self.streaming:
            names = np.array([self.held_out(t or "") for t in docs.select_columns(["text"])["text"]])[nonempty]
            picks = {split: np.flatnonzero(names == split) for split in SPLITS}
            if not len(picks["validation"]) or (self.test_fraction > 0 and not len(picks["test"])):
                raise UserError(f"the first {len(docs)} documents of {self.source} hold no validation or test "
                                "document: raise --data.max_documents (the documents streaming holds out from) or "
                                "--data.val_fraction/--data.test_fraction")
            return picks
        n = len(nonempty)
        order = list(range(n))
        random.Random(self.split_seed).shuffle(order)
        n_val, n_test = (max(1, round(n * f)) if f > 0 else 0 for f in (self.val_fraction, self.test_fraction))
        if n - n_val - n_test < 1:
            raise UserError(f"the corpus {self.source} has {n} documents: too few for validation and test splits "
                            "(lower --data.val_fraction/--data.test_fraction)")
        picks = {"train": order[n_val + n_test :], "validation": order[:n_val], "test": order[n_val : n_val + n_test]}
        return {split: np.sort(np.array(p, dtype=np.int64)) for split, p in picks.items()}

    @property
    def instances_path(self) -> Path:
        """The cache folder of this tokenizer's, source's and settings' instances."""
        settings = {"format": _CACHE_FORMAT, "tokenizer": hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest(),
                    "source": self.source.key, "max_documents": self.max_documents,
                    "split": [self.val_fraction, self.test_fraction, self.split_seed,
                              "held out by hash" if self.streaming else "at random"],
                    "instances": [self.max_seq_length, self.short_seq_prob, self.nsp_prob, self.dupe_factor]}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        name = Path(str(self.source)).name.replace(":", "_")
        return self.cache_dir / "pretraining" / f"{name}-{self.max_seq_length}-{key}"

    def build_instances(self) -> dict[str, Any]:
        """Each split's instances (memory-mapped ``datasets.Dataset``), prepared once into :attr:`instances_path`."""
        import datasets  # 0.35 s to import: only when a dataset is read

        tok = self.tokenizer
        ids = special_ids(tok)
        id_list, int8 = datasets.Sequence(datasets.Value("int32")), datasets.Value("int8")
        features = datasets.Features({"input_ids": id_list, "token_type_ids": datasets.Sequence(int8),
                                      "next_sentence_label": int8})

        def build(folder: Path) -> None:
            docs = self.documents()
            processes = preparation_processes(self.num_proc, len(docs))
            folder.mkdir(parents=True)
            tag = hashlib.sha256(folder.name.encode()).hexdigest()[:16]  # map fingerprints: at most 64 characters
            with quiet_fork(processes):
                tokens = docs.map(_encode_documents, batched=True, batch_size=256, num_proc=processes,
                                  remove_columns=docs.column_names, fn_kwargs={"tok": tok},
                                  features=datasets.Features({"ids": id_list, "ends": id_list}),
                                  cache_file_name=str(folder / "tokens.arrow"), new_fingerprint=f"tokens-{tag}",
                                  desc="Tokenizing documents")
                rows = ArrowRows(tokens, ["ids", "ends"])
                nonempty = np.flatnonzero(pc.list_value_length(tokens.data.column("ends")).to_numpy() > 0)
                for k, (split, picks) in enumerate(self._split_picks(docs, nonempty).items()):
                    settings = (self.max_seq_length, self.short_seq_prob, self.nsp_prob, self.dupe_factor,
                                mix_seed(self.split_seed, k))
                    datasets.Dataset.from_dict({"doc": picks}).map(
                        _instances_batch, batched=True, batch_size=64, with_indices=True, remove_columns=["doc"],
                        num_proc=preparation_processes(self.num_proc, len(picks)), features=features,
                        cache_file_name=str(folder / f"{split}.arrow"), new_fingerprint=f"{split}-{tag}",
                        fn_kwargs={"docs": SplitDocuments(rows, nonempty[picks]), "settings": settings,
                                   "cls_sep": (ids["[CLS]"], ids["[SEP]"])}, desc=f"Sentence pairs ({split})")
            for f in folder.glob("tokens*.arrow"):
                f.unlink()

        return {split: load_shards(build_cached(self.instances_path, build), split) for split in SPLITS}

    def prepare_data(self) -> None:
        self.build_instances()

    def setup(self, stage: str) -> None:
        if not self._splits:
            self._splits = {split: PretrainingInstances(ds) for split, ds in self.build_instances().items()}
        self.collator = MaskedLMCollator(self.tokenizer, self.mlm_probability, self.whole_word_masking,
                                         self.pad_to_multiple_of, self.max_seq_length)

    train_set = property(lambda self: self._splits["train"])
    val_set = property(lambda self: self._splits["validation"])
    test_set = property(lambda self: self._splits["test"])

    def _eval_loader(self, split: str) -> DataLoader:
        masks = StaticMasks(self._splits[split], self.collator, mix_seed(self.seed, 1 + SPLITS.index(split)))
        return self.eval_loader(masks, self.collator, collate=True)

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self.stream_loader(self.source.stream(), self._stream_batches, self.stream_block_size)
        return self.train_loader(self.train_set, self.collator, collate=True)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
