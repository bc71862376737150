"""Write legacy model files for tests: ``dextr`` 0.1.2-style pickles and malicious pickles."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

FAKE_ROOT = Path(__file__).resolve().parent / "fake_dextr012"


@contextlib.contextmanager
def fake_dextr_package():
    """Make ``import dextr`` find the stand-in package, only inside the block."""
    saved = {k: v for k, v in sys.modules.items() if k == "dextr" or k.startswith("dextr.")}
    sys.path.insert(0, str(FAKE_ROOT))
    try:
        yield
    finally:
        sys.path.remove(str(FAKE_ROOT))
        for k in [k for k in sys.modules if k == "dextr" or k.startswith("dextr.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def write_dextr012_resunet18(path, *, target_size=64, padding=5, blob_sigma=4.0, seed=0):
    """Pickle a whole dextr-0.1.2-style ``DextrModel`` (resunet18 net) with ``torch.save``.

    BatchNorm statistics are randomised so that a wrong mapping of any buffer shows.

    Returns:
        The live network (an ``nn.Module`` whose forward returns ``{"out": logits}``).
    """
    with fake_dextr_package():
        from dextr.architectures.resunet import dextr_resunet18
        from dextr.model import DextrModel

        torch.manual_seed(seed)
        net = dextr_resunet18()
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        net.eval()
        torch.save(DextrModel(net, (target_size, target_size), padding, blob_sigma), path)
    return net


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def write_malicious_pickle(path):
    """A pickle whose loading would call ``os.system`` (it must be refused, never run)."""
    torch.save({"model": _Evil()}, path)
