"""Chapter 12, "What norms cost": a norm's numerics, three ways to compute a
variance in float32, and norms in bfloat16.

The variance algorithms work on the rows of a 2-D array, in the array's own
precision; `low_precision_layer_norm` accumulates its statistics in a chosen
dtype, to show why frameworks accumulate a half-precision norm in float32.
"""
import warnings

import numpy as np
import torch
from torch import nn

import normlib.nn as ours


def one_pass_var(x):
    """Var of each row as E[x^2] - E[x]^2: one pass over x, in x's dtype
    (cancels at large offsets)."""
    return np.mean(x * x, axis=1) - np.mean(x, axis=1) ** 2


def two_pass_var(x):
    """Var of each row as E[(x - E[x])^2]: a first pass for the mean, a second
    for the deviations."""
    return np.mean((x - np.mean(x, axis=1, keepdims=True)) ** 2, axis=1)


def welford_var(x):
    """Var of each row by Welford's update, one value at a time, in x's dtype
    (one pass, no cancellation).

    After k values: mean_k = mean_{k-1} + (x_k - mean_{k-1}) / k and
    m2_k = m2_{k-1} + (x_k - mean_{k-1}) (x_k - mean_k); the variance is
    m2_n / n.
    """
    mean = np.zeros(x.shape[0], x.dtype)
    m2 = np.zeros(x.shape[0], x.dtype)
    for k in range(x.shape[1]):
        delta = x[:, k] - mean
        mean = mean + delta / x.dtype.type(k + 1)
        m2 = m2 + delta * (x[:, k] - mean)
    return m2 / x.dtype.type(x.shape[1])


VARIANCES = {"one-pass": one_pass_var, "two-pass": two_pass_var,
             "Welford": welford_var}


def offset_rows(offset, rows=64, width=512, seed=0):
    """float32 rows of offset + standard normal noise, (rows, width)."""
    rng = np.random.default_rng(seed)
    return (offset + rng.standard_normal((rows, width))).astype(np.float32)


def variance_errors(offsets, rows=64, width=512, seed=0):
    """{algorithm: [(median relative error, fraction of negative variances)
    per offset]}, float32.

    The reference is the float64 variance of the same float32 numbers.
    """
    result = {name: [] for name in VARIANCES}
    for offset in offsets:
        x = offset_rows(offset, rows, width, seed)
        reference = two_pass_var(x.astype(np.float64))
        for name, var in VARIANCES.items():
            got = var(x).astype(np.float64)
            error = np.abs(got - reference) / reference
            result[name].append((float(np.median(error)),
                                 float(np.mean(got < 0))))
    return result


# The norms that torch_norm_errors and bf16_errors compare: (name in torch.nn
# and normlib.nn, args, input shape).
NORM_CASES = (("LayerNorm", (512,), (64, 512)),
              ("RMSNorm", (512,), (64, 512)),
              ("BatchNorm2d", (64,), (16, 64, 8, 8)),
              ("GroupNorm", (8, 64), (16, 64, 8, 8)))


def _relative_error(a, reference):
    return float((a.double() - reference).norm() / reference.norm())


def torch_norm_errors(offset, seed=0):
    """Relative error of y, float32 against float64, at x = offset + noise:
    torch's and normlib's norms.

    Layer/RMS norms take (64, 512) rows; Batch/Group norms a (16, 64, 8, 8)
    batch.
    """
    errors = {}
    for name, args, shape in NORM_CASES:
        generator = torch.Generator().manual_seed(seed)
        x = (offset + torch.randn(shape, generator=generator,
                                  dtype=torch.float64)).float()
        reference = getattr(nn, name)(*args).double()(x.double()).detach()
        errors[name] = {
            label: _relative_error(getattr(lib, name)(*args)(x).detach(),
                                   reference)
            for label, lib in (("torch", nn), ("normlib", ours))}
    return errors


def low_precision_layer_norm(x, dtype):
    """LayerNorm of each row with the sums of its statistics accumulated one
    value at a time in `dtype`.

    The input and output are x's dtype; only the accumulators change.  This is
    what a kernel that keeps its running sums in bfloat16 would compute.
    """
    total = torch.zeros(x.shape[:-1], dtype=dtype)
    for k in range(x.shape[-1]):
        total = total + x[..., k].to(dtype)
    mean = (total / x.shape[-1]).unsqueeze(-1)
    squares = torch.zeros(x.shape[:-1], dtype=dtype)
    for k in range(x.shape[-1]):
        squares = squares + (x[..., k].to(dtype) - mean[..., 0]) ** 2
    var = (squares / x.shape[-1]).unsqueeze(-1)
    return ((x.to(dtype) - mean) * torch.rsqrt(var + 1e-5)).to(x.dtype)


def bf16_errors(offset=1.0, seed=0):
    """Relative errors against float64, for bfloat16 inputs (float32
    parameters), per norm and library.

    {name: {"torch": (y, dx), "normlib": (y, dx)}}, plus {"rounding": y} (the
    float64 answer rounded to bfloat16: the error no bfloat16 output can
    avoid) and {"LayerNorm, bf16 sums": y}.
    """
    errors = {}
    for name, args, shape in NORM_CASES:
        generator = torch.Generator().manual_seed(seed)
        x = (offset + torch.randn(shape, generator=generator)).bfloat16()
        dy = torch.randn(shape, generator=generator).bfloat16()
        x64 = x.double().requires_grad_()
        y64 = getattr(nn, name)(*args).double()(x64)
        y64.backward(dy.double())
        errors[name] = {}
        for label, lib in (("torch", nn), ("normlib", ours)):
            xi = x.clone().requires_grad_()
            # torch's RMSNorm: a float32 weight is off its fused path
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y = getattr(lib, name)(*args)(xi)
                y.backward(dy)
            errors[name][label] = (_relative_error(y.detach(), y64.detach()),
                                   _relative_error(xi.grad, x64.grad))
        errors[name]["rounding"] = _relative_error(y64.detach().bfloat16(),
                                                   y64.detach())
    x = (offset + torch.randn(
        64, 512, generator=torch.Generator().manual_seed(seed))).bfloat16()
    reference = nn.functional.layer_norm(x.double(), (512,))
    errors["LayerNorm, bf16 sums"] = _relative_error(
        low_precision_layer_norm(x, torch.bfloat16), reference)
    errors["LayerNorm, float32 sums"] = _relative_error(
        low_precision_layer_norm(x, torch.float32), reference)
    return errors


def autocast_dtypes():
    """The dtype each functional norm returns inside torch.autocast("cpu",
    bfloat16), for a float32 input and for the bfloat16 output of a
    Linear/Conv2d (as in a network).  {name: (from float32, after layer)}."""
    torch.manual_seed(0)
    seq, img = torch.randn(4, 8, 32), torch.randn(4, 16, 4, 4)
    linear, conv = nn.Linear(32, 32), nn.Conv2d(16, 16, 1)
    calls = {
        "layer_norm": (seq, linear, lambda t: nn.functional.layer_norm(
            t, (32,), torch.ones(32), torch.zeros(32))),
        "rms_norm": (seq, linear, lambda t: nn.functional.rms_norm(t, (32,))),
        "group_norm": (img, conv, lambda t: nn.functional.group_norm(
            t, 4, torch.ones(16), torch.zeros(16))),
        "batch_norm": (img, conv, lambda t: nn.functional.batch_norm(
            t, None, None, torch.ones(16), torch.zeros(16), training=True)),
    }
    result = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, (x, layer, norm) in calls.items():
            result[name] = (norm(x).dtype, norm(layer(x)).dtype)
        result["linear"] = (linear(seq).dtype, None)
    return result
