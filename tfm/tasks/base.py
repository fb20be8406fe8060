"""TaskModule: what every tfm task shares (optimizer groups, LR schedules, layer decay, EMA)."""

from __future__ import annotations

import math
import random
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import Metric, MetricCollection

Schedule = Literal["cosine", "linear", "inverse_sqrt", "constant"]


def lr_lambda(schedule: Schedule, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Multiplier of the base LR at optimizer step ``s``: linear warmup from ~0 over
    ``warmup_steps``, then cosine / linear decay to ``min_lr_ratio`` at ``total_steps``,
    inverse square root (fairseq: ``sqrt(warmup / s)``), or constant."""
    total = max(total_steps, 1)

    def f(step: int) -> float:
        s = step + 1  # the first optimizer step already takes a small non-zero LR
        if s <= warmup_steps:
            return s / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "inverse_sqrt":
            return math.sqrt(max(warmup_steps, 1) / s)
        progress = min(1.0, (s - warmup_steps) / max(1, total - warmup_steps))
        if schedule == "cosine":
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)
        raise ValueError(f"schedule={schedule!r}: use cosine, linear, inverse_sqrt or constant")

    return f


def param_groups(
    net: nn.Module, weight_decay: float, layer_decay: float | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms (every 1-d tensor) and the names in
    ``net.no_weight_decay()``; with ``layer_decay``, layer ``i`` of ``L`` gets
    ``layer_decay ** (L - i)`` of the LR (BEiT / timm layer-wise LR decay)."""
    skip = set(net.no_weight_decay()) if hasattr(net, "no_weight_decay") else set()
    use_layers = layer_decay is not None and layer_decay != 1.0
    if use_layers and not hasattr(net, "layer_id"):
        raise ValueError(f"layer_decay needs a model with layer_id(); {type(net).__name__} has none")
    groups: dict[tuple[bool, int], dict[str, Any]] = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name in skip or name.endswith(".bias")
        layer = net.layer_id(name) if use_layers else 0
        key = (no_decay, layer)
        if key not in groups:
            scale = layer_decay ** (net.num_layers - layer) if use_layers else 1.0
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
        groups[key]["params"].append(p)
    return list(groups.values())


def rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain types and tensors only: Lightning reads checkpoints with weights_only=True
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class _AfterInit(type):
    """Calls ``after_init`` once the outermost ``__init__`` has returned: the base's setup that needs a subclass's
    ``self.net`` (the EMA, the per-stage metrics) runs without any subclass having to remember a call."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        obj.after_init()
        return obj


class TaskModule(pl.LightningModule, metaclass=_AfterInit):
    """Base of every task. Subclasses build ``self.net`` (a ``tfm.nn`` model) in ``__init__`` and may declare
    ``build_metrics``; the base then adds the EMA and ``train_metrics``/``val_metrics``/``test_metrics``.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW weight decay (never on biases, norms, position embeddings, [CLS]).
        betas: AdamW betas (translation uses ``(0.9, 0.98)``).
        eps: AdamW epsilon.
        schedule: LR schedule after warmup.
        warmup_steps: warmup length in optimizer steps, or a fraction (< 1) of all steps.
        min_lr_ratio: the LR at the end of a cosine / linear schedule, as a fraction of ``lr``.
        layer_decay: layer-wise LR decay (e.g. 0.75 for fine-tuning); None for none.
        ema_decay: keep an exponential moving average of the weights (e.g. 0.9998) and evaluate
            with it; None for none.
    """

    #: metric the checkpoint callback watches, and whether higher is better
    monitor: tuple[str, str] = ("val/loss", "min")

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        schedule: Schedule = "cosine",
        warmup_steps: int | float = 0,
        min_lr_ratio: float = 0.0,
        layer_decay: float | None = None,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = tuple(betas)
        self.eps = eps
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.layer_decay = layer_decay
        self.ema_decay = ema_decay
        self.ema: AveragedModel | None = None

    # --- model ------------------------------------------------------------------------------------
    net: nn.Module

    def build_metrics(self, stage: str) -> MetricCollection | Metric | None:
        """The metrics of one stage (``train``, ``val``, ``test``): one object per stage, so no state leaks between
        them (lightning-hydra-template); None: the task keeps its own."""
        return None

    def metrics(self, stage: str) -> MetricCollection | Metric:
        return getattr(self, f"{stage}_metrics")

    def after_init(self) -> None:
        for stage in ("train", "val", "test"):
            if (metrics := self.build_metrics(stage)) is not None:
                setattr(self, f"{stage}_metrics", metrics)
        if self.ema_decay:
            self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)

    @property
    def eval_net(self) -> nn.Module:
        """The weights to evaluate: the EMA when there is one (and it has seen a step)."""
        if self.ema is not None and int(self.ema.n_averaged) > 0:
            return self.ema.module
        return self.net

    def gather_rows(self, rows: list[tuple]) -> list[tuple]:
        """Per-example rows ``(index, ...)`` of every rank, each example once (a rank's shard is padded with
        repeats), in the split's order: every rank then computes the same corpus-level scores."""
        if self.trainer.world_size > 1:
            shards: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shards, rows)
            rows = [r for shard in shards for r in shard]
        unique = {r[0]: r for r in rows}
        return [unique[i] for i in sorted(unique)]

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        groups = param_groups(self.net, self.weight_decay, self.layer_decay)
        for g in groups:
            g["lr"] = self.lr * g["lr_scale"]
        fused = all(p.device.type in ("cuda", "cpu") for g in groups for p in g["params"])
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps, fused=fused)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.warmup_steps * total) if isinstance(self.warmup_steps, float) and self.warmup_steps < 1 else int(self.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.schedule, warmup, total, self.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """The Trainer's clipping under every precision, with the fused optimizer kept.

        Lightning's mixed-precision plugin refuses to clip for an optimizer that unscales inside its
        ``step`` (fused AdamW), although clipping is sound there: bf16 has no scaler at all, and
        under fp16 the gradients only need unscaling first. That is what this does (PyTorch's AMP
        recipe: ``scaler.unscale_``, clip, ``scaler.step``): the fused step then sees gradients
        marked as unscaled and still skips the update when they overflowed. Every other precision
        plugin (32-true, FSDP, ...) clips its own way.
        """
        if not gradient_clip_val:
            return
        plugin = self.trainer.precision_plugin
        if isinstance(plugin, MixedPrecision) and getattr(optimizer, "_step_supports_amp_scaling", False):
            if plugin.scaler is not None:
                plugin.scaler.unscale_(optimizer)
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, GradClipAlgorithmType(gradient_clip_algorithm or "norm"))
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # --- exact resume -------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The RNG states go with the weights: dropout and stochastic depth after a resume draw
        what they would have drawn (data order and augmentation have their own seeds)."""
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        # restored as late as possible: whatever ran since the checkpoint was loaded (sanity
        # check, callbacks' start hooks) must not shift the stream dropout will draw from
        states, self._rng_to_restore = getattr(self, "_rng_to_restore", None), None
        if states is not None:
            set_rng_states(states)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.net)
