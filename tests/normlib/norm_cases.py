"""The module table the benchmark (benchmarks/bench_norms.py) and the
mixed-precision test share, and the error they both report.

Each entry makes the normlib module or its torch.nn twin from the same
constructor arguments (normlib's SequenceBatchNorm is left out: torch has no
twin).
"""
import contextlib
import warnings

import torch
from torch import nn

import normlib.nn as ours

# name: constructor args, input shape timed by the benchmark, a small shape
# for tests
MODULES = {
    "BatchNorm1d": ((512,), (256, 512), (64, 32)),
    "BatchNorm2d": ((64,), (32, 64, 28, 28), (8, 16, 6, 6)),
    "InstanceNorm2d": ((64,), (32, 64, 28, 28), (8, 16, 6, 6)),
    "LayerNorm": ((512,), (32, 128, 512), (8, 16, 64)),
    "GroupNorm": ((8, 64), (32, 64, 28, 28), (8, 16, 6, 6)),
    "RMSNorm": ((512,), (32, 128, 512), (8, 16, 64)),
}
SMALL_ARGS = {"BatchNorm1d": (32,), "BatchNorm2d": (16,),
              "InstanceNorm2d": (16,), "LayerNorm": (64,),
              "GroupNorm": (4, 16), "RMSNorm": (64,)}


def make(library, name, small=False, **kwargs):
    """normlib's (library=ours) or torch's (library=torch.nn) module `name`,
    in train mode."""
    args = SMALL_ARGS[name] if small else MODULES[name][0]
    return getattr(library, name)(*args, **kwargs).train()


def relative_error(a, reference):
    return float((a.double() - reference).norm()
                 / reference.norm().clamp_min(1e-300))


def precision_errors(name, dtype, seed=0, small=True):
    """Relative error of y, dx and dweight of a half-precision input with
    float32 parameters, against float64.

    Returns {"normlib": (y, dx, dweight), "torch": (...)}; the float64
    reference runs torch's module in float64 on the same (already rounded)
    input, parameters and upstream gradient.
    """
    shape = MODULES[name][2 if small else 1]
    generator = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(shape, generator=generator) + 1).to(dtype)
    dy = torch.randn(shape, generator=generator).to(dtype)
    kwargs = {"affine": True} if name.startswith("Instance") else {}
    weight = 1 + 0.5 * torch.randn(
        make(nn, name, small, **kwargs).weight.shape, generator=generator)
    results = {}
    for label, library, x_dtype in (("float64", nn, torch.float64),
                                    ("normlib", ours, dtype),
                                    ("torch", nn, dtype)):
        module = make(library, name, small, **kwargs).to(
            torch.float64 if x_dtype == torch.float64 else torch.float32)
        with torch.no_grad():
            module.weight.copy_(weight)
        xi = x.to(x_dtype, copy=True).requires_grad_()
        with (warnings.catch_warnings() if label == "torch"
              else contextlib.nullcontext()):
            # torch's RMSNorm: a float32 weight takes it off its fused kernel
            warnings.simplefilter("ignore")
            y = module(xi)
            y.backward(dy.to(x_dtype))
        assert y.dtype == x_dtype and xi.grad.dtype == x_dtype, label
        results[label] = (y.detach(), xi.grad, module.weight.grad)
    reference = results.pop("float64")
    return {label: tuple(relative_error(a, r) for a, r in zip(got, reference))
            for label, got in results.items()}
