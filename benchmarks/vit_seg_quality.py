"""Mean IoU of the generated-scene segmentation recipe on 1,000 held-out test scenes, and its time.

    python benchmarks/vit_seg_quality.py [--quick] [--minutes 20] [--steps auto|N] [--root runs] [--picture PNG]

Runs ``python -m tfm fit --config configs/vit_tiny_seg_scenes.yaml`` within a training budget of
``--minutes`` (``--trainer.max_time``, validations included; ``train_time_s`` is the whole fit
command), then the test of the best checkpoint on the 1,000 test scenes (generated from the Fashion-MNIST test images, never seen in
training), then ``predict`` on a few test scenes, which saves overlay pictures (image | predicted
| true mask) under the predict run's ``predictions/overlays/``.

The cosine schedule must end when the budget does: ``--steps auto`` (the default) first trains 40
steps of the same recipe in a scratch folder to measure this machine's steps/s (the "probe", not
part of the budget) and sets ``--trainer.max_steps`` to fill 92% of the budget (the rest covers
validations); ``--steps N`` sets it directly. Reports test mIoU (11 classes, background
included), pixel accuracy and the times. ``--quick`` trains a few steps only (a smoke test of the
benchmark, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
os.environ.setdefault("WANDB_MODE", "offline")

from benchmarks.common import add_runtime_args, cli_runtime_overrides, emit  # noqa: E402
from tfm.cli import main as tfm_main  # noqa: E402

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def max_time(minutes: float) -> str:
    total = int(minutes * 60)
    return f"00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def probe_steps_per_s(config: str, extra: list[str], steps: int = 40) -> float:
    """Training steps per second of ``config`` here and now (data, forward, backward, AdamW)."""
    scratch = tempfile.mkdtemp(prefix="tfm-probe-")
    try:
        cli = tfm_main(["fit", "--config", config, f"--run.root={scratch}", "--run.wandb=false", "--run.test_after_fit=false",
                        "--run.media_images=0", f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0",
                        f"--trainer.log_every_n_steps={steps // 3}", *QUIET, *extra])
        images_per_s = float(cli.trainer.callback_metrics["perf/samples_per_s"])
        return images_per_s / cli.datamodule.batch_size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_quality(name: str, config: str, metric: str, target: float, default_minutes: float, doc: str | None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--minutes", type=float, default=default_minutes, help="training budget (--trainer.max_time)")
    ap.add_argument("--steps", default="auto", help="training steps, or 'auto': measured to fill the budget")
    ap.add_argument("--root", default=None, help="run folder root (default: a temporary folder)")
    ap.add_argument("--picture", default=None, help="also copy the first test scene's overlay PNG here (the README's picture)")
    add_runtime_args(ap, cli=True)
    args, extra = ap.parse_known_args()
    extra = cli_runtime_overrides(args) + extra  # --device / --precision as the CLI's own options
    root = args.root or tempfile.mkdtemp(prefix="tfm-bench-")
    overrides = [f"--trainer.max_time={max_time(args.minutes)}"]
    probe_s, steps_per_s = None, None
    if args.quick:
        overrides += ["--trainer.max_steps=10", "--trainer.val_check_interval=5", "--trainer.limit_val_batches=2",
                      "--trainer.limit_test_batches=2"]
    elif args.steps == "auto":
        t = time.perf_counter()
        steps_per_s = probe_steps_per_s(config, extra)
        probe_s = time.perf_counter() - t
        steps = int(0.92 * args.minutes * 60 * steps_per_s)
        overrides += [f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={max(10, min(1000, steps // 6))}"]
    else:
        overrides.append(f"--trainer.max_steps={int(args.steps)}")
    t0 = time.perf_counter()
    cli = tfm_main(["fit", "--config", config, f"--run.root={root}", f"--run.name={name}", "--run.test_after_fit=false", *QUIET,
                    *overrides, *extra])
    train_s = time.perf_counter() - t0  # training with its validations, from start-up to the last checkpoint
    eval_args = ["--config", config, f"--run.root={root}", f"--run.name={name}", "--ckpt_path=best", *QUIET,
                 *[a for a in extra if not a.startswith("--trainer.")]]
    t1 = time.perf_counter()
    tcli = tfm_main(["test", *eval_args, *[a for a in overrides if a.startswith("--trainer.limit_test")]])
    test_s = time.perf_counter() - t1
    metrics = {k: float(v) for k, v in tcli.trainer.callback_metrics.items() if k.startswith("test/")}
    # a few overlay pictures of test scenes from the best checkpoint (for the README)
    pcli = tfm_main(["predict", *eval_args, "--trainer.limit_predict_batches=1", "--data.eval_batch_size=8"])
    overlays = Path(pcli.trainer.default_root_dir) / "predictions" / "overlays"
    if args.picture:
        Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(overlays / "0.png", args.picture)
    emit(name, metric.removeprefix("test/"), metrics[metric], None, None,
         {"config": config, "overrides": overrides + extra, "test_scenes": 1000, "quick": args.quick},
         test_metrics={k: round(v, 4) for k, v in metrics.items()}, train_time_s=round(train_s, 1), test_time_s=round(test_s, 1),
         steps=cli.trainer.global_step,
         probe_steps_per_s=None if steps_per_s is None else round(steps_per_s, 3), probe_time_s=None if probe_s is None else round(probe_s, 1),
         run_dir=cli.trainer.default_root_dir, overlays=str(overlays),
         target={metric.removeprefix("test/"): target, "train_time_s": int(default_minutes * 60)})
    return metrics


if __name__ == "__main__":
    run_quality("vit_seg_quality", "configs/vit_tiny_seg_scenes.yaml", "test/miou", 0.70, 20.0, __doc__)
