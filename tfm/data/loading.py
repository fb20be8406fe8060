"""Data loading that resumes exactly: samplers draw each epoch from ``(seed, epoch)`` and can start it part-way,
transforms draw from ``(seed, epoch, first index)``, and :class:`ResumableDataModule` checkpoints the position."""

from __future__ import annotations

import copy
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partialmethod
from itertools import islice
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
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
def seeded_rngs(seed: int) -> Iterator[None]:
    """torch's CPU generator, Python's ``random`` and numpy's global generator (timm's RandAugment draws from both)
    seeded with ``seed`` inside, all restored after (no CUDA seeding)."""
    state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(state)
            np.random.set_state(np_state)


class ResumableSampler(Sampler):
    """Shuffled (or sequential) indices of an epoch from ``(seed, epoch)``, sharded over DDP ranks, yielded as ``epoch
    * n + i`` for :class:`SeededTransform`; a resume skips ``skip_batches`` batches (of ``per_batch`` units) of
    ``resume_epoch``, once. ``per_epoch=False`` (evaluation): every epoch is epoch 0 and shards are not padded with
    repeats, so a metric over ranks is that of one process."""

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 drop_last: bool = False, per_epoch: bool = True, per_batch: int = 1) -> None:
        self.n, self.shuffle, self.seed, self.per_epoch = n, shuffle, seed, per_epoch
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.per_batch = per_batch  # not ``batch_size``: Lightning would rebuild a batch sampler that has one
        self.epoch, self.skip_batches = 0, 0
        self.resume_epoch: int | None = None
        self.uneven = not per_epoch and n >= num_replicas  # evaluation: shards without repeats
        self.per_replica = (n // num_replicas if drop_last else len(range(rank, n, num_replicas)) if self.uneven
                            else -(-n // num_replicas))

    def set_epoch(self, epoch: int) -> None:
        if self.per_epoch:
            self.epoch = epoch

    def __len__(self) -> int:
        return self.per_replica

    def shard(self, units: list) -> list:
        """This rank's share of ``units``: every ``num_replicas``-th, the list cut or padded by repeats first."""
        total = self.per_replica * self.num_replicas
        units = units[:total] if len(units) >= total else units + units[: total - len(units)]
        return units[self.rank : total : self.num_replicas]

    def units(self, epoch: int) -> list:
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        idx = torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))
        return idx[self.rank :: self.num_replicas] if self.uneven else self.shard(idx)

    def __iter__(self) -> Iterator[Any]:
        # a generator, drawn at the first ``next``: Lightning, resuming from an epoch's last step, calls ``iter`` first
        units = self.units(self.epoch)
        if self.resume_epoch == self.epoch:
            units = units[self.skip_batches * self.per_batch :]
        self.resume_epoch, self.skip_batches = None, 0
        base = self.epoch * self.n
        for u in units:
            yield base + u if isinstance(u, int) else [base + i for i in u]


