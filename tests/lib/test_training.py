"""Training: sample geometry, the loss, LR schedules, resume and job directories."""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dextr_lib
from dextr_lib.config import ConfigError, TrainSettings, config_from_dict
from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.data import build_dataset
from dextr_lib.errors import DatasetError, JobError, OutputError
from dextr_lib.inference.preprocessing import get_profile, image_to_tensor
from dextr_lib.training import (
    Callbacks, JobDir, TrainingInterrupted, TrainingJob, TrainingState, balanced_bce_with_logits, lr_factor,
    make_optimizer, training_loop,
)
from dextr_lib.training.folder import dumps_toml
from dextr_lib.training.samples import SampleStream, TrainingSamples
from dextr_lib.weights.checkpoint import read_checkpoint


def write_label_dataset(root: Path, n: int = 3, h: int = 48, w: int = 56) -> Path:
    """``n`` images with two objects each (an L shape and a disk), labels as palette PNGs."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for i in range(n):
        lab = np.zeros((h, w), np.uint8)
        lab[6 + i:30, 0:6] = 1  # touches the left edge: crops reach past the image
        lab[24:30, 0:26 - i] = 1
        lab[(yy - 30) ** 2 + (xx - 40 + i) ** 2 <= 64] = 2
        img = rng.integers(0, 50, (h, w, 3)).astype(np.uint8)
        img[lab == 1] = (220, 40, 40)
        img[lab == 2] = (40, 200, 220)
        Image.fromarray(img).save(root / "images" / f"s{i}.png")
        Image.fromarray(lab, mode="P").save(root / "labels" / f"s{i}_label.png")
    return root


@pytest.fixture
def label_ds(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    return build_dataset("custom_label", str(root / "images/*.png"), str(root / "labels/*.png"),
                         cache_dir=tmp_path / "cache")


# -- samples ------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["dextr", "dextr012", "original"])
def test_unaugmented_sample_is_exactly_the_inference_crop(label_ds, profile):
    pp = get_profile(profile, target_size=64, padding=4, blob_sigma=4.0)
    ts = TrainingSamples(label_ds, pp, extreme_range=0, noise_std=0, hflip=False, rot_range=0)
    rec = label_ds.objects[0]  # the L shape: its crop reaches past the image's left edge
    assert label_ds.objects[0].box[1] == 0
    rgb = label_ds.read_image(rec.image)
    mask = label_ds.read_targets(rec.image).object_mask(rec)
    sample = ts[(0, 123)]
    # With extreme_range 0 the drawn points lie on the extreme rows/columns: same box as the paper's points.
    pts = extreme_points_from_mask(mask)[None].astype(float)
    x, boxes = pp.make_inputs(image_to_tensor(rgb), pts)
    # uint8_resample rounds to 8-bit levels: a last-bit difference may flip one level.
    tol = (1e-4 + (1 / 255 if pp.uint8_resample else 0)) / min(pp.std[:3])
    inner = np.s_[:]
    if pp.resampler == "opencv":
        # Inference is OpenCV's resize (edge pixels repeated); training crops are sampled with
        # grid_sample (they may be rotated): the same 8-bit levels, but for a last-bit rounding,
        # away from the crop's edge.
        tol, inner = 1.01 / 255 / min(pp.std[:3]), np.s_[:, 4:-4, 4:-4]
    np.testing.assert_allclose(sample["input"][:3][inner].numpy(), x[0, :3][inner].numpy(), atol=tol)
    crop_boxes = np.trunc(boxes) if pp.crop_box_truncate else boxes
    target = pp.crop(torch.from_numpy(mask[None].astype(np.float32)), crop_boxes, mode="bilinear")[0]
    np.testing.assert_allclose(sample["target"].numpy(), target.numpy(), atol=1e-5)


@pytest.mark.parametrize("rot", [0.0, 30.0])
def test_sampled_points_lie_on_the_object_after_flip_and_rotation(label_ds, rot):
    pp = get_profile("dextr", target_size=64, padding=4, blob_sigma=4.0)
    ts = TrainingSamples(label_ds, pp, extreme_range=3, noise_std=0, hflip=True, rot_range=rot)
    flips_seen = set()
    for seed in range(24):
        for i in range(len(label_ds)):
            s = ts[(i, seed)]
            target = s["target"][0].numpy()
            for y, x in s["points"].numpy():
                yi, xi = int(round(y)), int(round(x))
                # The point's pixel (or a neighbour: the target is resampled) is on the object.
                assert target[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2].max() > 0.5, (seed, i, y, x)
            # The L shape's vertical bar tells left from right: a flip moves it to the other side.
            if label_ds.objects[i].label == 1 and rot == 0:
                cols = target.sum(axis=0)
                flips_seen.add(bool(cols[: 32].sum() < cols[32:].sum()))
    if rot == 0:
        assert flips_seen == {True, False}


def test_sample_stream_is_reproducible_and_resumable():
    a = SampleStream(7, seed=3)
    first = [x for _, x in zip(range(20), a)]
    assert sorted(i for i, _ in first[:7]) == list(range(7))  # a pass visits every object once
    resumed = [x for _, x in zip(range(8), SampleStream(7, seed=3, start=12))]
    assert resumed == first[12:20]
    assert first != [x for _, x in zip(range(20), SampleStream(7, seed=4))]


def test_sample_stream_splits_each_global_batch_between_processes():
    one = [x for _, x in zip(range(24), SampleStream(7, seed=3, batch_size=4))]
    ranks = [[x for _, x in zip(range(12), SampleStream(7, seed=3, rank=r, world_size=2, batch_size=4))]
             for r in range(2)]
    # Step k's global batch (8 samples) is rank 0's k-th 4 samples, then rank 1's.
    merged = [x for k in range(3) for r in range(2) for x in ranks[r][4 * k:4 * k + 4]]
    assert merged == one
    # Resuming a 2-process stream with one process continues the same global stream.
    assert [x for _, x in zip(range(8), SampleStream(7, seed=3, start=16, batch_size=4))] == one[16:24]


# -- loss ---------------------------------------------------------------------------------------
def test_balanced_bce_weights_by_class_share():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # Foreground share 1/4: fg weight 3/4, bg weight 1/4; BCE of logit 0 is ln 2 everywhere.
    expected = (0.75 + 3 * 0.25) / 4 * math.log(2)
    assert balanced_bce_with_logits(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # Ignoring one background pixel: share 1/3 among the valid ones, the ignored pixel counts 0.
    valid = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    expected = (2 / 3 + 2 * (1 / 3)) / 4 * math.log(2)
    assert balanced_bce_with_logits(logits, target, valid).item() == pytest.approx(expected, rel=1e-6)
    # Per sample: a second, all-background sample does not change the first one's weights.
    two = balanced_bce_with_logits(torch.zeros(2, 1, 2, 2), torch.cat([target, torch.zeros_like(target)]))
    assert two.item() == pytest.approx((0.75 + 3 * 0.25) / 8 * math.log(2), rel=1e-6)


# -- schedules and optimiser --------------------------------------------------------------------
def test_lr_schedules():
    assert lr_factor("none", 70, 100) == 1.0
    assert lr_factor("poly", 0, 100) == 1.0
    assert lr_factor("poly", 50, 100, 0.9) == pytest.approx(0.5 ** 0.9)
    assert lr_factor("poly", 100, 100) == 0.0
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 25, 100) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0)


def test_parameter_groups_scale_the_encoder(tiny_model):
    model = tiny_model  # make_optimizer only reads its network
    opt = make_optimizer(model.net, TrainSettings(learning_rate=0.1, pretrained_lr_factor=0.1))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"encoder": pytest.approx(0.01), "new": pytest.approx(0.1)}
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    n_enc = sum(p.numel() for p in opt.param_groups[0]["params"])
    assert n_enc == sum(p.numel() for p in model.net.encoder_parameters())
    ft = make_optimizer(model.net, TrainSettings(opt_type="adam", learning_rate=1e-3, pretrained_lr_factor=0.1),
                        finetune=True)
    assert isinstance(ft, torch.optim.Adam) and [g["lr"] for g in ft.param_groups] == pytest.approx([1e-4, 1e-4])


def test_one_schema_for_toml_and_its_checks():
    cfg = config_from_dict({"train": {"batch_size": 3, "opt_type": "adam"}}, source="c.toml")
    assert isinstance(cfg.train, TrainSettings) and cfg.train.batch_size == 3
    with pytest.raises(ConfigError, match=r"c.toml: \[train\] batch_size: must be >= 1, got 0"):
        config_from_dict({"train": {"batch_size": 0}}, source="c.toml")
    with pytest.raises(ConfigError, match=r"\[train\] lr_sched: expected one of none, cosine, poly, got 'step'"):
        config_from_dict({"train": {"lr_sched": "step"}}, source="c.toml")
    with pytest.raises(ConfigError, match="unknown key 'epochs'"):
        config_from_dict({"train": {"epochs": 3}}, source="c.toml")
    with pytest.raises(ConfigError, match="aug_scale_range: must be <= 0.99"):
        TrainSettings(aug_scale_range=1.0)


# -- the loop: seeding and resume ---------------------------------------------------------------
def _tiny(seed=0):
    torch.manual_seed(seed)
    return dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)


SETTINGS = TrainSettings(opt_type="adam", learning_rate=1e-3, batch_size=2, num_epochs=2,
                         iters_per_epoch=2, val_every_n_epochs=0, seed=5)


def assert_same_weights(a, b):
    for (k, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(x, y), k


def test_resume_after_interruption_gives_the_same_weights(label_ds, tmp_path):
    ref = _tiny()
    training_loop(ref.net, ref.preprocess, label_ds, None, SETTINGS, device="cpu")

    model = _tiny()
    job = JobDir(tmp_path / "jobs" / "r")

    class Interrupt(Callbacks):
        def iteration(self, epoch, step, steps, loss, lr):
            if epoch == 2 and step == 1:  # mid-way through the second epoch: a signal arrives
                os.kill(os.getpid(), signal.SIGINT)

        def epoch_end(self, result, state):
            job.save_checkpoint(model, {"state": state.to_dict()})

    with pytest.raises(TrainingInterrupted) as e:
        training_loop(model.net, model.preprocess, label_ds, None, SETTINGS, device="cpu", callbacks=Interrupt())
    assert e.value.state.iteration == 3 and e.value.signal_name == "SIGINT"
    job.save_checkpoint(model, {"state": e.value.state.to_dict()})
    del model

    torch.load(job.last_path, weights_only=True)  # plain data
    resumed, training = job.load_last("cpu")
    final = training_loop(resumed.net, resumed.preprocess, label_ds, None, SETTINGS, device="cpu",
                          state=TrainingState.from_dict(training["state"]))
    assert final.iteration == 4 and final.epoch == 2
    assert_same_weights(ref, resumed)  # bit for bit


def test_validation_reports_loss_and_miou(label_ds):
    model = _tiny()
    results = []

    class Record(Callbacks):
        def epoch_end(self, result, state):
            results.append(result)

    training_loop(model.net, model.preprocess, label_ds, label_ds, SETTINGS, device="cpu", num_epochs=1,
                  iters_per_epoch=1, callbacks=Record())
    (r,) = results
    assert r.val_loss > 0 and 0.0 <= r.val_miou <= 1.0 and r.is_best


# -- TrainingJob --------------------------------------------------------------------------------
def _settings(root: Path, **kw) -> TrainSettings:
    base = dict(dataset="custom_label", image_pat=[str(root / "images/*.png")],
                target_pat=[str(root / "labels/*.png")], val_image_pat=[str(root / "images/s0.png")],
                val_target_pat=[str(root / "labels/*.png")], arch="resunet18", target_size=64,
                padding=4.0, blob_sigma=4.0, pretrained=False, opt_type="adam", learning_rate=1e-3,
                batch_size=2, num_epochs=2, iters_per_epoch=2, val_every_n_epochs=1, seed=3)
    base.update(kw)
    return TrainSettings(**base)


class Recorder(Callbacks):
    def __init__(self):
        self.messages, self.epochs = [], []

    def message(self, text):
        self.messages.append(text)

    def epoch_end(self, result, state):
        self.epochs.append(result)


def _run(settings, name, jobs, **kw):
    with TrainingJob.create(settings, name, jobs, **kw) as job:
        job.run()
    return job


def test_same_seed_gives_bit_identical_checkpoints(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    plain = {"val_image_pat": [], "val_target_pat": []}  # training alone decides the weights
    a = _run(_settings(root, **plain), "a", tmp_path / "jobs")
    torch.manual_seed(123)  # whatever happened before: the job seeds before creating its model
    b = _run(_settings(root, **plain), "b", tmp_path / "jobs")
    ca, cb = (read_checkpoint(j.folder.last_path) for j in (a, b))
    for k, v in ca["state_dict"].items():
        assert torch.equal(v, cb["state_dict"][k]), k
    oa, ob = ca["training"]["state"]["optimizer"]["state"], cb["training"]["state"]["optimizer"]["state"]
    for k in oa:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa[k][name], ob[k][name])
    c = _run(_settings(root, seed=4, **plain), "c", tmp_path / "jobs")
    cc = read_checkpoint(c.folder.last_path)
    assert not all(torch.equal(v, cc["state_dict"][k]) for k, v in ca["state_dict"].items())


def test_job_records_metrics_checkpoints_and_its_settings(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    rec = Recorder()
    with TrainingJob.create(_settings(root, seed=None), "m", tmp_path / "jobs", callbacks=rec) as job:
        assert job.settings.seed is not None  # a random seed, recorded
        job.run(rec)
    assert [r.epoch for r in rec.epochs] == [1, 2]
    rows = job.folder.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["val_miou"] == pytest.approx(rec.epochs[0].val_miou)
    saved = job.folder.read_config().train
    assert saved == job.settings and saved.seed == job.settings.seed
    assert all(os.path.isabs(p) for p in saved.image_pat + saved.val_target_pat)
    assert job.folder.best_path.is_file() and "Training objects: 6, validation objects: 2" in " ".join(rec.messages)


def test_finetune_records_the_real_model_and_validates_it_first(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    start = _run(_settings(root, num_epochs=1), "start", tmp_path / "jobs")
    ft = TrainSettings(**{**_settings(root).to_dict(), "arch": "resunet101", "target_size": 512,
                          "from_model": str(start.folder.best_path), "num_epochs": 1})
    with TrainingJob.create(ft, "ft", tmp_path / "jobs") as job:
        job.run()
    saved = job.folder.read_config().train
    assert (saved.arch, saved.target_size, saved.padding, saved.from_model) == (
        "resunet18", 64, 4.0, str(start.folder.best_path))
    rows = job.folder.read_metrics()
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[0]["train_loss"] is None and rows[0]["is_best"]
    # Epoch 0 is the starting model: its validation equals the start job's own.
    assert rows[0]["val_miou"] == pytest.approx(start.folder.read_metrics()[-1]["val_miou"], abs=1e-9)
    # --overwrite of the job that holds the starting model would delete it: refused, kept.
    best = start.folder.best_path.read_bytes()
    for from_model in (start.folder.best_path, tmp_path / "jobs" / "start" / "." / "checkpoints" / "best.pt"):
        with pytest.raises(OutputError, match="refusing to clear .*start.*holds .*best.pt, an input"):
            TrainingJob.create(TrainSettings(**{**ft.to_dict(), "from_model": str(from_model)}), "start",
                               tmp_path / "jobs", overwrite=True)
    assert start.folder.best_path.read_bytes() == best and start.folder.metrics_path.is_file()


def test_resume_accepts_equal_values_refuses_different_ones_and_extends(tmp_path, monkeypatch):
    root = write_label_dataset(tmp_path / "data")
    monkeypatch.chdir(root)
    s = _settings(root, image_pat=["images/*.png"], num_epochs=1)
    job = _run(s, "r", tmp_path / "jobs")
    config_before = job.folder.config_path.read_text()
    with pytest.raises(JobError) as e:
        TrainingJob.resume("r", tmp_path / "jobs", changes={"learning_rate": 0.5, "batch_size": 2,
                                                             "image_pat": ["images/*.png"], "seed": 9})
    msg = str(e.value)
    assert "--learning-rate (job: 0.001, given: 0.5)" in msg and "--seed (job: 3, given: 9)" in msg
    assert "batch" not in msg and "image-pat" not in msg  # equal values (relative or not) pass
    assert job.folder.config_path.read_text() == config_before
    rec = Recorder()
    with TrainingJob.resume(tmp_path / "jobs" / "r", changes={**s.to_dict(), "num_epochs": 3},
                            callbacks=rec) as resumed:
        resumed.run()
    assert "changed: num_epochs 1 -> 3" in rec.messages[0]
    assert [r["epoch"] for r in resumed.folder.read_metrics()] == [1, 2, 3]
    assert resumed.folder.read_config().train.num_epochs == 3
    with pytest.raises(JobError, match="completed 3 epochs already; --num-epochs 2"):
        TrainingJob.resume("r", tmp_path / "jobs", changes={"num_epochs": 2})
    assert resumed.folder.read_config().train.num_epochs == 3


def test_validation_set_is_checked_before_anything_is_written(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    small = np.zeros((10, 10), np.uint8)
    small[2:6, 3:7] = 1
    Image.fromarray(small, mode="P").save(root / "labels" / "s0_label.png")
    with pytest.raises(DatasetError, match=r"s0.png is 56x48 px but its targets are 10x10 px"):
        TrainingJob.create(_settings(root, image_pat=[str(root / "images/s1.png")]), "v", tmp_path / "jobs")
    assert not (tmp_path / "jobs" / "v").exists()


def test_a_job_in_use_is_refused(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    job = _run(_settings(root, num_epochs=1), "l", tmp_path / "jobs")
    holder = JobDir(job.folder.root)
    holder.lock()
    try:
        with pytest.raises(JobError, match="in use by another process"):
            TrainingJob.resume("l", tmp_path / "jobs")
        with pytest.raises(JobError, match="in use by another process"):
            TrainingJob.create(_settings(root), "l", tmp_path / "jobs", overwrite=True)
    finally:
        holder.unlock()
    with TrainingJob.resume("l", tmp_path / "jobs"):
        pass


def test_resume_repairs_a_torn_metrics_line_and_removes_stale_temporaries(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    job = _run(_settings(root, num_epochs=1), "t", tmp_path / "jobs")
    with open(job.folder.metrics_path, "a") as f:
        f.write('{"epoch": 2, "train_lo')  # killed while appending
    stale = job.folder.last_path.parent / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half")
    assert [r["epoch"] for r in job.folder.read_metrics()] == [1]
    with TrainingJob.resume("t", tmp_path / "jobs", changes={"num_epochs": 2}) as resumed:
        assert not stale.exists()
        resumed.run()
    lines = job.folder.metrics_path.read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


# -- job directories ----------------------------------------------------------------------------
def test_job_dir_names_and_overwrite(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    with pytest.raises(JobError, match="invalid job name"):
        JobDir.named(tmp_path, "../x")
    _run(_settings(root, num_epochs=1), "o", tmp_path / "jobs")
    with pytest.raises(JobError, match="--resume.*--overwrite"):
        TrainingJob.create(_settings(root), "o", tmp_path / "jobs")
    with pytest.raises(JobError, match="last.pt does not exist"):
        TrainingJob.resume("nothing", tmp_path / "jobs")
    rec = Recorder()
    with TrainingJob.create(_settings(root, num_epochs=1), "o", tmp_path / "jobs", overwrite=True, callbacks=rec):
        pass
    assert any("--overwrite removed the previous job's checkpoints/, config.toml, curves.png, log.txt, metrics.jsonl" in m
               for m in rec.messages)


def test_crash_while_saving_keeps_the_previous_last_pt(tmp_path, tiny_model, monkeypatch):
    job = JobDir(tmp_path / "crash")
    job.save_checkpoint(tiny_model, {"state": TrainingState(iteration=7).to_dict()})
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        job.save_checkpoint(tiny_model, {"state": TrainingState(iteration=8).to_dict()})
    monkeypatch.setattr(torch, "save", real_save)
    ckpt = read_checkpoint(job.last_path)
    assert ckpt["training"]["state"]["iteration"] == 7
    assert [p.name for p in job.last_path.parent.iterdir()] == ["last.pt"]


def test_job_config_round_trips_through_the_config_loader(tmp_path):
    tc = TrainSettings(dataset="custom_mask", image_pat=["/a/*.jpg"], target_pat=["/a/*_mask*.png"],
                       learning_rate=1e-3, seed=4, aug_hflip=False)
    job = JobDir(tmp_path / "cfg")
    job.prepare()
    job.write_config(tc, paths={"pascal_voc": "/data/VOC2012", "sbd": None})
    cfg = job.read_config()
    assert cfg.train == tc and cfg.paths.pascal_voc == "/data/VOC2012"
    assert "[train]" in dumps_toml({"train": {"x": [1, 2]}})


# -- distributed (torchrun's environment, gloo on CPU) -----------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: Path, jobs: Path, out: Path, die_at: int) -> None:
    """One process of a torchrun-like job: the environment torchrun would set, then the library."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from dextr_lib.training import loop
    from dextr_lib.utils import distributed

    if die_at and rank == 1:  # this process dies in the middle of a step
        calls = {"n": 0}
        real = loop.balanced_bce_with_logits

        def dying(*a, **k):
            calls["n"] += 1
            if calls["n"] == die_at:
                os._exit(3)
            return real(*a, **k)
        loop.balanced_bce_with_logits = dying
    try:
        with TrainingJob.create(_settings(root, num_epochs=2, iters_per_epoch=2, seed=11,
                                           val_image_pat=[str(root / "images/*.png")]), "ddp", jobs) as job:
            job.run()
        torch.save(job.model.net.state_dict(), out / f"rank{rank}.pt")
    except dextr_lib.DextrError as e:
        (out / f"rank{rank}.error").write_text(f"{type(e).__name__}: {e}")
    finally:
        distributed.shutdown()


