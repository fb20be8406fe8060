"""Callbacks every tfm run gets: throughput and MFU, attention pictures, prediction files."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.flop_counter import FlopCounterMode
from torchvision.utils import save_image

from .checkpointing import write_atomic


def measure_matmul_peak(n: int | None = None, reps: int = 4, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> float:
    """Matmul FLOP/s this device reaches now in ``dtype`` (the MFU denominator where no datasheet
    value is known: every CPU, and GPUs missing from Lightning's table such as a plain "H200").
    ``n``: the square size, by default large enough to fill the device (1024 on a CPU, 8192 on a GPU)."""
    device = torch.device(device)
    on_gpu = device.type != "cpu"
    n = n or (8192 if on_gpu else 1024)
    reps = max(reps, 10) if on_gpu else reps
    g = torch.Generator(device=device).manual_seed(0)  # never the global RNG: training draws from it
    a = torch.randn(n, n, dtype=torch.float32, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, dtype=torch.float32, device=device, generator=g).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        if on_gpu:
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ b
        if on_gpu:
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def precision_dtype(precision: Any) -> torch.dtype:
    """The dtype the matmuls of a Lightning precision run in."""
    p = str(precision)
    return torch.bfloat16 if p.startswith("bf16") else torch.float16 if p.startswith("16") else torch.float32


class ThroughputMonitor(Callback):
    """Logs ``perf/steps_per_s``, ``perf/samples_per_s``, ``perf/tokens_per_s`` and ``perf/mfu`` while training.

    Samples and tokens come from the task's ``count_batch(batch)``. FLOPs of a training step are
    counted once, on the second batch this run sees (also after a resume), with ``torch.utils.flop_counter.FlopCounterMode`` (forward
    and backward as they really run); MFU divides the achieved FLOP/s by the device's peak (the
    datasheet value on GPUs in the run's precision, else a matmul peak measured
    there; a measured fp32 matmul peak on CPUs; or ``peak_flops``). Times are
    taken between consecutive batch ends, so data loading counts.
    """

    def __init__(self, log_every_n_steps: int = 50, peak_flops: float | None = None) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.peak_flops = peak_flops
        self.flops_per_batch: float | None = None
        self._counter: Any = None
        self._last: float | None = None
        self._window: list[tuple[float, int, int]] = []
        self._seen = 0  # training batches this run has seen (a resumed run starts mid-epoch)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.peak_flops is None:
            dev, dtype = pl_module.device, precision_dtype(trainer.precision)
            if dev.type == "cuda":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "FLOPs not found for ...": measured below
                    self.peak_flops = get_available_flops(dev, dtype)
                self.peak_flops = self.peak_flops or measure_matmul_peak(dtype=dtype, device=dev)
            elif dev.type == "cpu":
                self.peak_flops = measure_matmul_peak()  # fp32: bf16 matmuls on a CPU are emulated, far slower
        self._last = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._seen += 1
        if self.flops_per_batch is None and self._seen == 2 and self._counter is None:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops_per_batch = float(self._counter.get_total_flops())
            self._counter = None
            now = time.perf_counter()  # the counted step ran slower: leave it out of the window
            self._last = None
        count = getattr(pl_module, "count_batch", None)
        samples, tokens = count(batch) if count else (0, 0)
        if self._last is not None:
            self._window.append((now - self._last, samples, tokens))
        self._last = now
        if len(self._window) >= self.log_every_n_steps:
            dt = sum(w[0] for w in self._window)
            world = trainer.world_size
            metrics = {
                "perf/steps_per_s": len(self._window) / dt,
                "perf/samples_per_s": world * sum(w[1] for w in self._window) / dt,
                "perf/tokens_per_s": world * sum(w[2] for w in self._window) / dt,
            }
            if self.flops_per_batch and self.peak_flops:
                metrics["perf/mfu"] = self.flops_per_batch * len(self._window) / dt / self.peak_flops
            self._window.clear()
            pl_module.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None  # validation time is not training throughput


def attention_rollout(maps: list[torch.Tensor], num_prefix: int = 1) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) from the first token to the others.

    ``maps``: per layer ``(B, heads, T, T)``. Heads are averaged, the residual is added as
    ``0.5 A + 0.5 I``, rows renormalised, and the layers multiplied. Returns ``(B, T - prefix)``.
    """
    b, _, t, _ = maps[0].shape
    eye = torch.eye(t, device=maps[0].device).expand(b, t, t)
    rollout = eye
    for a in maps:
        a = 0.5 * a.mean(1) + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    return rollout[:, 0, num_prefix:]


def _heat_colors(h: torch.Tensor) -> torch.Tensor:
    """A dark-blue -> red -> yellow colour map of ``h`` in [0, 1]; ``(H, W)`` -> ``(3, H, W)``."""
    anchors = torch.tensor([[0.0, 0.0, 0.3], [0.8, 0.0, 0.2], [1.0, 0.6, 0.0], [1.0, 1.0, 0.6]])
    x = h.clamp(0, 1) * (len(anchors) - 1)
    i = x.floor().long().clamp(max=len(anchors) - 2)
    f = (x - i).unsqueeze(-1)
    return ((1 - f) * anchors[i] + f * anchors[i + 1]).permute(2, 0, 1)


