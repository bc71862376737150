"""The tests' small model, made the same way wherever a test needs a fresh one."""
from __future__ import annotations

import torch


def new_tiny_model():
    """A randomly initialised resunet18 at target size 64, seeded (always the same weights), in
    eval mode on the CPU."""
    import dextr_lib  # after the conftest has isolated DEXTR_HOME/TORCH_HOME

    torch.manual_seed(0)
    return dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)


class _NegativesCut(torch.nn.Module):
    """A network whose logits drop steeply around negative clicks: its mask is the inner
    network's minus a disc at each negative click, a known effect to test corrections against."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) - 20.0 * x[:, 4:5]


def negatives_cut_model():
    """:func:`new_tiny_model` with a negative-click channel (``takes_negatives``) that removes
    the pixels around each negative click from the mask (a deterministic stand-in for a
    fine-tuned model: the tiny random one ignores its zero-initialised channel)."""
    model = new_tiny_model().add_negative_channel()
    model.net = _NegativesCut(model.net)
    return model
