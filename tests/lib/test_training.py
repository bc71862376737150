"""Training: sample geometry, the loss, LR schedules, resume and job directories."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dextr_lib
from dextr_lib.checkpoint import read_checkpoint
from dextr_lib.config import TrainConfig, config_from_dict
from dextr_lib.datasets import build_dataset
from dextr_lib.datasets.samples import SampleStream, TrainingSamples
from dextr_lib.geometry import extreme_points_from_mask
from dextr_lib.jobs import JobDir, JobError, dumps_toml
from dextr_lib.losses import balanced_bce_with_logits
from dextr_lib.preprocessing import get_profile, image_to_tensor
from dextr_lib.training import (
    TrainingInterrupted, TrainingState, TrainSettings, lr_factor, make_optimizer, training_loop,
)


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
    np.testing.assert_allclose(sample["input"][:3].numpy(), x[0, :3].numpy(), atol=tol)
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
    model = tiny_model  # make_optimizer only reads it
    opt = make_optimizer(model, TrainSettings(learning_rate=0.1, pretrained_lr_factor=0.1))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"encoder": pytest.approx(0.01), "new": pytest.approx(0.1)}
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    n_enc = sum(p.numel() for p in opt.param_groups[0]["params"])
    assert n_enc == sum(p.numel() for p in model.net.encoder_parameters())
    ft = make_optimizer(model, TrainSettings(opt_type="adam", learning_rate=1e-3, pretrained_lr_factor=0.1, new_lr_factor=0.1))
    assert isinstance(ft, torch.optim.Adam) and [g["lr"] for g in ft.param_groups] == pytest.approx([1e-4, 1e-4])


def test_train_config_defaults_match_the_library():
    tc = TrainConfig()
    for f in dataclasses.fields(TrainSettings):
        if hasattr(tc, f.name) and f.name != "seed":
            assert getattr(tc, f.name) == getattr(TrainSettings(), f.name), f.name


# -- resume -------------------------------------------------------------------------------------
def _tiny():
    torch.manual_seed(0)
    return dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)


SETTINGS = TrainSettings(opt_type="adam", learning_rate=1e-3, batch_size=2, num_epochs=2,
                         iters_per_epoch=2, val_every_n_epochs=0, seed=5)


def test_resume_after_interruption_gives_the_same_weights(label_ds, tmp_path):
    ref = _tiny()
    training_loop(ref, label_ds, None, SETTINGS, device="cpu")

    model = _tiny()
    job = JobDir.open(tmp_path / "jobs", "r")

    def interrupt(i, n, loss, lr):
        if model_state["epoch"] == 1 and i == 1:  # mid-way through the second epoch
            raise KeyboardInterrupt

    model_state = {"epoch": 0}

    def epoch_end(result, state):
        model_state["epoch"] = state.epoch
        job.save_checkpoint(model, {"state": state.to_dict()})

    with pytest.raises(TrainingInterrupted) as e:
        training_loop(model, label_ds, None, SETTINGS, device="cpu", on_iteration=interrupt, on_epoch_end=epoch_end)
    assert e.value.state.iteration == 3
    job.save_checkpoint(model, {"state": e.value.state.to_dict()})
    del model

    # The checkpoint is plain data: weights_only loading works.
    torch.load(job.last_path, weights_only=True)
    resumed, training = JobDir.open(tmp_path / "jobs", "r", resume=True).load_last("cpu")
    state = TrainingState.from_dict(training["state"])
    final = training_loop(resumed, label_ds, None, SETTINGS, device="cpu", state=state)
    assert final.iteration == 4 and final.epoch == 2
    for (k, a), b in zip(ref.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_validation_reports_loss_and_miou(label_ds, tmp_path):
    model = _tiny()
    results = []
    training_loop(model, label_ds, label_ds, SETTINGS, device="cpu", num_epochs=1, iters_per_epoch=1,
                  on_epoch_end=lambda r, s: results.append(r))
    (r,) = results
    assert r.val_loss > 0 and 0.0 <= r.val_miou <= 1.0 and r.is_best


# -- job directories ----------------------------------------------------------------------------
def test_job_dir_refuses_existing_jobs(tmp_path):
    job = JobDir.open(tmp_path, "j1")
    assert not job.root.exists()  # nothing is created until prepare()
    job.prepare()
    job.log("hello")
    with pytest.raises(JobError, match="--resume.*--overwrite"):
        JobDir.open(tmp_path, "j1")
    with pytest.raises(JobError, match="last.pt"):
        JobDir.open(tmp_path, "j1", resume=True)
    with pytest.raises(JobError, match="invalid job name"):
        JobDir.open(tmp_path, "../x")
    again = JobDir.open(tmp_path, "j1", overwrite=True)
    assert again.log_path.exists()  # an overwritten job is only emptied when the new run starts
    again.prepare()
    assert not again.log_path.exists() and (again.root / "checkpoints").is_dir()


def test_crash_while_saving_keeps_the_previous_last_pt(tmp_path, tiny_model, monkeypatch):
    job = JobDir.open(tmp_path, "crash")
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
    tc = TrainConfig(dataset="custom_mask", image_pat=["/a/*.jpg"], target_pat=["/a/*_mask*.png"],
                     learning_rate=1e-3, seed=4, aug_hflip=False)
    job = JobDir.open(tmp_path, "cfg")
    job.prepare()
    job.write_config(tc, paths={"pascal_voc": "/data/VOC2012", "sbd": None})
    cfg = job.read_config()
    assert cfg.train == tc and cfg.paths.pascal_voc == "/data/VOC2012"
    assert "[train]" in dumps_toml({"train": {"x": [1, 2]}})
