"""``dextr train`` / ``dextr finetune``: job directories, resume rules, locks and signals (real
processes for the last two), usage errors."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app
from dextr_lib.config import SETTING_FIELDS, TRAIN_PRESETS, TrainSettings, load_config, preset_settings
from dextr_lib.weights.checkpoint import read_checkpoint

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
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


def _epochs(job: Path):
    return [json.loads(line)["epoch"] for line in (job / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory, data):
    jobs = tmp_path_factory.mktemp("jobs")
    r = runner.invoke(app, ["train", "j", "--jobs-dir", str(jobs), *_label_args(data), *TINY,
                            "--num-epochs", "2", "--val-every-n-epochs", "1"])
    assert r.exit_code == 0, r.output
    return jobs / "j", r.output


def test_train_options_are_the_settings_schema():
    from typer.main import get_command

    group = get_command(app)
    for command, exclusive in (("train", "from_model"), ("finetune", "arch")):
        names = {p.name for p in group.commands[command].params}
        assert {k for k, f in SETTING_FIELDS.items() if f.metadata["command"] in (None, command)} <= names
        assert exclusive not in names


def test_train_writes_a_complete_job(trained_job):
    job, output = trained_job
    assert "Epoch 2/2" in output and "best val mIoU" in output
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["val_miou"] <= 1 and r["train_loss"] > 0 and r["lr"] > 0 for r in rows)
    cfg = load_config(job / "config.toml").train
    assert (cfg.arch, cfg.target_size, cfg.opt_type, cfg.seed, cfg.pretrained) == ("resunet18", 64, "adam", 1, False)
    log = (job / "log.txt").read_text()
    assert "Epoch 1/2" in log and "Warning: 1 of 2 targets match none of the 1 images" in log
    assert "Estimated: " in output and " per epoch, " in output  # said before the first epoch ends
    assert output.index("Estimated: ") < output.index("Epoch 1/2: loss")
    with Image.open(job / "curves.png") as im:  # loss, val mIoU and lr per epoch
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    best = dextr_lib.DextrModel.load(job / "checkpoints" / "best.pt", map_location="cpu")
    assert best.arch == "resunet18" and best.preprocess.target_size == 64
    ckpt = read_checkpoint(job / "checkpoints" / "last.pt")
    assert ckpt["training"]["state"]["iteration"] == 2 and "optimizer" in ckpt["training"]["state"]


def test_existing_job_is_refused(trained_job, data):
    job, _ = trained_job
    r = runner.invoke(app, ["train", "j", "--jobs-dir", str(job.parent), *_label_args(data), *TINY])
    assert r.exit_code == 1 and "--resume" in r.output and "--overwrite" in r.output


def test_resume_accepts_the_same_command_line_and_names_each_changed_value(tmp_path, data, monkeypatch):
    monkeypatch.chdir(data)
    args = ["train", "r", "--jobs-dir", str(tmp_path), "--dataset", "custom_label", "--image-pat", "images/*.png",
            "--target-pat", "labels/*.png", *TINY, "--num-epochs", "1"]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, [*args, "--resume", "--learning-rate", "0.5", "--seed", "7"])
    assert r.exit_code == 1
    out = " ".join(r.output.split())
    assert "--learning-rate (job: 0.001, given: 0.5)" in out and "--seed (job: 1, given: 7)" in out
    r = runner.invoke(app, [*args, "--resume", "--num-epochs", "2"])
    assert r.exit_code == 0, r.output
    assert "Resuming job r after epoch 1" in r.output and "changed: num_epochs 1 -> 2" in r.output
    assert _epochs(tmp_path / "r") == [1, 2]
    assert load_config(tmp_path / "r" / "config.toml").train.num_epochs == 2  # kept for later resumes
    assert "in all" in r.output  # the resumed part's time and the total


def test_finetune_records_the_model_it_trains_and_validates_it_first(trained_job, data, tmp_path):
    job, _ = trained_job
    r = runner.invoke(app, [
        "finetune", "ft", "--from", str(job / "checkpoints" / "best.pt"), "--jobs-dir", str(tmp_path),
        "--dataset", "custom_mask", "--image-pat", str(data / "images/*.png"),
        "--target-pat", str(data / "masks/*.png"), "--val-image-pat", str(data / "images/p0.png"),
        "--val-target-pat", str(data / "masks/*.png"), "--batch-size", "2", "--iters-per-epoch", "1",
        "--num-epochs", "1", "--learning-rate", "1e-3", "--opt-type", "adam", "--seed", "2"])
    assert r.exit_code == 0, r.output
    assert "Epoch 0 (the starting model)" in r.output
    model = dextr_lib.DextrModel.load(tmp_path / "ft" / "checkpoints" / "last.pt", map_location="cpu")
    assert model.arch == "resunet18" and model.preprocess.target_size == 64 and model.preprocess.padding == 4
    cfg = load_config(tmp_path / "ft" / "config.toml").train
    assert (cfg.arch, cfg.target_size, cfg.from_model) == ("resunet18", 64, str(job / "checkpoints" / "best.pt"))
    assert _epochs(tmp_path / "ft") == [0, 1]


def test_finetune_with_corrections_adds_the_negative_channel_without_changing_the_start(trained_job, data,
                                                                                        tmp_path):
    job, _ = trained_job
    start = job / "checkpoints" / "best.pt"

    def finetune(name, *extra):
        r = runner.invoke(app, [
            "finetune", name, "--from", str(start), "--jobs-dir", str(tmp_path), "--dataset", "custom_mask",
            "--image-pat", str(data / "images/*.png"), "--target-pat", str(data / "masks/*.png"),
            "--val-image-pat", str(data / "images/p0.png"), "--val-target-pat", str(data / "masks/*.png"),
            "--batch-size", "2", "--iters-per-epoch", "1", "--num-epochs", "1", "--seed", "2", *extra])
        assert r.exit_code == 0, r.output
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    plain, corr = finetune("plain"), finetune("corr", "--corrections", "2")
    assert not dextr_lib.DextrModel.load(start, map_location="cpu").takes_negatives
    model = dextr_lib.DextrModel.load(tmp_path / "corr" / "checkpoints" / "last.pt", map_location="cpu")
    assert model.takes_negatives and load_config(tmp_path / "corr" / "config.toml").train.corrections == 2
    # The zero-initialised channel: the converted model validates exactly like the one it came from.
    assert corr[0]["val_miou"] == plain[0]["val_miou"] and corr[0]["val_loss"] == plain[0]["val_loss"]


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
    assert not any(tmp_path.iterdir())  # no half-made job


def test_a_bad_validation_pair_fails_before_training(tmp_path, data):
    bad = _write_data(tmp_path / "bad", n=1)
    Image.fromarray(np.zeros((40, 30), np.uint8) + 1, mode="P").save(bad / "labels" / "p0_labels.png")
    r = runner.invoke(app, ["train", "v", "--jobs-dir", str(tmp_path / "jobs"), "--dataset", "custom_label",
                            "--image-pat", str(data / "images/*.png"), "--target-pat", str(data / "labels/*.png"),
                            "--val-image-pat", str(bad / "images/*.png"), "--val-target-pat",
                            str(bad / "labels/*.png"), *TINY])
    assert r.exit_code == 1
    assert "p0.png is 48x40 px but its targets are 30x40 px" in " ".join(r.output.split())
    assert not (tmp_path / "jobs" / "v").exists()


def test_resume_with_a_broken_checkpoint_changes_nothing(tmp_path, data):
    args = ["train", "b", "--jobs-dir", str(tmp_path), *_label_args(data), *TINY, "--num-epochs", "1"]
    assert runner.invoke(app, args).exit_code == 0
    job = tmp_path / "b"
    (job / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    before = {p: p.read_bytes() for p in job.rglob("*") if p.is_file()}
    r = runner.invoke(app, ["train", "b", "--jobs-dir", str(tmp_path), "--resume", "--num-epochs", "5"])
    assert r.exit_code == 1 and "last.pt" in r.output
    assert {p: p.read_bytes() for p in job.rglob("*") if p.is_file()} == before


# -- real processes: locks and signals ---------------------------------------------------------
SLOW_TINY = [*TINY, "--iters-per-epoch", "3", "--num-epochs", "3", "--val-every-n-epochs", "1"]  # last wins


def _dextr(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "dextr_cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(p: subprocess.Popen, timeout: float = 300):
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


def _weights(job: Path):
    return read_checkpoint(job / "checkpoints" / "last.pt")["state_dict"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data):
    """The uninterrupted run the interrupted ones must reproduce bit for bit."""
    jobs = tmp_path_factory.mktemp("ref")
    rc, out = _finish(_dextr("train", "ref", "--jobs-dir", str(jobs), *_label_args(data), *SLOW_TINY))
    assert rc == 0, out
    return jobs / "ref"


def _wait_for(path: Path, text: str, p: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and text in path.read_text():
            return
        if p.poll() is not None:
            raise AssertionError(f"process ended early: {p.communicate()[0]}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.parametrize("sig", ["SIGINT", pytest.param("SIGTERM", marks=pytest.mark.slow),
                                 pytest.param("SIGKILL", marks=pytest.mark.slow)])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, data, reference_run, sig):
    args = ["train", "i", "--jobs-dir", str(tmp_path), *_label_args(data), *SLOW_TINY]
    p = _dextr(*args)
    job = tmp_path / "i"
    if sig == "SIGKILL":  # right after the first epoch-end checkpoint
        _wait_for(job / "metrics.jsonl", '"epoch": 1', p)
    else:  # at a random moment of training (mid-step, mid-validation, mid-save...)
        _wait_for(job / "log.txt", "Training objects", p)
        time.sleep(random.uniform(0.0, 3.0))
    p.send_signal(getattr(signal, sig))
    rc, out = _finish(p)
    if rc == 0:  # the signal came after the last step: nothing to resume
        assert sig != "SIGKILL"
    else:
        assert rc in (130, -9), out
        if sig != "SIGKILL":
            assert f"Interrupted ({sig})" in out and "dextr train i --resume" in " ".join(out.split())
        rc, out = _finish(_dextr(*args, "--resume"))
        assert rc == 0, out
    assert _epochs(job) == [1, 2, 3]
    ref = _weights(reference_run)
    for k, v in _weights(job).items():
        assert torch.equal(v, ref[k]), k


@pytest.mark.slow
def test_two_trainings_of_one_job_at_once(tmp_path, data):
    args = ["train", "dup", "--jobs-dir", str(tmp_path), *_label_args(data), *SLOW_TINY]
    procs = [_dextr(*args), _dextr(*args)]
    results = [_finish(p) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    refused = next(out for rc, out in results if rc == 1)
    assert "in use by another process" in refused or "already exists" in refused
    assert _epochs(tmp_path / "dup") == [1, 2, 3]
    # Two resumes at once: one continues, the other is refused while the first holds the job.
    resume = [*args, "--resume", "--num-epochs", "6"]
    procs = [_dextr(*resume), _dextr(*resume)]
    results = [_finish(p) for p in procs]
    rcs = sorted(rc for rc, _ in results)
    assert rcs[0] == 0, results
    if rcs[1] == 1:
        assert "in use by another process" in next(out for rc, out in results if rc == 1)
    assert _epochs(tmp_path / "dup") == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_nproc_2_starts_torchrun_and_writes_one_job(tmp_path, data):
    rc, out = _finish(_dextr("train", "d", "--nproc", "2", "--jobs-dir", str(tmp_path), *_label_args(data),
                             *TINY, "--num-epochs", "2", "--val-every-n-epochs", "1", "--sync-bn"))
    assert rc == 0, out
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and _epochs(tmp_path / "d") == [1, 2]
    assert out.count("Done in") == 1 and out.count("Epoch 2/2:") == 1  # one process reports
    assert "global batch 4 (2 processes x 2)" in out
    assert "--sync-bn is ignored: SyncBatchNorm needs CUDA" in " ".join(out.split())
    # Resuming with one process continues the same job.
    rc, out = _finish(_dextr("train", "d", "--jobs-dir", str(tmp_path), "--resume", "--num-epochs", "3"))
    assert rc == 0, out
    assert _epochs(tmp_path / "d") == [1, 2, 3]


@pytest.mark.parametrize("name", sorted(TRAIN_PRESETS))
def test_presets_are_valid_settings(name):
    settings = TrainSettings(**preset_settings(name))  # range and choice checks of the schema
    assert all(getattr(settings, k) == v for k, v in TRAIN_PRESETS[name].items())


def test_preset_then_command_line_overrides_it(tmp_path, data):
    r = runner.invoke(app, ["train", "p", "--jobs-dir", str(tmp_path), *_label_args(data), "--preset", "cpu-small",
                            "--target-size", "64", "--num-epochs", "1", "--iters-per-epoch", "1", "--seed", "1"])
    assert r.exit_code == 0, r.output
    cfg = load_config(tmp_path / "p" / "config.toml").train
    small = TRAIN_PRESETS["cpu-small"]
    assert (cfg.arch, cfg.opt_type, cfg.learning_rate, cfg.batch_size, cfg.pretrained) == (
        small["arch"], small["opt_type"], small["learning_rate"], small["batch_size"], small["pretrained"])
    assert (cfg.target_size, cfg.num_epochs, cfg.iters_per_epoch) == (64, 1, 1)  # the command line wins
    r = runner.invoke(app, ["train", "q", "--jobs-dir", str(tmp_path), *_label_args(data), "--preset", "laptop"])
    assert r.exit_code == 1 and "unknown preset 'laptop'" in r.stderr and "cpu-small" in r.stderr


@pytest.fixture()
def no_torchrun(monkeypatch):
    """Fail the test if a command starts torchrun (or any subprocess)."""
    started = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: started.append(a) or 0)
    return started


def test_nproc_beyond_the_cpu_cores_is_refused_before_anything_starts(tmp_path, data, no_torchrun, monkeypatch):
    from dextr_lib.utils import distributed

    monkeypatch.setattr(distributed, "usable_cpus", lambda: 2)
    r = runner.invoke(app, ["train", "n", "--nproc", "64", "--device", "cpu", "--jobs-dir", str(tmp_path),
                            *_label_args(data), *TINY])
    assert r.exit_code == 1 and not no_torchrun and not any(tmp_path.iterdir())
    line = " ".join(r.output.split())
    assert "--nproc 64" in line and "2 CPU core(s)" in line and "Use --nproc 2 or fewer" in line
    assert r.output.count("Error:") == 1 and "Traceback" not in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_nproc_on_cuda_without_cuda_is_one_line(tmp_path, data, no_torchrun):
    r = runner.invoke(app, ["train", "c", "--nproc", "2", "--device", "cuda", "--jobs-dir", str(tmp_path),
                            *_label_args(data), *TINY])
    assert r.exit_code == 1 and not no_torchrun
    assert len(r.output.strip().splitlines()) == 1 and "CUDA is not available" in r.output, r.output


def test_nproc_beyond_the_visible_gpus_is_refused(monkeypatch):
    from dextr_lib.errors import DistributedError
    from dextr_lib.utils import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DistributedError, match="1 visible CUDA GPU"):
        distributed.check_process_count(2, torch.device("cuda"))
    distributed.check_process_count(1, torch.device("cuda"))


def test_a_misspelt_arch_fails_before_the_dataset_is_indexed(tmp_path, data, monkeypatch):
    from dextr_lib.training import job as job_mod

    monkeypatch.setattr(job_mod, "open_datasets", lambda *a, **k: pytest.fail("the dataset was opened"))
    r = runner.invoke(app, ["train", "a", "--jobs-dir", str(tmp_path), *_label_args(data), *TINY,
                            "--arch", "resunet1O1"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "unknown architecture 'resunet1O1' (did you mean 'resunet101' or 'resunet18'?)" in r.output
    assert not any(tmp_path.iterdir())