def attention_overlays(images: torch.Tensor, heat: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Each image beside its rollout heat map: ``(B, 3, H, 2W)`` in [0, 1]."""
    b, c, h, w = images.shape
    img = images.float()
    lo, hi = img.amin(dim=(1, 2, 3), keepdim=True), img.amax(dim=(1, 2, 3), keepdim=True)
    img = ((img - lo) / (hi - lo + 1e-8)).expand(b, 3, h, w) if c == 1 else (img - lo) / (hi - lo + 1e-8)
    heat = heat.reshape(b, 1, *grid)
    heat = torch.nn.functional.interpolate(heat, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    heat = heat / heat.amax(dim=(1, 2), keepdim=True).clamp_min(1e-8)
    colored = torch.stack([_heat_colors(x.cpu()) for x in heat]).to(img.device)
    return torch.cat([img, 0.45 * img + 0.55 * colored], dim=3)


class AttentionMapLogger(Callback):
    """After each validation, pictures of where [CLS] looks: attention rollout on the first
    ``num_images`` validation images, logged to W&B (``val/attention``) and saved as a PNG
    under ``<run>/media/``."""

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1) -> None:
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self._images: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and hasattr(pl_module, "example_images"):
            self._images = pl_module.example_images(batch)[: self.num_images].detach()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._images is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        net = getattr(pl_module, "eval_net", None)
        if net is None or not hasattr(net, "attention_maps"):
            return
        images = self._images
        maps = net.attention_maps(images)
        pe = net.patch_embed
        grid = (images.shape[-2] // pe.patch_size[0], images.shape[-1] // pe.patch_size[1])
        pictures = attention_overlays(images, attention_rollout(maps, pe.num_prefix_tokens), grid).cpu()
        self._images = None
        step = trainer.global_step
        if trainer.log_dir:
            out = Path(trainer.log_dir) / "media"
            out.mkdir(parents=True, exist_ok=True)
            save_image(pictures, out / f"attention_step{step:07d}.png", nrow=1)
        logger = trainer.logger
        if logger is not None and hasattr(logger, "log_image"):
            arrays = [p.permute(1, 2, 0).numpy() for p in pictures]
            logger.log_image(key="val/attention", images=arrays, step=step, caption=[f"image {i}" for i in range(len(arrays))])


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results as JSON lines (one per input, in order) to ``path``
    (default ``<run>/predictions.jsonl``), atomically. Rows come from the task's
    ``prediction_rows(output)``; an ``id`` column comes from the DataModule's ``predict_ids``."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.path = path
        self.written: Path | None = None

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any) -> None:
        if not hasattr(pl_module, "prediction_rows"):  # the task writes its own (QA: {id: answer})
            return
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        rows: list[dict[str, Any]] = []
        for out in outputs:
            rows += pl_module.prediction_rows(out)
        ids = getattr(trainer.datamodule, "predict_ids", None) if trainer.datamodule is not None else None
        if ids is not None and len(ids) >= len(rows):  # fewer rows: limit_predict_batches, in order
            rows = [{"id": i, **r} for i, r in zip(ids, rows)]
        path = Path(self.path or Path(trainer.log_dir or ".") / "predictions.jsonl")
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        self.written = write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
        rank_zero_info(f"tfm: wrote {len(rows)} predictions to {path}")


class RunIdentity(Callback):
    """Writes the run folder and its W&B run id into every checkpoint (``checkpoint["tfm_run"]``),
    so a checkpoint carried elsewhere still resumes into the same W&B run."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        wandb_id = None
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                wandb_id = logger.version
        checkpoint["tfm_run"] = {"run_dir": self.run_dir, "wandb_id": wandb_id}


class StopSignals(Callback):
    """Signals that stop training, acted on where every rank can act on them together.

    A signal handler only sets a flag; at the end of the next training batch all ranks agree on
    it (one all-reduce of the signal number) and then, together:

    * Ctrl-C (SIGINT) or SIGTERM: write ``checkpoints/last.ckpt`` at that batch end and stop
      training; the CLI prints the command that resumes and exits with ``128 + signal``. A second
      Ctrl-C stops at once (Python's ``KeyboardInterrupt``).
    * SLURM's requeue signal (USR1, with Lightning's SLURM auto-requeue): Lightning's own handler
      runs there (``hpc_ckpt_<n>.ckpt`` into the run folder, then rank 0 calls ``scontrol requeue``).
      Lightning runs it inside the signal handler, wherever each process happens to be; under DDP
      one rank can then wait in the checkpoint's barrier while another waits in a gradient
      all-reduce, and the job hangs until its time runs out (seen with 2 nodes). Under SLURM
      auto-requeue, SIGTERM stays Lightning's (Slurm sends it when it requeues the job).
    """

    def __init__(self, checkpoint_dir: str) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.signum: int | None = None  # received, not yet acted on
        self.stopped_by: int | None = None  # the INT / TERM signal that stopped training
        self.checkpoint: Path | None = None
        self._requeue_signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _install(self, sig: int) -> None:
        self._previous[sig] = signal.signal(sig, self._flag)

    def _flag(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        env = getattr(trainer.strategy, "cluster_environment", None)
        if stage == "fit" and isinstance(env, SLURMEnvironment) and env.auto_requeue:
            self._requeue_signal = env.requeue_signal or signal.SIGUSR1
            # installed before the Trainer registers its own handlers, which it then leaves alone
            self._install(self._requeue_signal)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        # after the Trainer registered its SIGTERM handler (which would raise at the next batch
        # start, before a checkpoint): these replace it until teardown restores it
        self._install(signal.SIGINT)
        if self._requeue_signal is None:
            self._install(signal.SIGTERM)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._previous:
            return
        signum = self.signum or 0
        if trainer.world_size > 1:
            signum = int(trainer.strategy.reduce(torch.tensor(float(signum)), reduce_op="max").item())
        if not signum:
            return
        self.signum = None
        if signum == self._requeue_signal:
            # Lightning's own requeue (HPC checkpoint, scontrol requeue), a private called here at a batch end rather
            # than inside the signal handler, as Lightning PR #21407 (issue #21406) proposes; pinned by
            # tests/test_slurm.py's requeue test
            trainer._signal_connector._slurm_sigusr_handler_fn(signum, None)
        else:
            self.checkpoint = self.checkpoint_dir / "last.ckpt"
            trainer.save_checkpoint(self.checkpoint)
            # Lightning's ModelCheckpoint would write last.ckpt again as training ends (on_train_end,
            # when it has saved no last.ckpt itself in this run) or at the end of the cut epoch,
            # then counting the epoch as done: a resume would skip the rest of it. It skips a step
            # it has saved and a last.ckpt it has written (privates it keeps for this, no public way and no Lightning
            # issue yet; pinned by tests/test_resume.py's Ctrl-C test, which stops mid-epoch)
            for cb in trainer.checkpoint_callbacks:
                cb._last_global_step_saved = trainer.global_step
                cb._last_checkpoint_saved = str(self.checkpoint)
            self.stopped_by = signum
        trainer.should_stop = True  # Slurm ends the job; stop cleanly if it has not yet

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class MetricsFile(Callback):
    """Appends each validation's and test's metrics as one JSON line to ``<run>/metrics.jsonl``
    (rank 0): the run's metrics readable without W&B (the serverless sweep reads them back)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._before: dict[str, Any] = {}

    def _start(self, trainer: pl.Trainer) -> None:
        self._before = dict(trainer.callback_metrics)

    def _write(self, trainer: pl.Trainer, prefix: str) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        row: dict[str, Any] = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        for k, v in trainer.callback_metrics.items():
            # only what this loop logged: Lightning keeps an earlier value of a metric not logged
            # this time (e.g. val/bleu between the epochs that decode) as the very same object
            if k.startswith(prefix) and self._before.get(k) is not v:
                row[k] = float(v)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "val/")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "test/")


def default_callbacks(sub: str, run_dir: Path, monitor: tuple[str, str], given: list[Callback], media_images: int,
                      save_every_n_steps: int | None, progress_bar: bool, log_every_n_steps: int | None) -> list[Callback]:
    """The callbacks of every tfm command, after the ones the config gives (``given``): checkpoints (unless the config
    has its own), progress, the run's identity and metrics file, and per command stop signals and throughput (fit),
    attention maps (fit, validate) and the predictions file (predict)."""
    callbacks = list(given)
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        metric, mode = monitor
        # the best checkpoint by the task's validation metric and last.ckpt after every epoch;
        # with --run.save_every_n_steps also step-N.ckpt and last.ckpt every N steps
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-{epoch}-{step}", monitor=metric,
                                         mode=mode, save_top_k=1, save_last=True, enable_version_counter=False))
        if save_every_n_steps:
            callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step-{step}", save_top_k=1,
                                             every_n_train_steps=save_every_n_steps, save_last=True,
                                             enable_version_counter=False))
    if progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(RichProgressBar() if sys.stdout.isatty() else TQDMProgressBar(refresh_rate=50))
    callbacks += [RunIdentity(str(run_dir)), MetricsFile(str(run_dir / "metrics.jsonl"))]
    if sub == "fit":
        callbacks += [StopSignals(str(run_dir / "checkpoints")), ThroughputMonitor(log_every_n_steps=log_every_n_steps or 50)]
    if media_images and sub in ("fit", "validate"):
        callbacks.append(AttentionMapLogger(media_images))
    if sub == "predict":
        callbacks.append(PredictionWriter(str(run_dir / "predictions.jsonl")))
    return callbacks
