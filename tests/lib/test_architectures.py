"""Architecture registry: every registered network builds and maps (N, 4, T, T) -> (N, 1, T, T)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import dextr_lib
from dextr_lib.errors import UnknownNameError
from dextr_lib.weights.architectures import build_network, list_architectures, register_architecture
from dextr_lib.weights.architectures._utils import adapt_input_conv

FAST = {"resunet18", "resunet34"}  # CPU-cheap; the others are marked slow


def _params():
    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in list_architectures()]


@pytest.mark.parametrize("name", _params())
def test_every_architecture_builds_and_runs_a_forward(name):
    torch.manual_seed(0)
    net = build_network(name).eval()
    with torch.inference_mode():
        out = net(torch.randn(2, 4, 64, 64))
    assert out.shape == (2, 1, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    enc = list(net.encoder_parameters())
    assert 0 < sum(p.numel() for p in enc) < sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_architectures_accept_sizes_not_divisible_by_32(name):
    net = build_network(name).eval()
    with torch.inference_mode():
        assert net(torch.randn(1, 4, 72, 72)).shape == (1, 1, 72, 72)


def test_registry_lists_the_issue_architectures_and_filters():
    assert {"resunet18", "resunet34", "resunet50", "resunet101", "deeplab3", "denseunet161"} <= set(
        list_architectures())
    assert list_architectures("resunet*") == sorted(n for n in list_architectures() if n.startswith("resunet"))
    assert dextr_lib.list_models() == list_architectures()


def test_unknown_architecture_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as e:
        build_network("resunet19")
    assert "resunet19" in str(e.value)
    assert all(n in str(e.value) for n in list_architectures())


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("resunet18")(lambda **kw: nn.Identity())


def test_adapt_input_conv_reuses_rgb_kernels():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    new = adapt_input_conv(conv, 4)
    assert new.in_channels == 4
    torch.testing.assert_close(new.weight[:, :3], conv.weight)
    torch.testing.assert_close(new.weight[:, 3:], conv.weight.mean(dim=1, keepdim=True))
    torch.testing.assert_close(new.bias, conv.bias)
    x = torch.randn(1, 3, 9, 9)
    # With a zero heatmap the adapted conv sees exactly what the RGB conv saw.
    torch.testing.assert_close(new(torch.cat([x, torch.zeros(1, 1, 9, 9)], 1)), conv(x))


def test_resunet_uses_four_input_channels():
    net = build_network("resunet18")
    assert net.base_model.conv1.in_channels == 4
