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


def test_the_gpu_only_choices_without_a_gpu():
    from tfm.errors import UserError
    from tfm.hardware import auto_num_workers, check_precision, default_precision, uses_cuda

    assert default_precision() == "32-true" and not uses_cuda("auto") and not uses_cuda("cpu") and uses_cuda("gpu")
    # bf16 on a GPU without native bf16 (a V100, a T4): one line naming the alternative
    with pytest.raises(UserError) as e:
        check_precision("bf16-mixed", on_cuda=True, bf16_native=False, device_name="Tesla V100-SXM2-32GB")
    assert str(e.value) == ("--trainer.precision=bf16-mixed: Tesla V100-SXM2-32GB has no native bfloat16 (it needs compute "
                            "capability 8.0, Ampere or later): use --trainer.precision=16-mixed (fp16 with a gradient scaler) or 32-true")
    for ok in [("bf16-mixed", True, True), ("16-mixed", True, False), ("bf16-mixed", False, False), ("32-true", True, False)]:
        check_precision(ok[0], on_cuda=ok[1], bf16_native=ok[2])
    # workers: none on a CPU run; on a GPU one per CPU of its share less one, at most 8
    assert auto_num_workers(False, cpus=64) == 0
    assert [auto_num_workers(True, d, cpus=16) for d in (1, 2, 4, 8)] == [8, 7, 3, 1]
    assert auto_num_workers(True, 1, cpus=1) == 1


def test_cpu_run_loads_in_process_without_pinned_memory(run_root):
    cli = one_step(run_root)
    loader = cli.trainer.train_dataloader
    assert cli.datamodule.num_workers is None and loader.num_workers == 0 and loader.pin_memory is False
    cli = one_step(run_root, "--data.num_workers=1")
    assert cli.trainer.train_dataloader.num_workers == 1 and cli.trainer.train_dataloader.persistent_workers


def test_gpu_asked_for_on_a_machine_without_one(run_root, capsys):
    with pytest.raises(SystemExit) as e:
        one_step(run_root, "--trainer.accelerator=gpu")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tfm: error: --trainer.accelerator=gpu: no CUDA GPU is visible on this machine")
    assert err[-1].endswith("use --trainer.accelerator=cpu or auto")
