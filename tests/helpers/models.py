"""The tests' small model, made the same way wherever a test needs a fresh one."""
from __future__ import annotations

import torch


def new_tiny_model():
    """A randomly initialised resunet18 at target size 64, seeded (always the same weights), in
    eval mode on the CPU."""
    import dextr_lib  # after the conftest has isolated DEXTR_HOME/TORCH_HOME

    torch.manual_seed(0)
    return dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)
