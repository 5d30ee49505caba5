"""normlib._steps: the fused torch steps give what the plain formula gives.

Below `_steps.FUSED_FROM` elements the plain lines run (the other tests use
small tensors), so here the threshold is moved to 0 and every module is
compared with itself on the plain path, in float64.
"""
import pytest
import torch

from normlib import _steps
from normlib import nn as ours

CASES = [
    ("BatchNorm1d", (5,), {}, (7, 5)),
    ("BatchNorm1d", (5,), {"affine": False}, (7, 5, 3)),
    ("BatchNorm2d", (4,), {}, (3, 4, 5, 5)),
    ("SequenceBatchNorm", (6,), {}, (3, 5, 6)),
    ("InstanceNorm2d", (4,), {"affine": True}, (3, 4, 5, 5)),
    ("LayerNorm", (6,), {}, (3, 5, 6)),
    ("LayerNorm", ((5, 6),), {"bias": False}, (3, 5, 6)),
    ("GroupNorm", (2, 4), {}, (3, 4, 5, 5)),
    ("RMSNorm", (6,), {}, (3, 5, 6)),
]


def outputs(name, args, kwargs, shape, fused_from, monkeypatch):
    monkeypatch.setattr(_steps, "FUSED_FROM", fused_from)
    torch.manual_seed(0)
    module = getattr(ours, name)(*args, **kwargs, dtype=torch.float64).train()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = module(x)
    y.backward(torch.randn_like(y))
    return ([y.detach(), x.grad] + [p.grad for p in module.parameters()]
            + list(module.buffers()))


@pytest.mark.parametrize("name, args, kwargs, shape", CASES,
                         ids=lambda c: str(c))
def test_fused_steps_equal_the_plain_formula(name, args, kwargs, shape,
                                             monkeypatch):
    fused = outputs(name, args, kwargs, shape, 0, monkeypatch)
    plain = outputs(name, args, kwargs, shape, float("inf"), monkeypatch)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
