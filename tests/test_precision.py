"""Mixed precision as a GPU runs it, forced on this CPU: gradient clipping under every precision
with the fused optimizer kept, and the GPU-only defaults (precision, data loading, TF32)."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_VIT
from tfm.cli import main

CLIP = 1e-3  # far below the first step's gradient norm: clipping always acts
FP16_ON_CPU = ["--trainer.precision=null", "--trainer.plugins+=lightning.pytorch.plugins.precision.MixedPrecision",
               "--trainer.plugins.precision=16-mixed", "--trainer.plugins.device=cpu"]


def one_step(run_root, *args):
    return main(["fit", "--config", "configs/vit_tiny_fashion.yaml", f"--run.root={run_root}", "--run.wandb=false",
                 "--run.test_after_fit=false", "--run.media_images=0", *TINY_VIT, "--data.batch_size=16",
                 "--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.enable_model_summary=false",
                 "--trainer.enable_progress_bar=false", *args])


def grads(cli) -> list[torch.Tensor]:
    return [p.grad for p in cli.model.net.parameters() if p.grad is not None]


# Lightning turns `--trainer.precision=16-mixed` on a CPU into bf16 ("AMP with fp16 is not supported
# on CPU"), but torch runs fp16 autocast and a GradScaler on CPUs: the test asks for them directly
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_clipping_by_norm_under_every_precision_keeps_fused_adamw(run_root, precision):
    args = FP16_ON_CPU if precision == "16-mixed" else [f"--trainer.precision={precision}"]
    cli = one_step(run_root, *args, f"--trainer.gradient_clip_val={CLIP}")
    assert cli.trainer.global_step == 1 and cli.trainer.precision == precision
    assert cli.trainer.optimizers[0].defaults["fused"] is True
    # the gradients the step used: clipped to the norm asked for, measured unscaled (clipping the
    # fp16-scaled gradients would leave them ~65536x smaller once unscaled)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads(cli)]))
    assert norm.item() == pytest.approx(CLIP, rel=1e-4)
    if precision == "16-mixed":
        scaler = cli.trainer.precision_plugin.scaler
        assert scaler is not None and scaler.get_scale() == 2.0**16  # finite gradients: the step was not skipped


def test_clipping_by_value_under_fp16(run_root):
    cli = one_step(run_root, *FP16_ON_CPU, f"--trainer.gradient_clip_val={CLIP}", "--trainer.gradient_clip_algorithm=value")
    assert max(g.abs().max().item() for g in grads(cli)) == pytest.approx(CLIP, rel=1e-6)
