"""Simulated correction clicks for training (``[train] corrections``).

A model learns to use correction clicks the way RITM trains its interactive models
(Sofiiuk et al. 2022, "iterative training"): before each optimiser step, a random number of
rounds ``0..N`` is drawn for the batch; in each round the network, with its current weights, in
eval mode and without gradients, predicts every sample, and the simulated annotator of
:mod:`dextr_lib.core.clicker` (the NoC protocol's rule) adds one click where the sample's error
is largest: positive in a missed region, negative in a wrongly included one. The step then
trains on the input with those clicks. So the clicks come from the model's own errors, and the
errors change as it learns.

Clicks are made in crop space, on the crop's target mask: the crop is what the network sees, and
a click inside it is exactly what inference renders for a click inside the object's crop.
Positive clicks join the extreme points' heatmap (combined as the profile says); negative ones
go into the fifth channel of a network that takes them (:attr:`Preprocess.negative_clicks`),
and are spent without changing the input otherwise — as the NoC protocol counts them.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from ..core.clicker import next_click
from ..inference.heatmaps import gaussian_heatmaps
from ..inference.preprocessing import Preprocess

__all__ = ["add_click", "simulate_corrections", "rounds_for_step"]


def rounds_for_step(max_rounds: int, seed: int, iteration: int) -> int:
    """How many correction rounds the batch of optimiser step ``iteration`` gets: uniform in
    ``0..max_rounds``, drawn from ``(seed, iteration)`` alone so a resumed job draws the same."""
    if max_rounds <= 0:
        return 0
    return int(np.random.default_rng([int(seed), int(iteration)]).integers(0, max_rounds + 1))


def add_click(x: torch.Tensor, i: int, y: float, xx: float, positive: bool, pp: Preprocess) -> bool:
    """Render one click of sample ``i`` into the normalised network input ``x`` in place.

    Args:
        x: ``(N, C, T, T)`` normalised inputs (:meth:`Preprocess.normalize`).
        i: the sample.
        y, xx: the click, in crop pixel indices.
        positive: joins the heatmap channel (3); else the negative channel (4).
        pp: the profile: blob size, how blobs combine, the heatmap normalisation.

    Returns:
        Whether the input changed (a negative click on a 4-channel input is only spent).
    """
    channel = 3 if positive else 4
    if channel >= x.shape[1]:
        return False
    mean, std = pp.mean[3], pp.std[3]
    pts = torch.tensor([[[y, xx]]], dtype=torch.float32, device=x.device)
    blob = gaussian_heatmaps(pts, pp.target_size, pp.blob_sigma, pp.heatmap_combine)[0].to(x.dtype)
    raw = x[i, channel] * std + mean
    raw = raw + blob if pp.heatmap_combine == "sum" else torch.maximum(raw, blob)
    x[i, channel] = (raw - mean) / std
    return True


@torch.no_grad()
def simulate_corrections(net: torch.nn.Module, batch: Dict[str, torch.Tensor], pp: Preprocess,
                         rounds: int, device: torch.device) -> torch.Tensor:
    """The batch's inputs after ``rounds`` rounds of simulated correction clicks.

    Args:
        net: the network being trained (put in eval mode for the rounds, then back).
        batch: a batch of :func:`~dextr_lib.training.loop.training_loader`: ``input``
            ``(N, C, T, T)``, ``target`` and ``valid`` ``(N, 1, T, T)``, ``points`` ``(N, 4, 2)``
            crop-space extreme points.
        pp: the model's pre-processing profile (threshold, blobs, normalisation).
        rounds: correction rounds (0 returns the input unchanged).
        device: where the network runs.

    Returns:
        ``(N, C, T, T)`` inputs on ``device``, with up to ``rounds`` clicks per sample (a sample
        whose prediction has no error left gets no more).
    """
    x = batch["input"].to(device).contiguous(memory_format=torch.channels_last)
    if rounds <= 0:
        return x
    gt = (batch["target"][:, 0] >= 0.5).numpy()
    ignore = (batch["valid"][:, 0] < 0.5).numpy()
    clicked: List[List[np.ndarray]] = [list(p) for p in batch["points"].numpy()]
    was_training = net.training
    net.eval()
    try:
        for _ in range(rounds):
            pred = (torch.sigmoid(net(x).float()[:, 0]) >= pp.threshold).cpu().numpy()
            for i in range(len(x)):
                click = next_click(gt[i], pred[i], ignore=ignore[i], clicked=clicked[i])
                if click is None:
                    continue
                clicked[i].append(np.array([click.y, click.x], dtype=np.float64))
                add_click(x, i, click.y, click.x, click.positive, pp)
    finally:
        net.train(was_training)
    return x
