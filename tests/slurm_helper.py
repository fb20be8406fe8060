"""A callback for the Slurm tests: each rank writes where it ran and the metrics it ended with."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class RankMetrics(Callback):
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        info = {"rank": trainer.global_rank, "world_size": trainer.world_size, "node": os.environ.get("SLURMD_NODENAME"),
                "metrics": metrics}
        Path(trainer.default_root_dir, f"rank-{trainer.global_rank}.json").write_text(json.dumps(info))
