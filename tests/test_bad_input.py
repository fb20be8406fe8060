"""Mistakes and faults as a new user makes them, through the CLI, one test per class (issue 15):
each ends with exit status 2, one ``tfm: error:`` line as the last line of stderr, no traceback,
and nothing created or changed under the run root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, TINY_VIT, make_image_folder, settled_snapshot, snapshot, write_mask_folder

from tfm.__main__ import main

QUIET = ["--run.wandb=false", "--run.media_images=0", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SMALL = [*TINY_VIT, "--data.batch_size=16", "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--run.test_after_fit=false"]


def refused(capsys, root: Path, *args: str, config: str = "configs/vit_tiny_fashion.yaml", sub: str = "fit") -> str:
    """Run ``tfm <sub>`` as a user would; it must stop with one line and leave the run root as it was."""
    before = snapshot(root) if root.exists() else None
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([sub, "--config", config, f"--run.root={root}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err[-5:]
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("tfm: error: ") and len(err[-1]) < 600, err[-1]
    if before is None:
        assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()], sorted(root.rglob("*"))
    else:
        assert snapshot(root) == before
    return err[-1].removeprefix("tfm: error: ")


def test_a_runs_own_config_leads_back_to_the_run(capsys, tmp_path):
    root = tmp_path / "runs"
    main(["fit", "--config", "configs/vit_tiny_fashion.yaml", f"--run.root={root}", *QUIET, *SMALL])
    (run,) = root.glob("vit_tiny_fashion/*")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["run"]["root"], saved["run"]["name"], saved["run"]["version"]) == (str(root), "vit_tiny_fashion", run.name)
    settled_snapshot(root)
    config = str(run / "config.yaml")
    # training it again under the same name would mix two runs in one folder
    assert refused(capsys, root, config=config) == (
        f"run folder {run} already exists: resume it with --ckpt_path last, or choose another --run.version")
    # a named run with nothing to resume is not silently started afresh
    assert refused(capsys, root, "--run.version=nope", "--ckpt_path=last", *QUIET, *SMALL) == (
        f"--ckpt_path last: run {root / 'vit_tiny_fashion' / 'nope'} does not exist, so there is nothing to resume: "
        "start a new run without --ckpt_path and --run.version")
    # predict (twice) and test from the run's config: beside the run, from its best checkpoint, never colliding
    first = main(["predict", "--config", config, "--trainer.limit_predict_batches=1"])
    second = main(["predict", "--config", config, "--trainer.limit_predict_batches=1"])
    tested = main(["test", "--config", config, "--trainer.limit_test_batches=1"])
    folders = [Path(c.trainer.default_root_dir) for c in (first, second, tested)]
    assert [f.parent for f in folders] == [run / "predict", run / "predict", run / "test"] and folders[0] != folders[1]
    assert all((f / "predictions.jsonl").is_file() for f in folders[:2])
    assert Path(first.config["predict"].ckpt_path).parent == run / "checkpoints"
    assert sorted(p.name for p in root.glob("vit_tiny_fashion/*")) == [run.name]  # no new run beside it


@pytest.mark.parametrize("args, message", [
    (["--data.batch_size=0"], "--data.batch_size=0: must be an integer > 0"),
    (["--data.batch_size=-4"], "--data.batch_size=-4: must be an integer > 0"),
    (["--model.lr=-1e-3"], "--model.lr=-0.001: must be a number > 0 (lr=0 trains nothing)"),
    (["--model.lr=0"], "--model.lr=0.0: must be a number > 0 (lr=0 trains nothing)"),
    (["--trainer.max_steps=-5"], "--trainer.max_steps=-5: must be a positive integer or -1 (-1 for no limit)"),
    (["--trainer.max_steps=0"], "--trainer.max_steps=0: must be a positive integer or -1 (trains nothing: test an untrained model "
                                "with `tfm test` instead)"),
    (["--data.num_workers=-1"], "--data.num_workers=-1: must be an integer >= 0 (0 loads in the training process)"),
    (["--model.label_smoothing=2"], "--model.label_smoothing=2.0: must be a number in [0, 1)"),
    (["--data.val_fraction=1.5"], "--data.val_fraction=1.5: must be a number in [0, 1)"),
    (["--trainer.accumulate_grad_batches=0"], "--trainer.accumulate_grad_batches=0: must be an integer > 0"),
    (["--trainer.accelerator=gpu"], "--trainer.accelerator=gpu: no CUDA GPU is visible on this machine (CUDA_VISIBLE_DEVICES=unset): "
                                    "use --trainer.accelerator=cpu or auto"),
])
def test_values_out_of_range_before_anything_is_written(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert refused(capsys, tmp_path / "runs", *QUIET, *SMALL, *args) == message


def test_a_run_root_that_cannot_be_written_and_a_check_that_needs_the_data(capsys, tmp_path):
    msg = refused(capsys, tmp_path / "runs", "--run.root=/proc/tfm-runs", *QUIET, *SMALL)
    assert msg.startswith("run folder /proc/tfm-runs/vit_tiny_fashion/") and msg.endswith(
        "cannot be made: /proc is not writable (No such file or directory): pass --run.root=<a writable folder>")
    # found only once the data is loaded, after the run folder (with W&B) was made: it is taken back
    root = tmp_path / "runs"
    msg = refused(capsys, root, *TINY_VIT, "--data.batch_size=512", "--trainer.val_check_interval=1000")
    assert msg == ("--trainer.val_check_interval=1000 is more than the 107 training batches of an epoch of this data: pass "
                   "--trainer.val_check_interval=107 (or fewer, or a fraction such as 0.5), or --trainer.check_val_every_n_epoch=null "
                   "to count the steps across epochs")
    assert not root.exists()


@pytest.mark.parametrize("args, message", [
    (["--model.num_heads=3"], "dim=32 is not divisible by num_heads=3"),
    (["--model.patch_size=5"], "image_size=(28, 28) is not a multiple of patch_size=(5, 5)"),
    (["--model.drop_path_rate=1.5"], "--model.drop_path_rate=1.5: must be a number in [0, 1)"),
    (["--model.stem=foo"], "--model.stem=foo: expected one of 'patch', 'conv'"),
    (["--trainer.precision=17"], "--trainer.precision=17: expected one of 'transformer-engine', 'transformer-engine-float16', "
                                 "'16-true', '16-mixed', 'bf16-true', 'bf16-mixed', '32-true', '64-true', '64', '32', '16', 'bf16'"),
    (["--model.lrr=0.1"], "unknown option model.lrr (valid keys and types: --help, --print_config)"),
])
def test_the_useful_line_is_the_only_line(capsys, tmp_path, args, message):
    assert refused(capsys, tmp_path / "runs", *QUIET, *SMALL, *args) == message


def test_geometry_of_a_dense_config_and_a_broken_yaml(capsys, tmp_path):
    msg = refused(capsys, tmp_path / "runs", *QUIET, "--data.image_size=30", config="configs/vit_tiny_seg_scenes.yaml")
    assert msg == "image_size=(30, 30) is not a multiple of patch_size=(8, 8)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: [1\nmodel: {\n")
    assert refused(capsys, tmp_path / "runs", config=str(bad)) == (
        f"--config {bad} is not valid YAML at line 3, column 6: expected ',' or ']', but got ':'")
    assert refused(capsys, tmp_path / "runs", config=str(tmp_path / "nowhere.yaml")) == (
        f"--config {tmp_path / 'nowhere.yaml'} does not exist (the configs are in configs/; a run's own is <run>/config.yaml)")


def test_files_are_checked_when_they_are_scanned(capsys, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=8)
    (images / "cat" / "notes.png").write_text("not an image")
    args = [*QUIET, *SMALL, f"--data.dataset={images}", "--data.image_size=32", "--model.patch_size=4", "--data.batch_size=4"]
    assert refused(capsys, tmp_path / "runs", *args) == (
        f"{images / 'cat' / 'notes.png'} is not an image PIL can read (UnidentifiedImageError): remove it or replace it with the real image")
    from PIL import Image

    masks = write_mask_folder(tmp_path / "seg", n=8)
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8), mode="L").save(masks / "masks" / "3.png")
    assert refused(capsys, tmp_path / "runs", *QUIET, *TINY_VIT, f"--data.dataset={masks}", config="configs/vit_tiny_seg_scenes.yaml") == (
        f"mask {masks / 'masks' / '3.png'} is 20x20 but its image {masks / 'images' / '3.jpg'} is 32x24: a mask must have its image's size")
    # a truncated JPEG has a good header: it is named when it is decoded (here by predict)
    (images / "cat" / "notes.png").unlink()
    half = tmp_path / "half.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(half, quality=95)
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    with pytest.raises(SystemExit) as e:
        main(["predict", "--config", "configs/vit_tiny_fashion.yaml", f"--run.root={tmp_path / 'runs2'}", *args, f"--data.predict_path={half}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith(f"tfm: error: image {half} cannot be decoded (image file is truncated"), err[-1]
    assert err[-1].endswith("it is truncated or corrupted; remove it or replace it")


def test_a_dense_config_on_a_small_folder_says_which_override(capsys, tmp_path):
    masks = write_mask_folder(tmp_path / "seg", n=12)
    msg = refused(capsys, tmp_path / "runs", *QUIET, *TINY_VIT, f"--data.dataset={masks}", "--data.image_size=32",
                  config="configs/vit_tiny_seg_scenes.yaml")
    assert msg.startswith("--trainer.val_check_interval=500 is more than the ") and "pass --trainer.val_check_interval=" in msg


def _sweep_file(tmp_path: Path, **changes) -> Path:
    sweep = {"method": "grid", "metric": {"name": "val/acc1", "goal": "maximize"}, "parameters": {"model.lr": {"values": [0.001]}},
             "command": ["${env}", "${interpreter}", "-m", "tfm", "fit", "--config", "configs/vit_tiny_fashion.yaml", "${args}"], **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_sweep_mistakes_name_the_parameter_and_the_metric(capsys, tmp_path):
    root = tmp_path / "runs"

    def sweep_refused(path: Path, *extra: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["sweep", str(path), "--root", str(root), "--", *TINY_VIT, "--trainer.max_steps=1", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and "Traceback" not in "\n".join(err) and err[-1].startswith("tfm: error: ")
        assert not root.exists()  # no trial ran
        return err[-1].removeprefix("tfm: error: ")

    path = _sweep_file(tmp_path, parameters={"model.lr": {"values": []}})
    assert sweep_refused(path) == f"{path}: parameter model.lr has an empty values list: give it at least one value"
    path = _sweep_file(tmp_path, parameters={})
    assert sweep_refused(path).startswith(f"{path}: parameters is empty: name at least one CLI key to sweep")
    path = _sweep_file(tmp_path, parameters={"model.lr": {"min": 0.1}})
    assert sweep_refused(path) == (f"{path}: parameter model.lr is {{'min': 0.1}}, not a W&B parameter spec: give value, values, "
                                   "or min and max (with a distribution)")
    path = _sweep_file(tmp_path, parameters={"model.lr": {"values": [0.001]}, "data.batch_size": {"values": [0]}})
    assert sweep_refused(path).startswith("sweep parameter 'data.batch_size' is not accepted by `tfm fit --config "
                                          "configs/vit_tiny_fashion.yaml`: --data.batch_size=0: must be an integer > 0")
    path = _sweep_file(tmp_path, metric={"name": "val/accuracy", "goal": "maximize"})
    assert sweep_refused(path, "--data.batch_size=512") == (
        "sweep metric 'val/accuracy' is not logged by `tfm fit --config configs/vit_tiny_fashion.yaml` (its validation logs "
        "val/acc1, val/acc5, val/loss): set metric.name to one of them")


def test_sweep_errors_come_without_third_party_warnings(tmp_path):
    path = _sweep_file(tmp_path, parameters={"model.lr": {"values": []}})
    out = subprocess.run([sys.executable, "-m", "tfm", "sweep", str(path), "--root", str(tmp_path / "runs")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"tfm: error: {path}: parameter model.lr has an empty values list: give it at least one value"]


def test_preparation_processes_out_of_range(capsys, tmp_path):
    from tfm.data.sources import cpu_count

    args = [*QUIET, "--trainer.max_steps=1"]
    msg = refused(capsys, tmp_path / "runs", *args, "--data.num_proc=0", config="configs/bert_tiny.yaml")
    assert msg == "--data.num_proc=0: must be an integer >= 1 (processes preparing the data; unset: one per CPU for large corpora)"
    msg = refused(capsys, tmp_path / "runs", *args, "--data.num_proc=4096", config="configs/translation_small_bible.yaml")
    assert msg == (f"--data.num_proc 4096 is not between 1 and the {cpu_count()} CPUs of this machine: lower it (unset: one process per CPU "
                   "for large corpora)")
