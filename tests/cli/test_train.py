"""``dextr train`` / ``dextr finetune``: job directories, resume, Ctrl-C, usage errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app
from dextr_cli.commands import _training
from dextr_lib.config import load_config
from dextr_lib.training import TrainingInterrupted, TrainingState

runner = CliRunner()
TINY = ["--arch", "resunet18", "--target-size", "64", "--padding", "4", "--blob-sigma", "4",
        "--no-pretrained", "--batch-size", "2", "--iters-per-epoch", "1", "--opt-type", "adam",
        "--learning-rate", "1e-3", "--seed", "1"]


def _write_data(root: Path, n: int = 2, h: int = 40, w: int = 48) -> Path:
    yy, xx = np.mgrid[:h, :w]
    for d in ("images", "labels", "masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lab = np.zeros((h, w), np.uint8)
        lab[5:25, 4 + i:14] = 1
        lab[(yy - 28) ** 2 + (xx - 34) ** 2 <= 49] = 2
        img = np.full((h, w, 3), 30, np.uint8)
        img[lab == 1] = (200, 50, 50)
        img[lab == 2] = (50, 50, 200)
        Image.fromarray(img).save(root / "images" / f"p{i}.png")
        Image.fromarray(lab, mode="P").save(root / "labels" / f"p{i}_labels.png")
        for k in (1, 2):
            Image.fromarray(((lab == k) * 255).astype(np.uint8)).save(root / "masks" / f"p{i}_mask{k - 1}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_data(tmp_path_factory.mktemp("data"))


def _label_args(data: Path):
    return ["--dataset", "custom_label", "--image-pat", str(data / "images/*.png"),
            "--target-pat", str(data / "labels/*.png"), "--val-image-pat", str(data / "images/p0.png"),
            "--val-target-pat", str(data / "labels/*.png")]


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory, data):
    jobs = tmp_path_factory.mktemp("jobs")
    r = runner.invoke(app, ["train", "j", "--jobs-dir", str(jobs), *_label_args(data), *TINY,
                            "--num-epochs", "2", "--val-every-n-epochs", "1"])
    assert r.exit_code == 0, r.output
    return jobs / "j", r.output


def test_train_writes_a_complete_job(trained_job):
    job, output = trained_job
    assert "Epoch 2/2" in output and "best val mIoU" in output
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["val_miou"] <= 1 and r["train_loss"] > 0 and r["lr"] > 0 for r in rows)
    cfg = load_config(job / "config.toml").train
    assert (cfg.arch, cfg.target_size, cfg.opt_type, cfg.seed, cfg.pretrained) == ("resunet18", 64, "adam", 1, False)
    log = (job / "log.txt").read_text()
    assert "Epoch 1/2" in log and "Warning: 1 targets match no image" in log
    best = dextr_lib.DextrModel.load(job / "checkpoints" / "best.pt", map_location="cpu")
    assert best.arch == "resunet18" and best.preprocess.target_size == 64
    ckpt = dextr_lib.checkpoint.read_checkpoint(job / "checkpoints" / "last.pt")
    assert ckpt["training"]["state"]["iteration"] == 2 and "optimizer" in ckpt["training"]["state"]


def test_existing_job_is_refused(trained_job, data):
    job, _ = trained_job
    r = runner.invoke(app, ["train", "j", "--jobs-dir", str(job.parent), *_label_args(data), *TINY])
    assert r.exit_code == 1 and "--resume" in r.output and "--overwrite" in r.output


def test_ctrl_c_saves_last_prints_the_resume_command_and_resume_continues(tmp_path, data, monkeypatch):
    def interrupted(model, *a, **k):
        raise TrainingInterrupted(TrainingState(iteration=0))

    monkeypatch.setattr(_training, "training_loop", interrupted)
    r = runner.invoke(app, ["train", "c", "--jobs-dir", str(tmp_path), *_label_args(data), *TINY,
                            "--num-epochs", "1", "--val-every-n-epochs", "0"])
    assert r.exit_code == 130
    assert f"dextr train c --resume --jobs-dir {tmp_path}" in " ".join(r.output.split())
    ckpt = dextr_lib.checkpoint.read_checkpoint(tmp_path / "c" / "checkpoints" / "last.pt")
    assert ckpt["training"]["state"]["iteration"] == 0
    monkeypatch.undo()
    r = runner.invoke(app, ["train", "c", "--jobs-dir", str(tmp_path), "--resume", "--learning-rate", "0.5"])
    assert r.exit_code == 2 and "--learning-rate" in r.output
    r = runner.invoke(app, ["train", "c", "--jobs-dir", str(tmp_path), "--resume", "--val-every-n-epochs", "1"])
    assert r.exit_code == 0, r.output
    assert "Resuming job c at epoch 1" in r.output
    assert load_config(tmp_path / "c" / "config.toml").train.val_every_n_epochs == 1  # kept for later resumes
    rows = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]
    ckpt = dextr_lib.checkpoint.read_checkpoint(tmp_path / "c" / "checkpoints" / "last.pt")
    assert ckpt["training"]["state"]["iteration"] == 1


def test_finetune_on_a_mask_stack_keeps_arch_and_preprocessing(trained_job, data, tmp_path):
    job, _ = trained_job
    r = runner.invoke(app, [
        "finetune", "ft", "--from", str(job / "checkpoints" / "best.pt"), "--jobs-dir", str(tmp_path),
        "--dataset", "custom_mask", "--image-pat", str(data / "images/*.png"),
        "--target-pat", str(data / "masks/*.png"), "--batch-size", "2", "--iters-per-epoch", "1",
        "--num-epochs", "1", "--learning-rate", "1e-3", "--opt-type", "adam", "--seed", "2"])
    assert r.exit_code == 0, r.output
    model = dextr_lib.DextrModel.load(tmp_path / "ft" / "checkpoints" / "last.pt", map_location="cpu")
    assert model.arch == "resunet18" and model.preprocess.target_size == 64 and model.preprocess.padding == 4
    assert load_config(tmp_path / "ft" / "config.toml").train.from_model.endswith("best.pt")


def test_finetune_on_voc_mini(trained_job, shared_data, tmp_path):
    job, _ = trained_job
    conf = tmp_path / "dextr.toml"
    conf.write_text(f'[paths]\npascal_voc = "{shared_data / "voc_mini" / "VOC2012"}"\n'
                    '[train]\ndataset = "pascal_voc"\nmin_object_area = 100\n')
    r = runner.invoke(app, [
        "finetune", "voc", "--from", str(job / "checkpoints" / "best.pt"), "--config", str(conf),
        "--jobs-dir", str(tmp_path / "jobs"), "--batch-size", "2", "--iters-per-epoch", "1",
        "--num-epochs", "1", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "validation objects: 3" in r.output


def test_usage_errors(tmp_path, data):
    r = runner.invoke(app, ["finetune", "x", "--jobs-dir", str(tmp_path), *_label_args(data)])
    assert r.exit_code == 2 and "--from" in r.output
    r = runner.invoke(app, ["train", "y", "--jobs-dir", str(tmp_path), *_label_args(data), *TINY,
                            "--opt-type", "rmsprop"])
    assert r.exit_code == 1 and "opt_type" in r.output and "rmsprop" in r.output
    r = runner.invoke(app, ["train", "z", "--jobs-dir", str(tmp_path), "--dataset", "custom_label",
                            "--image-pat", str(data / "images/*.png"), "--target-pat", str(tmp_path / "none*.png")])
    assert r.exit_code == 1 and "none*.png" in r.output
