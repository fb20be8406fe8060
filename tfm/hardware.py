"""What a run picks from the hardware it lands on: the default precision, TF32 matmuls, DataLoader
workers and pinned memory, and one clear line where a precision cannot run there.

Every GPU-only choice of tfm lives here, as small functions of explicit inputs, so that the CPU
tests can check each branch without a GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .errors import UserError

#: workers per device at most: more rarely help a tfm loader and each holds a copy of the dataset state
MAX_AUTO_WORKERS = 8


def cuda_bf16_native() -> bool:
    """True when the GPU computes in bfloat16 natively (Ampere, compute capability 8.0, and later);
    ``torch.cuda.is_bf16_supported()`` also says yes where it is only emulated (and slow)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def default_precision() -> str:
    """bf16 mixed precision on GPUs that compute in bf16, fp16 mixed precision (with a gradient
    scaler) on older GPUs, fp32 elsewhere (bf16 on a CPU is very slow)."""
    if torch.cuda.is_available():
        return "bf16-mixed" if cuda_bf16_native() else "16-mixed"
    return "32-true"


def uses_cuda(accelerator: Any) -> bool:
    """Whether ``--trainer.accelerator`` puts the run on a CUDA GPU (``auto`` does when one is visible)."""
    name = (accelerator if isinstance(accelerator, str) or accelerator is None else type(accelerator).__name__) or "auto"
    name = name.lower()
    return name == "gpu" or "cuda" in name or (name == "auto" and torch.cuda.is_available())


def check_accelerator(accelerator: Any, cuda_available: bool | None = None) -> None:
    """One line where a GPU is asked for and none is visible (Lightning ends in a traceback there)."""
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if isinstance(accelerator, str) and accelerator.lower() in ("gpu", "cuda") and not cuda_available:
        raise UserError(f"--trainer.accelerator={accelerator}: no CUDA GPU is visible on this machine "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): use --trainer.accelerator=cpu or auto")


def check_precision(precision: Any, on_cuda: bool, bf16_native: bool | None = None, device_name: str = "this GPU") -> None:
    """One line where a precision cannot run on the hardware, naming the one that can."""
    p = str(precision)
    if not on_cuda or not p.startswith("bf16"):
        return
    bf16_native = cuda_bf16_native() if bf16_native is None else bf16_native
    if not bf16_native:
        alternative = "16-mixed" if p == "bf16-mixed" else "16-true"
        raise UserError(f"--trainer.precision={p}: {device_name} has no native bfloat16 (it needs compute capability 8.0, "
                        f"Ampere or later): use --trainer.precision={alternative} (fp16 with a gradient scaler) or 32-true")


def enable_tf32(on_cuda: bool, enabled: bool = True) -> bool:
    """TF32 tensor-core matmuls and convolutions for the fp32 work of a GPU run (all of a
    ``32-true`` run; what autocast leaves in fp32 otherwise), on GPUs that have them (Ampere and
    later), as timm's ``train.py`` and Lightning recommend. Returns whether TF32 is now on."""
    if not on_cuda or not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        return False
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled


def auto_num_workers(on_cuda: bool, local_devices: int = 1, cpus: int | None = None) -> int:
    """DataLoader workers when ``--data.num_workers`` is not given: none on a CPU run (the
    workers would take the cores the model computes on), else one per CPU of this device's share
    less one for the training process, at most :data:`MAX_AUTO_WORKERS`."""
    if not on_cuda:
        return 0
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_WORKERS, cpus // max(local_devices, 1) - 1))
