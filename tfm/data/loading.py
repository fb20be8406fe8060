"""Data loading that resumes exactly: the common base of every tfm DataModule.

A run killed at any step and resumed from its checkpoint sees the same batches, in the same
order, with the same augmentations, as a run never interrupted:

* :class:`ResumableSampler` draws each epoch's order from ``(seed, epoch)`` alone and can start
  an epoch part-way through;
* :class:`SeededTransform` draws each batch's augmentation (or masking) from ``(seed, epoch,
  first index)``, not from the global RNG, so prefetching, worker count and restarts cannot
  shift it; evaluation batches get the same draw every epoch;
* :class:`TokenBatchSampler` does the same for batches packed by token count (translation):
  each epoch's batches depend only on ``(seed, epoch)``, every epoch has the same number of them;
* :class:`ResumableDataModule` writes the position (epoch, batches done) into the checkpoint and
  reads it back; the DataLoader gets its own generator, so creating an iterator draws nothing
  from the global RNG (which the task saves and restores for dropout).
"""

from __future__ import annotations

import copy
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerStatus
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from ..errors import UserError
from ..hardware import auto_num_workers


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style mixing, stable across runs and platforms)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """torch's CPU generator seeded with ``seed`` inside, restored after (``torch.manual_seed``
    would also queue a CUDA seed, a stack trace each time)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one epoch, sharded over DDP ranks.

    The order depends only on ``(seed, epoch)``; ``skip`` batches' worth of indices can be
    skipped at the start of the epoch being resumed. Each yielded index is ``epoch * n + i`` so
    that :class:`SeededTransform` knows the epoch; the DataModule's dataset decodes it. With
    ``per_epoch=False`` (evaluation) every epoch counts as epoch 0: the same indices, the same
    seeded transforms, and the shards are not padded with repeats (they differ by one index at
    most), so a metric over several ranks is the metric of one process.
    """

    def __init__(
        self, n: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0,
        drop_last: bool = False, per_epoch: bool = True
    ) -> None:
        self.n, self.shuffle, self.seed, self.per_epoch = n, shuffle, seed, per_epoch
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch = 0
        self.skip_samples = 0  # per replica, applied once to ``resume_epoch``
        self.resume_epoch: int | None = None
        self.uneven = not per_epoch and n >= num_replicas  # evaluation: shards without repeats
        if drop_last and n % num_replicas:
            self.per_replica = n // num_replicas
        elif self.uneven:
            self.per_replica = len(range(rank, n, num_replicas))
        else:
            self.per_replica = -(-n // num_replicas)

    def set_epoch(self, epoch: int) -> None:
        if self.per_epoch:
            self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        if self.uneven:
            return idx[self.rank :: self.num_replicas]
        total = self.per_replica * self.num_replicas
        idx = idx[:total] if len(idx) >= total else idx + idx[: total - len(idx)]
        return idx[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        # a generator, as TokenBatchSampler's: the epoch's order is drawn at the first ``next``
        idx = self.order(self.epoch)
        if self.resume_epoch == self.epoch and self.skip_samples:
            idx = idx[self.skip_samples :]
        self.resume_epoch, self.skip_samples = None, 0
        base = self.epoch * self.n
        yield from (base + i for i in idx)

    def __len__(self) -> int:
        return self.per_replica


class TokenBatchSampler(Sampler[list[int]]):
    """Batches packed by token count, one epoch at a time, sharded over DDP ranks, resumable.

    ``lengths`` holds each item's length, ``(n,)``, or several, ``(n, k)`` (a translation pair's
    source and target lengths). A batch holds at most ``max_tokens`` tokens counted padded, on
    every column: ``len(batch) * max(lengths in the batch) <= max_tokens`` (an item longer than
    ``max_tokens`` makes a batch of one); ``max_batch_size`` optionally caps the item count.

    The shape of the epoch is fixed once: items are grouped into length buckets (each length
    divided by ``bucket_width``, on every column), the buckets sorted (by their longest column,
    then column by column: neighbours are alike on every column), and the sorted slots packed
    greedily as if each item had its bucket's longest lengths. With ``shuffle``, each epoch then
    shuffles the items within each bucket (so batches have new members but the same lengths:
    the count is the same every epoch, ``len()`` is exact, and no batch can exceed its budget)
    and shuffles the batch order, from ``(seed, epoch)`` alone. Without it (evaluation) the
    batches come in sorted order, ties by index.

    Sharding: every rank computes the same global list and takes every ``num_replicas``-th batch;
    ``drop_last`` drops the last few (at most ``num_replicas - 1``, different ones each epoch)
    so the ranks get disjoint lists of equal length, else the list is padded by repeating its
    first batches. ``skip_batches`` batches of ``resume_epoch`` are skipped once (resuming).

    As :class:`ResumableSampler`, the indices yielded are ``epoch * n + i`` (``per_epoch=False``:
    ``i``) for :class:`SeededTransform`. Lightning calls ``set_epoch`` on the loader's
    ``batch_sampler.sampler``: that is this object.
    """

    def __init__(
        self,
        lengths: Sequence[int] | Sequence[Sequence[int]] | np.ndarray,
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        per_epoch: bool = True,
        bucket_width: int = 1,
        max_batch_size: int | None = None,
    ) -> None:
        lens = np.asarray(lengths, dtype=np.int64)
        if lens.ndim == 1:
            lens = lens[:, None]
        if lens.ndim != 2:
            raise ValueError(f"lengths must have shape (n,) or (n, k), not {lens.shape}")
        if max_tokens < 1 or bucket_width < 1 or (max_batch_size is not None and max_batch_size < 1):
            raise ValueError("max_tokens, bucket_width and max_batch_size must be at least 1")
        self.lengths, self.n = lens, len(lens)
        self.max_tokens, self.shuffle, self.seed, self.per_epoch = max_tokens, shuffle, seed, per_epoch
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.bucket_width, self.max_batch_size = bucket_width, max_batch_size
        self.sampler = self  # where Lightning looks for set_epoch
        self.epoch = 0
        self.skip_batches = 0  # per replica, applied once to ``resume_epoch``
        self.resume_epoch: int | None = None
        # buckets in sorted order and the fixed packing of their slots
        keys = lens // bucket_width
        keys = np.concatenate([keys.max(1, keepdims=True), keys], 1)  # sorted by the longest column first
        if self.n:
            base = int(keys.max()) + 1
            if base ** keys.shape[1] < 2**62:  # one mixed-radix integer per row: a fast 1-D unique
                flat = np.zeros(self.n, dtype=np.int64)
                for column in keys.T:
                    flat = flat * base + column
                _, self.bucket = np.unique(flat, return_inverse=True)
            else:
                _, self.bucket = np.unique(keys, axis=0, return_inverse=True)
            self.bucket = self.bucket.reshape(-1)
        else:
            self.bucket = np.zeros(0, dtype=np.int64)
        self._sorted = np.lexsort((np.arange(self.n), self.bucket))  # order with ties by index
        bucket_max = np.zeros((int(self.bucket.max()) + 1 if self.n else 0, lens.shape[1]), dtype=np.int64)
        np.maximum.at(bucket_max, self.bucket, lens)
        self.bounds = self._pack(bucket_max[self.bucket[self._sorted]] if self.n else lens)
        batches = len(self.bounds)
        if drop_last and batches >= num_replicas:
            self.per_replica = batches // num_replicas
        else:
            self.per_replica = -(-batches // num_replicas)

    def _pack(self, slot_lengths: np.ndarray) -> list[tuple[int, int]]:
        """Greedy packing of slots (in order) into ``(start, end)`` ranges within the budget, a
        run of equal slots (a bucket) at a time."""
        n = len(slot_lengths)
        if not n:
            return []
        cap = self.max_batch_size or n
        run_starts = np.flatnonzero(np.r_[True, (slot_lengths[1:] != slot_lengths[:-1]).any(1)])
        bounds: list[tuple[int, int]] = []
        start, count, longest = 0, 0, 0  # the open batch: first slot, size, longest length
        for a, b in zip(run_starts.tolist(), [*run_starts[1:].tolist(), n]):
            row_max, left = int(slot_lengths[a].max()), b - a
            while left:
                grown = max(longest, row_max)
                fits = min(cap, self.max_tokens // grown if grown else cap) - count
                if count and fits <= 0:  # close the open batch
                    bounds.append((start, start + count))
                    start, count, longest = start + count, 0, 0
                    continue
                take = min(max(fits, 1), left)  # an item over the budget makes a batch of one
                count, left, longest = count + take, left - take, grown
                if left:  # the batch is full
                    bounds.append((start, start + count))
                    start, count, longest = start + count, 0, 0
        if count:
            bounds.append((start, start + count))
        return bounds

    def set_epoch(self, epoch: int) -> None:
        if self.per_epoch:
            self.epoch = epoch

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All the batches of ``epoch`` (item indices ``0..n-1``) in order, before sharding."""
        if self.shuffle:
            rng = np.random.default_rng(mix_seed(self.seed, epoch))
            order = np.lexsort((rng.random(self.n), self.bucket))  # each bucket's items shuffled
            batches = [order[a:b].tolist() for a, b in self.bounds]
            return [batches[j] for j in rng.permutation(len(batches))]
        return [self._sorted[a:b].tolist() for a, b in self.bounds]

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (item indices ``0..n-1``)."""
        batches = self.global_batches(epoch)
        total = self.per_replica * self.num_replicas
        batches = batches[:total] if len(batches) >= total else batches + batches[: total - len(batches)]
        return batches[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        # a generator: the epoch's batches are drawn at the first ``next``, not at ``iter``. A
        # DataLoader calls ``iter`` on its batch sampler when it makes its iterator, and Lightning,
        # resuming from a checkpoint of an epoch's last step, makes that iterator before it calls
        # ``set_epoch`` for the new epoch: an eager ``__iter__`` would replay the old epoch
        batches = self.batches(self.epoch)
        if self.resume_epoch == self.epoch and self.skip_batches:
            batches = batches[self.skip_batches :]
        self.resume_epoch, self.skip_batches = None, 0
        base = self.epoch * self.n
        for b in batches:
            yield [base + i for i in b]

    def __len__(self) -> int:
        return self.per_replica

    def padding_fraction(self, epoch: int = 0) -> float:
        """The share of padding in the padded batches of ``epoch`` (all ranks, every column)."""
        pad = total = 0
        for b in self.global_batches(epoch):
            lens = self.lengths[b]
            padded = lens.max(0) * len(b)
            total += int(padded.sum())
            pad += int((padded - lens.sum(0)).sum())
        return pad / total if total else 0.0


class ArrowRows(Dataset):
    """The rows of a ``datasets.Dataset`` (without an indices mapping) read straight from its
    Arrow table: item ``i`` is a dict of ``columns``, a list column as a numpy view, a number as a
    numpy scalar, a string as a ``str``. Nothing is copied: a table loaded from disk stays memory-mapped, so the
    DDP ranks and DataLoader workers of one node share its pages. Pickles as the dataset (a path
    for one on disk) and maps the table again where it is unpickled."""

    def __init__(self, ds: Any, columns: Sequence[str] | None = None) -> None:
        self.ds, self.columns = ds, list(columns or ds.column_names)
        table = ds.with_format("arrow")[:]
        self.n = table.num_rows
        self._parts: dict[str, tuple[np.ndarray, list[Any]]] = {}
        for name in self.columns:
            chunks = [c for c in table.column(name).chunks if len(c)]
            starts = np.cumsum([0] + [len(c) for c in chunks])
            self._parts[name] = (starts, [_view(c) for c in chunks])

    def __len__(self) -> int:
        return self.n

    def column(self, name: str, i: int) -> Any:
        starts, views = self._parts[name]
        k = int(np.searchsorted(starts, i, side="right")) - 1
        view, j = views[k], i - starts[k]
        if isinstance(view, tuple):
            offsets, values = view
            return values[offsets[j] : offsets[j + 1]]
        if isinstance(view, np.ndarray):
            return view[j]
        return view[int(j)].as_py()  # a string

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        return {name: self.column(name, i) for name in self.columns}

    def __getstate__(self) -> dict[str, Any]:
        return {"ds": self.ds, "columns": self.columns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ds"], state["columns"])  # type: ignore[misc]


class PadCollator:
    """Pads samples (dicts) into a batch of int64 tensors: each column of ``pads`` (present in the
    samples) padded with its value, ``attention_mask`` (1: a real token of ``input_ids``),
    ``token_type_ids`` zeros when the samples have none, and ``stack``'s columns stacked as they
    are (labels, positions, indices). A batch is as long as its longest sequence, rounded up to
    ``pad_to_multiple_of`` but never beyond ``max_length``."""

    def __init__(self, pads: dict[str, int], stack: Sequence[str] = (), pad_to_multiple_of: int | None = 8,
                 max_length: int | None = None) -> None:
        self.pads, self.stack = pads, tuple(stack)
        self.pad_to_multiple_of, self.max_length = pad_to_multiple_of, max_length

    def length(self, longest: int) -> int:
        if not self.pad_to_multiple_of:
            return longest
        length = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return length if self.max_length is None else max(longest, min(length, self.max_length))

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(s["input_ids"]) for s in samples]
        width = self.length(max(lengths))
        batch = {}
        for name, value in self.pads.items():
            if name in samples[0]:
                out = np.full((len(samples), width), value, dtype=np.int64)
                for row, s in enumerate(samples):
                    out[row, : len(s[name])] = s[name]
                batch[name] = torch.from_numpy(out)
        batch.setdefault("token_type_ids", torch.zeros(len(samples), width, dtype=torch.long))
        batch["attention_mask"] = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
        for name in self.stack:
            if name in samples[0]:
                batch[name] = torch.from_numpy(np.stack([np.asarray(s[name]) for s in samples]))
        return batch


def _view(chunk: Any) -> Any:
    """An Arrow chunk as read by :class:`ArrowRows`: ``(offsets, values)`` numpy views of a list
    array, a numpy view of numbers, the array itself for strings."""
    import pyarrow as pa

    if pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type):
        return chunk.offsets.to_numpy(), chunk.values.to_numpy()
    if pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
        return chunk
    return chunk.to_numpy()


class SeededTransform(Dataset):
    """Wraps a dataset whose samples are ``(input, target)`` and applies ``transform`` with the
    torch RNG seeded from ``(seed, epoch, first index)`` of each batch.

    Index ``epoch * n + i`` reads item ``i``. The DataLoader fetches a whole batch at once
    (``__getitems__``), in one worker, so a batch's augmentations depend only on the seed, the
    epoch and the batch's indices: not on prefetching, the worker count or a restart.
    ``batched``: ``transform`` takes the stacked inputs. ``collate``: ``transform`` takes the list
    of samples (of any form) and returns the whole batch (the loader then has no ``collate_fn``).
    """

    def __init__(self, dataset: Dataset, transform: Callable | None, seed: int = 0, batched: bool = False,
                 collate: bool = False) -> None:
        self.dataset, self.transform, self.seed, self.batched, self.collate = dataset, transform, seed, batched, collate
        self.n = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        out = self.__getitems__([index])
        return out if self.collate else out[0]

    def __getitems__(self, indices: list[int]) -> Any:
        items = [divmod(int(index), self.n) for index in indices]
        samples = [self.dataset[i] for _, i in items]
        if self.transform is None:
            return samples
        epoch, first = items[0]
        with seeded_torch(mix_seed(self.seed, epoch, first)):
            if self.collate:  # list of samples -> batch
                return self.transform(samples)
            if self.batched:  # one call on the stacked batch (per-sample randomness inside)
                out = self.transform(torch.stack([x for x, _ in samples]))
                return list(zip(out.unbind(0), (y for _, y in samples)))
            return [(self.transform(x), y) for x, y in samples]


STREAM_POSITION = "_stream_position"


class ResumableStream(IterableDataset):
    """Training batches from a ``datasets.IterableDataset`` (streamed: nothing downloaded ahead)
    that a run resumes exactly, at the batch it stopped after.

    The stream (this rank's part, ``split_dataset_by_node``) is read in blocks of ``block_size``
    rows; ``make_batches(rows, rng)`` turns a block into collated batches, its randomness (the
    shuffle of the block, masking) drawn from ``rng``, seeded by ``(seed, epoch, block)``: a
    seeded shuffle buffer whose content is a function of the stream's position alone. Every batch
    carries its position (the stream's ``state_dict()`` at its block's start, the block and the
    batch within it) under :data:`STREAM_POSITION`; the DataModule keeps the position of the last
    batch trained on and writes it into checkpoints, and a resumed stream restarts from that
    block's state and skips the batches done. Reads in the training process (no workers: a
    worker's copy of the stream could not report where it is).
    """

    def __init__(self, stream: Any, make_batches: Callable[[list[dict[str, Any]], random.Random], list[Any]],
                 block_size: int = 10_000, seed: int = 0, epoch: Callable[[], int] = lambda: 0) -> None:
        self.stream, self.make_batches, self.block_size = stream, make_batches, block_size
        self.seed, self.epoch = seed, epoch
        self.resume: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        epoch, block, skip = self.epoch(), 0, 0
        stream = copy.deepcopy(self.stream)  # a state loaded into a stream stays its start for every later epoch
        stream.set_epoch(epoch)
        if self.resume is not None and self.resume["epoch"] == epoch:
            stream.load_state_dict(self.resume["state"])
            block, skip = self.resume["block"], self.resume["done"]
        self.resume = None
        rows = iter(stream)
        while True:
            state = copy.deepcopy(stream.state_dict())
            block_rows = list(islice(rows, self.block_size))
            if not block_rows:
                return
            batches = self.make_batches(block_rows, random.Random(mix_seed(self.seed, epoch, block)))
            for k in range(skip, len(batches)):
                yield {**batches[k], STREAM_POSITION: {"epoch": epoch, "state": state, "block": block, "done": k + 1}}
            block, skip = block + 1, 0


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C and SIGTERM to the training process, which stops at a batch
    end with a checkpoint (:class:`~tfm.callbacks.StopSignals`); a worker that died of the signal
    would end that process first ("DataLoader worker exited unexpectedly"). Workers still end
    with the training process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _as_is(batch: Any) -> Any:
    """The collate function of a loader whose dataset returns whole batches."""
    return batch


class ResumableDataModule(pl.LightningDataModule):
    """Base of tfm's DataModules: build the training loader with :meth:`train_loader` and the
    evaluation loaders with :meth:`eval_loader`; the position in the epoch goes into checkpoints.

    Args:
        batch_size: training batch size per device.
        eval_batch_size: evaluation batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes; None: none on a CPU run, on a GPU one per CPU
            of the device's share less one, at most 8 (persistent, with pinned memory).
        seed: data order and augmentation seed (independent of ``seed_everything``).
    """

    def __init__(self, batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._resume: dict[str, int] | None = None
        self._train_sampler: ResumableSampler | TokenBatchSampler | None = None
        self._stream_resume: list[dict[str, Any]] | None = None  # each rank's position in a streamed training split
        self._stream_position: dict[str, Any] | None = None  # the position of the last batch trained on
        self._streamed = False

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, dataset: SeededTransform, collate_fn: Callable | None, **sampling: Any) -> DataLoader:
        """A DataLoader over ``dataset``; ``sampling``: ``sampler``, ``batch_size`` and ``drop_last``,
        or a ``batch_sampler``."""
        if dataset.collate and dataset.transform is not None:
            collate_fn = _as_is
        trainer = getattr(self, "trainer", None)
        on_cuda = trainer is not None and trainer.strategy.root_device.type == "cuda"
        workers = self.num_workers
        if workers is None:
            workers = auto_num_workers(on_cuda, trainer.num_devices if trainer else 1)
        return DataLoader(
            dataset,
            collate_fn=collate_fn,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=on_cuda,  # page-locked batches copy to the GPU asynchronously
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=_ignore_stop_signals if workers > 0 else None,
            **sampling,
        )

    def train_loader(
        self,
        dataset: Dataset,
        transform: Callable | None = None,
        collate_fn: Callable | None = None,
        batched: bool = False,
        collate: bool = False,
        batch_sampler: TokenBatchSampler | None = None,
    ) -> DataLoader:
        """The training DataLoader: shuffled per epoch, seeded augmentation, resumable.
        ``batched``: ``transform`` takes a stacked batch rather than one sample; ``collate``: it
        takes the list of samples and returns the batch (seeded masking of a padded batch).
        ``batch_sampler``: batches from it (built for this rank, see :meth:`_replicas`) rather
        than of ``batch_size``; the checkpointed position skips its batches done."""
        if batch_sampler is not None:
            if self._resume is not None:
                # the epoch too, not only at Lightning's set_epoch: a loader with workers draws its
                # first batches when its iterator is made, which on a restart comes before set_epoch
                batch_sampler.epoch = batch_sampler.resume_epoch = self._resume["epoch"]
                batch_sampler.skip_batches = self._resume["batches"]
                self._resume = None
            self._train_sampler = batch_sampler
            return self._loader(SeededTransform(dataset, transform, self.seed, batched, collate), collate_fn,
                                batch_sampler=batch_sampler)
        replicas, rank = self._replicas()
        n = len(dataset)  # type: ignore[arg-type]
        drop_last = n > self.batch_size * replicas
        sampler = ResumableSampler(n, shuffle=True, seed=self.seed, num_replicas=replicas, rank=rank,
                                   drop_last=drop_last)
        if self._resume is not None:
            sampler.epoch = sampler.resume_epoch = self._resume["epoch"]  # see above: before set_epoch
            sampler.skip_samples = self._resume["batches"] * self.batch_size
            self._resume = None
        self._train_sampler = sampler
        return self._loader(SeededTransform(dataset, transform, self.seed, batched, collate), collate_fn,
                            sampler=sampler, batch_size=self.batch_size, drop_last=drop_last)

    def eval_loader(
        self,
        dataset: Dataset,
        transform: Callable | None = None,
        collate_fn: Callable | None = None,
        batched: bool = False,
        collate: bool = False,
        batch_sampler: TokenBatchSampler | None = None,
    ) -> DataLoader:
        """An evaluation DataLoader: in order, sharded over DDP ranks; a random transform draws
        the same every epoch (comparable validation losses). ``batch_sampler``: batches from it
        (``shuffle=False, per_epoch=False``) rather than of ``eval_batch_size``."""
        if batch_sampler is not None:
            return self._loader(SeededTransform(dataset, transform, self.seed, batched, collate), collate_fn,
                                batch_sampler=batch_sampler)
        replicas, rank = self._replicas()
        sampler = ResumableSampler(len(dataset), shuffle=False, num_replicas=replicas, rank=rank,
                                   per_epoch=False)  # type: ignore[arg-type]
        return self._loader(SeededTransform(dataset, transform, self.seed, batched, collate), collate_fn,
                            sampler=sampler, batch_size=self.eval_batch_size, drop_last=False)

    def stream_loader(self, rows: Any, make_batches: Callable[[list[dict[str, Any]], random.Random], list[Any]],
                      block_size: int) -> DataLoader:
        """The training DataLoader of a ``datasets`` stream of ``rows``: this rank's part, read by a
        :class:`ResumableStream` (its batches collated already), resumed at this rank's position in
        the checkpoint."""
        from datasets.distributed import split_dataset_by_node

        replicas, rank = self._replicas()
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.max_steps == -1:
            raise UserError("--data.streaming reads a stream of unknown length: set --trainer.max_steps (the schedule "
                            "needs it)")
        if replicas > 1:
            rows = split_dataset_by_node(rows, rank=rank, world_size=replicas)
        stream = ResumableStream(rows, make_batches, block_size, self.seed)
        if trainer is not None:
            stream.epoch = lambda: trainer.current_epoch
        if self._stream_resume is not None:
            if len(self._stream_resume) != replicas:
                raise UserError(f"the checkpoint was written by {len(self._stream_resume)} processes reading the "
                                f"stream, this run has {replicas}: "
                                "resume a streamed run with the same number of devices and nodes")
            stream.resume, self._stream_resume = self._stream_resume[rank], None
        self._streamed = True
        on_cuda = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return DataLoader(stream, batch_size=None, num_workers=0, pin_memory=on_cuda)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and STREAM_POSITION in batch:
            batch = dict(batch)
            position = batch.pop(STREAM_POSITION)
            trainer = getattr(self, "trainer", None)
            if trainer is not None and trainer.training:
                self._stream_position = position
        return batch

    def _stream_positions(self) -> list[dict[str, Any] | None]:
        """Every rank's stream position (gathered: each rank reads its own part of the stream)."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            positions: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(positions, self._stream_position)
            return positions
        return [self._stream_position]

    # --- checkpointed position ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != "fit":
            return {}
        if self._streamed:
            return {"stream": self._stream_positions(), "seed": self.seed}
        epochs = trainer.fit_loop.epoch_progress.current
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = trainer.current_epoch
        # after fit, an epoch cut by max_steps is closed: a resume starts the next one. (While
        # training, started == completed also holds in the epoch after a resume from an epoch's
        # last step: Lightning then does not count that epoch as started.)
        if trainer.state.status == TrainerStatus.FINISHED and epochs.started == epochs.completed:
            batches = 0
        elif epochs.processed > epochs.completed or batches >= trainer.num_training_batches:  # at its end hooks
            epoch, batches = epoch + 1, 0
        return {"epoch": epoch, "batches": batches, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and state.get("seed", self.seed) != self.seed:
            raise UserError(f"the checkpoint's data seed is {state['seed']} but --data.seed is {self.seed}: resume "
                            "with the same seed")
        if state and "stream" in state:
            self._stream_resume = [p if p is not None else {"epoch": -1} for p in state["stream"]]
        if state and "epoch" in state:
            self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
