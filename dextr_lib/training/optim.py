"""The optimiser and its learning-rate schedule."""
from __future__ import annotations

import math

import torch

from ..config import LR_SCHEDULES, TrainSettings
from ..errors import ConfigError


def lr_factor(schedule: str, iteration: int, total_iters: int, power: float = 0.9) -> float:
    """Learning-rate multiplier at ``iteration`` (0-based) of ``total_iters``.

    ``none``: 1; ``cosine``: ``(1 + cos(pi * t)) / 2``; ``poly``: ``(1 - t) ** power``, with
    ``t = iteration / total_iters`` clamped to ``[0, 1]``. A job extended on resume (more epochs)
    follows the curve of its new length from the iteration it stopped at.
    """
    t = min(max(iteration / max(total_iters, 1), 0.0), 1.0)
    if schedule == "none":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "poly":
        return (1.0 - t) ** power
    raise ConfigError(f"unknown lr schedule {schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")


def make_optimizer(net: torch.nn.Module, s: TrainSettings, *, finetune: bool = False) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, Nesterov, weight decay) or Adam, with an encoder and a new-layer group.

    ``net`` is a DEXTR network: its ``encoder_parameters()`` form the encoder group.

    The encoder learns at ``learning_rate * pretrained_lr_factor``; the new layers at
    ``learning_rate``, or, when ``finetune`` (every layer is trained already), at the encoder's rate.
    """
    enc_ids = {id(p) for p in net.encoder_parameters()}
    params = [p for p in net.parameters() if p.requires_grad]
    new_factor = s.pretrained_lr_factor if finetune else 1.0
    groups = [
        {"params": [p for p in params if id(p) in enc_ids], "lr": s.learning_rate * s.pretrained_lr_factor, "name": "encoder"},
        {"params": [p for p in params if id(p) not in enc_ids], "lr": s.learning_rate * new_factor, "name": "new"},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["initial_lr"] = g["lr"]
    if s.opt_type == "sgd":
        return torch.optim.SGD(groups, lr=s.learning_rate, momentum=0.9, nesterov=True,
                               weight_decay=s.sgd_weight_decay)
    return torch.optim.Adam(groups, lr=s.learning_rate)


def set_lr(optimizer: torch.optim.Optimizer, s: TrainSettings, iteration: int, total_iters: int) -> None:
    """Apply the schedule's factor at ``iteration`` to every group's initial rate."""
    fac = lr_factor(s.lr_sched, iteration, total_iters, s.lr_poly_power)
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * fac