def _spawn(tmp_path: Path, die_at: int = 0):
    import multiprocessing

    root = write_label_dataset(tmp_path / "data", n=4)
    out = tmp_path / "out"
    out.mkdir()
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, root, tmp_path / "jobs", out, die_at))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode is not None, "a process hangs"
    return root, out, procs


@pytest.mark.slow
def test_two_process_training_writes_one_job_with_all_reduced_validation(tmp_path):
    from typer.testing import CliRunner

    from dextr_cli.app import app

    root, out, procs = _spawn(tmp_path)
    assert [p.exitcode for p in procs] == [0, 0], list(out.iterdir())
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == ["ddp"]
    job = JobDir(tmp_path / "jobs" / "ddp")
    rows = job.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    last = read_checkpoint(job.last_path)["state_dict"]
    for k, v in ranks[0].items():
        assert torch.equal(v, ranks[1][k]), k  # the processes end with the same weights
        assert torch.equal(v, last[k]), k  # saved unwrapped: no "module." prefix
    assert "Training objects: 8, validation objects: 8; 2 iterations per epoch, global batch 4 (2 processes x 2)" \
        in job.log_path.read_text()
    # The validation mIoU (shared between the processes, summed over all objects) is what a
    # single-process `dextr eval` of the same checkpoint measures on the same objects.
    report = tmp_path / "eval.json"
    r = CliRunner().invoke(app, ["eval", "-m", str(job.last_path), "--dataset", "custom_label",
                                 "--image-pat", str(root / "images/*.png"), "--target-pat",
                                 str(root / "labels/*.png"), "--json", str(report)])
    assert r.exit_code == 0, r.output
    assert json.loads(report.read_text())["summary"]["mean_iou"] == pytest.approx(rows[-1]["val_miou"], abs=1e-9)


@pytest.mark.slow
def test_a_dying_process_stops_the_others_with_a_clear_error(tmp_path):
    _, out, procs = _spawn(tmp_path, die_at=3)
    assert procs[1].exitcode == 3
    message = (out / "rank0.error").read_text()
    assert message.startswith("DistributedError: another training process stopped or died")
    assert "--resume" in message