class TokenBatchSampler(ResumableSampler):
    """Batches packed by token count, sharded over DDP ranks, resumable. ``lengths``: ``(n,)`` or ``(n, k)`` (a pair's
    sides); a batch has ``len(batch) * max(lengths) <= max_tokens`` on every column (a longer item: a batch of one).
    The batches are fixed once by packing the items bucketed by ``length // bucket_width``; ``shuffle`` shuffles each
    bucket's items and the batch order per epoch, so ``len()`` is exact. Ranks take every ``num_replicas``-th batch."""

    def __init__(
        self, lengths: Sequence[int] | Sequence[Sequence[int]] | np.ndarray, max_tokens: int, shuffle: bool = True,
        seed: int = 0, num_replicas: int = 1, rank: int = 0, drop_last: bool = False, per_epoch: bool = True,
        bucket_width: int = 1,
    ) -> None:
        lens = np.asarray(lengths, dtype=np.int64)
        if lens.ndim == 1:
            lens = lens[:, None]
        if lens.ndim != 2:
            raise ValueError(f"lengths must have shape (n,) or (n, k), not {lens.shape}")
        if max_tokens < 1 or bucket_width < 1:
            raise ValueError("max_tokens and bucket_width must be at least 1")
        super().__init__(len(lens), shuffle, seed, num_replicas, rank, drop_last, per_epoch)
        self.lengths, self.max_tokens, self.bucket_width = lens, max_tokens, bucket_width
        self.sampler = self  # where Lightning calls set_epoch
        keys = lens // bucket_width
        keys = np.concatenate([keys.max(1, keepdims=True), keys], 1)  # buckets sorted by the longest column first
        self._sorted = np.lexsort(keys.T[::-1])  # by bucket, ties by index
        ordered = keys[self._sorted]
        self.bucket = np.empty(self.n, dtype=np.int64)
        self.bucket[self._sorted] = np.cumsum(np.r_[True, (ordered[1:] != ordered[:-1]).any(1)][: self.n]) - 1
        bucket_max = np.zeros((int(self.bucket.max(initial=-1)) + 1, lens.shape[1]), dtype=np.int64)
        np.maximum.at(bucket_max, self.bucket, lens)
        self.bounds = self._pack(bucket_max[self.bucket[self._sorted]])
        batches = len(self.bounds)
        drop = drop_last and batches >= num_replicas
        self.per_replica = batches // num_replicas if drop else -(-batches // num_replicas)

    def _pack(self, slot_lengths: np.ndarray) -> list[tuple[int, int]]:
        """The slots packed greedily, in order, into ``(start, end)`` ranges within the budget."""
        n = len(slot_lengths)
        if not n:
            return []
        run_starts = np.flatnonzero(np.r_[True, (slot_lengths[1:] != slot_lengths[:-1]).any(1)])
        bounds: list[tuple[int, int]] = []
        start, count, longest = 0, 0, 0  # the open batch: first slot, size, longest length
        for a, b in zip(run_starts.tolist(), [*run_starts[1:].tolist(), n]):
            row_max, left = int(slot_lengths[a].max()), b - a
            while left:
                grown = max(longest, row_max)
                fits = (self.max_tokens // grown if grown else n) - count
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

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of ``epoch`` (item indices ``0..n-1``)."""
        if self.shuffle:
            rng = np.random.default_rng(mix_seed(self.seed, epoch))
            order = np.lexsort((rng.random(self.n), self.bucket))  # each bucket's items shuffled
            batches = [order[a:b].tolist() for a, b in self.bounds]
            return [batches[j] for j in rng.permutation(len(batches))]
        return [self._sorted[a:b].tolist() for a, b in self.bounds]

    def batches(self, epoch: int) -> list[list[int]]:
        return self.shard(self.global_batches(epoch))

    units = batches

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
    """The rows of a ``datasets.Dataset`` (no indices mapping) read in place from its memory-mapped Arrow table: dicts
    of ``columns`` (a list as a numpy view, a number as a numpy scalar, a string as ``str``)."""

    def __init__(self, ds: Any, columns: Sequence[str] | None = None) -> None:
        self.ds, self.columns = ds, list(columns or ds.column_names)
        table = ds.with_format("arrow")[:]
        self.n = table.num_rows
        self._parts: dict[str, tuple[np.ndarray, list[Callable[[int], Any]]]] = {}
        for name in self.columns:
            chunks = [c for c in table.column(name).chunks if len(c)]
            starts = np.cumsum([0] + [len(c) for c in chunks])
            self._parts[name] = (starts, [_view(c) for c in chunks])

    def __len__(self) -> int:
        return self.n

    def column(self, name: str, i: int) -> Any:
        starts, views = self._parts[name]
        k = int(np.searchsorted(starts, i, side="right")) - 1
        return views[k](i - starts[k])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        return {name: self.column(name, i) for name in self.columns}

    def __getstate__(self) -> dict[str, Any]:
        return {"ds": self.ds, "columns": self.columns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ds"], state["columns"])  # type: ignore[misc]


def _view(chunk: Any) -> Callable[[int], Any]:
    """The reader of an Arrow chunk's ``j``-th value: a list as a numpy view, numbers from numpy, a string as is."""
    if pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type):
        offsets, values = chunk.offsets.to_numpy(), chunk.values.to_numpy()
        return lambda j: values[offsets[j] : offsets[j + 1]]
    if pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
        return lambda j: chunk[int(j)].as_py()
    return chunk.to_numpy().__getitem__


class PadCollator:
    """Samples (dicts) padded into int64 tensors: ``pads``' columns with their values, an ``attention_mask``, zero
    ``token_type_ids`` if absent, ``stack``'s columns stacked; the longest rounded up to ``pad_to_multiple_of``."""

    def __init__(self, pads: dict[str, int], stack: Sequence[str] = (), pad_to_multiple_of: int | None = 8,
                 max_length: int | None = None) -> None:
        self.pads, self.stack = pads, tuple(stack)
        self.pad_to_multiple_of, self.max_length = pad_to_multiple_of, max_length

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(s["input_ids"]) for s in samples]
        width = longest = max(lengths)
        if multiple := self.pad_to_multiple_of:
            width = -(-longest // multiple) * multiple
            width = width if self.max_length is None else max(longest, min(width, self.max_length))
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


class SeededTransform(Dataset):
    """``transform`` of a dataset's ``(input, target)`` samples with torch's RNG seeded from ``(seed, epoch, first
    index)`` of each batch (fetched whole by ``__getitems__``); index ``epoch * n + i`` reads item ``i``."""

    def __init__(self, dataset: Dataset, transform: Callable | None, seed: int = 0, batched: bool = False,
                 collate: bool = False) -> None:
        self.dataset, self.transform, self.seed, self.batched, self.collate = dataset, transform, seed, batched, collate
        self.n = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices: list[int]) -> Any:
        items = [divmod(int(index), self.n) for index in indices]
        samples = [self.dataset[i] for _, i in items]
        if self.transform is None:
            return samples
        epoch, first = items[0]
        with seeded_rngs(mix_seed(self.seed, epoch, first)):
            if self.collate:
                return self.transform(samples)
            if self.batched:
                out = self.transform(torch.stack([x for x, _ in samples]))
                return list(zip(out.unbind(0), (y for _, y in samples)))
            return [(self.transform(x), y) for x, y in samples]


