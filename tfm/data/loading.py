"""Data loading that resumes exactly: the common base of every tfm DataModule.

A run killed at any step and resumed from its checkpoint sees the same batches, in the same
order, with the same augmentations, as a run never interrupted:

* :class:`ResumableSampler` draws each epoch's order from ``(seed, epoch)`` alone and can start
  an epoch part-way through;
* :class:`SeededTransform` draws each batch's augmentation (or masking) from ``(seed, epoch,
  first index)``, not from the global RNG, so prefetching, worker count and restarts cannot
  shift it; evaluation batches get the same draw every epoch;
* :class:`ResumableDataModule` writes the position (epoch, batches done) into the checkpoint and
  reads it back; the DataLoader gets its own generator, so creating an iterator draws nothing
  from the global RNG (which the task saves and restores for dropout).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style mixing, stable across runs and platforms)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one epoch, sharded over DDP ranks.

    The order depends only on ``(seed, epoch)``; ``skip`` batches' worth of indices can be
    skipped at the start of the epoch being resumed. Each yielded index is ``epoch * n + i`` so
    that :class:`SeededTransform` knows the epoch; the DataModule's dataset decodes it. With
    ``per_epoch=False`` (evaluation) every epoch counts as epoch 0: the same indices, the same
    seeded transforms.
    """

    def __init__(
        self, n: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0, drop_last: bool = False, per_epoch: bool = True
    ) -> None:
        self.n, self.shuffle, self.seed, self.per_epoch = n, shuffle, seed, per_epoch
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch = 0
        self.skip_samples = 0  # per replica, applied once to ``resume_epoch``
        self.resume_epoch: int | None = None
        if drop_last and n % num_replicas:
            self.per_replica = n // num_replicas
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
        total = self.per_replica * self.num_replicas
        idx = idx[:total] if len(idx) >= total else idx + idx[: total - len(idx)]
        return idx[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        idx = self.order(self.epoch)
        if self.resume_epoch == self.epoch and self.skip_samples:
            idx = idx[self.skip_samples :]
        self.resume_epoch, self.skip_samples = None, 0
        base = self.epoch * self.n
        return iter([base + i for i in idx])

    def __len__(self) -> int:
        return self.per_replica


class SeededTransform(Dataset):
    """Wraps a dataset whose samples are ``(input, target)`` and applies ``transform`` with the
    torch RNG seeded from ``(seed, epoch, first index)`` of each batch.

    Index ``epoch * n + i`` reads item ``i``. The DataLoader fetches a whole batch at once
    (``__getitems__``), in one worker, so a batch's augmentations depend only on the seed, the
    epoch and the batch's indices: not on prefetching, the worker count or a restart.
    ``batched``: ``transform`` takes the stacked inputs. ``collate``: ``transform`` takes the list
    of samples (of any form) and returns the whole batch (the loader then has no ``collate_fn``).
    """

    def __init__(self, dataset: Dataset, transform: Callable | None, seed: int = 0, batched: bool = False, collate: bool = False) -> None:
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
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(self.seed, epoch, first))
            if self.collate:  # list of samples -> batch
                return self.transform(samples)
            if self.batched:  # one call on the stacked batch (per-sample randomness inside)
                out = self.transform(torch.stack([x for x, _ in samples]))
                return list(zip(out.unbind(0), (y for _, y in samples)))
            return [(self.transform(x), y) for x, y in samples]


def _as_is(batch: Any) -> Any:
    """The collate function of a loader whose dataset returns whole batches."""
    return batch


class ResumableDataModule(pl.LightningDataModule):
    """Base of tfm's DataModules: build the training loader with :meth:`train_loader` and the
    evaluation loaders with :meth:`eval_loader`; the position in the epoch goes into checkpoints.

    Args:
        batch_size: training batch size per device.
        eval_batch_size: evaluation batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: data order and augmentation seed (independent of ``seed_everything``).
    """

    def __init__(self, batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._resume: dict[str, int] | None = None
        self._train_sampler: ResumableSampler | None = None

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, dataset: SeededTransform, sampler: ResumableSampler, batch_size: int, collate_fn: Callable | None, drop_last: bool) -> DataLoader:
        if dataset.collate and dataset.transform is not None:
            collate_fn = _as_is
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_loader(
        self, dataset: Dataset, transform: Callable | None = None, collate_fn: Callable | None = None, batched: bool = False, collate: bool = False
    ) -> DataLoader:
        """The training DataLoader: shuffled per epoch, seeded augmentation, resumable.
        ``batched``: ``transform`` takes a stacked batch rather than one sample; ``collate``: it
        takes the list of samples and returns the batch (seeded masking of a padded batch)."""
        replicas, rank = self._replicas()
        n = len(dataset)  # type: ignore[arg-type]
        drop_last = n > self.batch_size * replicas
        sampler = ResumableSampler(n, shuffle=True, seed=self.seed, num_replicas=replicas, rank=rank, drop_last=drop_last)
        if self._resume is not None:
            sampler.resume_epoch = self._resume["epoch"]
            sampler.skip_samples = self._resume["batches"] * self.batch_size
            self._resume = None
        self._train_sampler = sampler
        return self._loader(SeededTransform(dataset, transform, self.seed, batched, collate), sampler, self.batch_size, collate_fn, drop_last)

    def eval_loader(
        self, dataset: Dataset, transform: Callable | None = None, collate_fn: Callable | None = None, batched: bool = False, collate: bool = False
    ) -> DataLoader:
        """An evaluation DataLoader: in order, sharded over DDP ranks; a random transform draws
        the same every epoch (comparable validation losses)."""
        replicas, rank = self._replicas()
        sampler = ResumableSampler(len(dataset), shuffle=False, num_replicas=replicas, rank=rank, per_epoch=False)  # type: ignore[arg-type]
        return self._loader(SeededTransform(dataset, transform, self.seed, batched, collate), sampler, self.eval_batch_size, collate_fn, False)

    # --- checkpointed position ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != "fit":
            return {}
        epochs = trainer.fit_loop.epoch_progress.current
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = trainer.current_epoch
        if epochs.started == epochs.completed:  # the epoch is closed (training ended mid-epoch): the next one starts
            batches = 0
        elif epochs.processed > epochs.completed or batches >= trainer.num_training_batches:  # at its end hooks
            epoch, batches = epoch + 1, 0
        return {"epoch": epoch, "batches": batches, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and "epoch" in state:
            if state.get("seed", self.seed) != self.seed:
                from ..errors import UserError

                raise UserError(f"the checkpoint's data seed is {state['seed']} but --data.seed is {self.seed}: resume with the same seed")
            self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
