"""Training with simulated corrections: clicks come from the model's own errors (RITM's rule)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import dextr_lib
from dextr_lib.config import ConfigError, TrainSettings
from dextr_lib.data import build_dataset
from dextr_lib.inference.preprocessing import get_profile
from dextr_lib.training import TrainingJob, training_loop
from dextr_lib.training.corrections import add_click, rounds_for_step, simulate_corrections
from dextr_lib.weights.checkpoint import read_checkpoint
from dextr_lib.weights.surgery import input_channels

from tests.lib.test_training import _settings, write_label_dataset

T = 32


class Constant(torch.nn.Module):
    """A network that predicts the same logit everywhere and records its inputs and mode."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = logit
        self.seen = []

    def forward(self, x):
        self.seen.append((x.clone(), self.training))
        return torch.full((x.shape[0], 1, x.shape[2], x.shape[3]), self.logit)


def _batch(pp, n=2):
    """A batch as the training loader makes it: a centred square object, no clicks but the points."""
    target = torch.zeros((n, 1, T, T))
    target[:, :, 8:24, 8:24] = 1.0
    heat = torch.zeros((n, T, T))
    rgb = torch.rand((n, 3, T, T), generator=torch.Generator().manual_seed(0))
    points = torch.tensor([[[16, 8], [16, 23], [8, 16], [23, 16]]] * n, dtype=torch.float32)
    return {"input": pp.normalize(rgb, heat, None if not pp.negative_clicks else torch.zeros_like(heat)),
            "target": target, "valid": torch.ones_like(target), "points": points}


def _raw(x, channel, pp):
    return x[:, channel] * pp.std[3] + pp.mean[3]


def test_rounds_are_drawn_from_seed_and_step_alone():
    draws = [rounds_for_step(3, 7, it) for it in range(200)]
    assert draws == [rounds_for_step(3, 7, it) for it in range(200)]  # a resumed job draws the same
    assert set(draws) == {0, 1, 2, 3}
    assert draws != [rounds_for_step(3, 8, it) for it in range(200)]
    assert rounds_for_step(0, 7, 5) == 0


def test_a_missed_object_gets_a_positive_click_at_its_deepest_point():
    pp = get_profile("dextr", target_size=T, blob_sigma=2.0, negative_clicks=True)
    batch = _batch(pp)
    net = Constant(-10.0).train()  # predicts nothing: everything is missed
    x = simulate_corrections(net, batch, pp, rounds=1, device=torch.device("cpu"))
    added = _raw(x, 3, pp) - _raw(batch["input"], 3, pp)
    y, xx = np.unravel_index(int(added[0].argmax()), (T, T))
    # RITM's rule: the first pixel of largest distance to the error's edge, row-major.
    assert (y, xx) == (15, 15) and float(added[0].max()) == pytest.approx(1.0)
    assert torch.equal(x[:, 4], batch["input"][:, 4])  # no negative click
    assert net.training and [mode for _, mode in net.seen] == [False]  # eval for the rounds, then back


def test_a_false_positive_gets_a_negative_click_in_the_fifth_channel():
    pp = get_profile("dextr", target_size=T, blob_sigma=2.0, negative_clicks=True)
    batch = _batch(pp)
    batch["target"][:, :, 8:24, 8:24] = 0.0
    batch["target"][:, :, 14:18, 14:18] = 1.0  # a small object inside a mask that covers all
    x = simulate_corrections(Constant(10.0), batch, pp, rounds=1, device=torch.device("cpu"))
    assert torch.equal(x[:, 3], batch["input"][:, 3])
    neg = _raw(x, 4, pp) - _raw(batch["input"], 4, pp)
    y, xx = np.unravel_index(int(neg[0].argmax()), (T, T))
    assert batch["target"][0, 0, y, xx] == 0 and float(neg[0].max()) == pytest.approx(1.0)


def test_each_round_sees_the_clicks_of_the_previous_one_and_never_repeats_a_pixel():
    pp = get_profile("dextr", target_size=T, blob_sigma=2.0, negative_clicks=True)
    batch = _batch(pp, n=1)
    net = Constant(-10.0)
    x = simulate_corrections(net, batch, pp, rounds=3, device=torch.device("cpu"))
    assert len(net.seen) == 3
    for (before, _), (after, _) in zip(net.seen, net.seen[1:]):
        assert not torch.equal(before[:, 3], after[:, 3])  # the next prediction sees the click
    inputs = [seen for seen, _ in net.seen] + [x]
    clicks = {np.unravel_index(int((_raw(b, 3, pp) - _raw(a, 3, pp))[0].argmax()), (T, T))
              for a, b in zip(inputs, inputs[1:])}
    assert len(clicks) == 3  # three distinct pixels, each a peak of its round's new blob


def test_a_negative_click_on_a_four_channel_input_is_spent():
    pp = get_profile("dextr", target_size=T, blob_sigma=2.0)
    x = _batch(pp)["input"]
    before = x.clone()
    assert not add_click(x, 0, 5.0, 5.0, False, pp)
    assert torch.equal(x, before)
    assert add_click(x, 0, 5.0, 5.0, True, pp) and not torch.equal(x, before)


def test_a_job_with_corrections_trains_a_five_channel_model_and_records_the_setting(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    s = _settings(root, corrections=2, num_epochs=1, val_every_n_epochs=0)
    with TrainingJob.create(s, "c", tmp_path / "jobs") as job:
        job.run()
    ckpt = read_checkpoint(job.folder.last_path)
    model = dextr_lib.load_model(str(job.folder.last_path))
    assert model.takes_negatives and input_channels(model.net) == 5
    assert job.folder.read_config().train.corrections == 2 and ckpt["training"]["settings"]["corrections"] == 2


def test_corrections_change_what_is_learned_and_stay_reproducible(tmp_path):
    root = write_label_dataset(tmp_path / "data")
    ds = build_dataset("custom_label", str(root / "images/*.png"), str(root / "labels/*.png"),
                       cache_dir=tmp_path / "cache")

    def train(corrections):
        torch.manual_seed(0)
        model = dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)
        model.add_negative_channel()
        s = TrainSettings(opt_type="adam", learning_rate=1e-3, batch_size=2, num_epochs=1,
                          iters_per_epoch=3, val_every_n_epochs=0, seed=5, corrections=corrections)
        training_loop(model.net, model.preprocess, ds, None, s, device="cpu")
        return model.net.state_dict()

    a, b, c = train(3), train(3), train(0)
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert not all(torch.equal(v, c[k]) for k, v in a.items())


def test_corrections_setting_is_range_checked():
    with pytest.raises(ConfigError, match="corrections"):
        TrainSettings(corrections=-1)