STREAM_POSITION = "_stream_position"


class ResumableStream(IterableDataset):
    """Training batches of a streamed ``datasets.IterableDataset``, read in blocks of ``block_size`` rows that
    ``make_batches(rows, rng)`` batches (``rng`` from ``(seed, epoch, block)``). Each batch carries its position
    (the stream's state at its block, the block, the batches done) under :data:`STREAM_POSITION` to resume from."""

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
    """Workers leave Ctrl-C and SIGTERM to the training process (it stops at a batch end with a checkpoint)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _as_is(batch: Any) -> Any:
    return batch


class ResumableDataModule(pl.LightningDataModule):
    """Base of tfm's DataModules: loaders from :meth:`train_loader` and :meth:`eval_loader`, positions checkpointed.

    Args:
        batch_size: training batch size per device.
        eval_batch_size: evaluation batch size (default: ``batch_size``).
        num_workers: DataLoader workers; None: none on CPU, else one per CPU of the device's share less one (<= 8).
        seed: data order and augmentation seed (independent of ``seed_everything``).
    """

    def __init__(self, batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self._resume: dict[str, int] | None = None
        self._stream_resume: list[dict[str, Any]] | None = None  # each rank's position in a stream to resume from
        self._stream_position: dict[str, Any] | None = None  # that of the last batch trained on
        self._streamed = False

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def _on_cuda(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader(self, train: bool, dataset: Dataset, transform: Callable | None = None,
                collate_fn: Callable | None = None, batched: bool = False, collate: bool = False,
                batch_sampler: TokenBatchSampler | None = None) -> DataLoader:
        """A training DataLoader (shuffled per epoch, resumable) or an evaluation one (in order, the same draws every
        epoch). ``batched``: ``transform`` takes the stacked inputs; ``collate``: it makes the batch."""
        if batch_sampler is not None:
            sampler: ResumableSampler = batch_sampler
            sampling: dict[str, Any] = {"batch_sampler": batch_sampler}
        else:
            replicas, rank = self._replicas()
            n = len(dataset)  # type: ignore[arg-type]
            drop_last = train and n > self.batch_size * replicas
            sampler = ResumableSampler(n, shuffle=train, seed=self.seed, num_replicas=replicas,
                                       rank=rank, drop_last=drop_last, per_epoch=train, per_batch=self.batch_size)
            sampling = {"sampler": sampler, "batch_size": self.batch_size if train else self.eval_batch_size,
                        "drop_last": drop_last}
        if train and self._resume is not None:  # the epoch too: workers draw batches before Lightning's set_epoch
            sampler.epoch = sampler.resume_epoch = self._resume["epoch"]
            sampler.skip_batches = self._resume["batches"]
            self._resume = None
        data = SeededTransform(dataset, transform, self.seed, batched, collate)
        trainer = getattr(self, "trainer", None)
        workers = self.num_workers
        if workers is None:
            workers = auto_num_workers(self._on_cuda(), trainer.num_devices if trainer else 1)
        return DataLoader(data, collate_fn=_as_is if collate and transform is not None else collate_fn,
                          num_workers=workers, persistent_workers=workers > 0, pin_memory=self._on_cuda(),
                          worker_init_fn=_ignore_stop_signals if workers > 0 else None,
                          generator=torch.Generator().manual_seed(self.seed), **sampling)

    train_loader = partialmethod(_loader, True)
    eval_loader = partialmethod(_loader, False)

    def stream_loader(self, rows: Any, make_batches: Callable[[list[dict[str, Any]], random.Random], list[Any]],
                      block_size: int) -> DataLoader:
        """The training DataLoader of this rank's part of a ``datasets`` stream (a :class:`ResumableStream`)."""
        from datasets.distributed import split_dataset_by_node  # datasets is imported only when a dataset is read

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
        return DataLoader(stream, batch_size=None, num_workers=0, pin_memory=self._on_cuda())

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and STREAM_POSITION in batch:
            batch = dict(batch)
            position = batch.pop(STREAM_POSITION)
            if (trainer := getattr(self, "trainer", None)) is not None and trainer.training:
                self._stream_position = position
        return batch

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != "fit":
            return {}
        if self._streamed:  # every rank's position: each reads its own part of the stream
            dist, positions = torch.distributed, [self._stream_position]
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                positions = [None] * dist.get_world_size()
                dist.all_gather_object(positions, self._stream_position)
            return {"stream": positions, "seed": self.seed}
        epochs = trainer.fit_loop.epoch_progress.current
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = trainer.current_epoch
        # after fit, an epoch cut by max_steps is closed: a resume starts the next one (while training, started ==
        # completed also holds in the epoch after a resume from an epoch's last step, which Lightning doesn't count)
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
