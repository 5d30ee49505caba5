"""The normalization math, forward and backward, written once for every norm.

Every norm in this book is the same computation,

    y = weight * (x - mean) / sqrt(var + eps) + bias,

with the mean and the (biased) variance taken over a different set of axes:
BatchNorm over everything but the channel, LayerNorm over the trailing
features, InstanceNorm over space, GroupNorm over a group of channels and
space, and RMSNorm is LayerNorm without the mean.

The functions use only operations that NumPy arrays and torch tensors share
(`.mean(axis=, keepdims=)`, `.sum(...)`, `**`, `.reshape`), so the same lines
run in float64 NumPy for the derivations and gradient checks, and inside the
`torch.autograd.Function`s of `normlib.nn`.  Forward returns `(y, cache)`;
backward takes `(dy, cache)` and returns `(dx, dweight, dbias)`.  Nothing
returned or cached is modified later, and torch's autograd can trace both
directions (which is how `normlib.nn` differentiates the backward a second
time).

A few steps go through small helpers (`_steps.py`: `mean_square`,
`mean_times`, `project_out`, ...): on NumPy arrays, and on tensors autograd
records, each is the plain line of the formula; on other torch tensors it picks
torch's fused kernels (and reuses the function's own temporaries), which only
changes the speed.
"""
import math

from ._moments import merge_moments

# the steps torch has fused kernels for: each helper is also the plain line
# of the formula
from ._steps import (
    holds,
    masked_mean,
    mean_square,
    mean_times,
    project_out,
    scale_by,
    scale_shift,
    sum_to,
)

__all__ = ["normalize", "normalize_backward", "normalize_backward_graph",
           "batch_norm", "layer_norm", "rms_norm", "instance_norm",
           "group_norm", "merge_moments"]

def _check_eps(eps):
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got eps={eps}")


def _count(x, axes, mask):
    """How many values each statistic averages over (an array when masked)."""
    if mask is None:
        return math.prod(x.shape[a] for a in axes)
    return mask.sum(axis=axes, keepdims=True)


def normalize(x, axes, weight=None, bias=None, eps=1e-5, center=True,
              mask=None):
    """Normalize x over `axes`, then scale by `weight` and shift by `bias`.

    weight and bias broadcast against x.  center=False skips the mean
    (RMSNorm).  mask (0/1, broadcastable to x) keeps positions out of the
    statistics; the output there is 0 and so is the gradient.
    """
    _check_eps(eps)
    axes = tuple(a % x.ndim for a in axes)
    count = _count(x, axes, mask)
    mean = masked_mean(x, axes, mask, count) if center else None  # E[x]
    xc = x - mean if center else x                      # x - E[x]
    # E[(x - E[x])^2], two passes: stable
    var = mean_square(xc, axes, mask, count)
    rstd = (var + eps) ** -0.5                          # 1 / sqrt(var + eps)
    xhat = scale_by(xc, rstd, owned=center)             # (x - E[x]) * rstd
    if mask is not None:
        xhat = xhat * mask              # pads contribute nothing downstream
    # weight * xhat + bias, never xhat itself
    y = scale_shift(xhat, weight, bias)
    if mask is not None and bias is not None:
        y = y * mask
    cache = dict(xhat=xhat, rstd=rstd, weight=weight, axes=axes,
                 center=center, mask=mask, count=count, mean=mean, var=var,
                 eps=eps, x_shape=x.shape,
                 bias_shape=None if bias is None else bias.shape,
                 param_shape=next((p.shape for p in (weight, bias)
                                   if p is not None), None))
    return y, cache


def normalize_backward(dy, cache):
    """The compact backward of `normalize` (derived in chapter 2).

    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
    dxhat = dy * weight, where the means run over the normalized axes (and
    skip masked positions).

    Shown in chapter 2, "The backward pass in closed form", and chapter 3, "The
    backward pass: Chapter 2's formula, other axes".
    """
    xhat, rstd, weight = cache["xhat"], cache["rstd"], cache["weight"]
    axes, mask, count = cache["axes"], cache["mask"], cache["count"]
    dy = dy.reshape(xhat.shape)
    if mask is not None:
        dy = dy * mask
    dy_xhat = dy * xhat
    dweight = None if weight is None else sum_to(dy_xhat, weight.shape)
    bias_shape, param_shape = cache["bias_shape"], cache["param_shape"]
    dbias = None if bias_shape is None else sum_to(dy, bias_shape)
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    mean_dxhat = (mean_times(dy, weight, axes, mask, count)
                  if cache["center"] else 0)
    mean_dxhat_xhat = mean_times(dy_xhat, weight, axes, mask, count)
    dx = project_out(dy, weight, mean_dxhat, xhat, mean_dxhat_xhat, rstd,
                      out=dy_xhat)              # dy_xhat is spent: reuse it
    if mask is not None:
        dx = dx * mask
    if param_shape is not None:   # per-channel parameters: broadcast shape
        dweight = None if dweight is None else dweight.reshape(param_shape)
        dbias = None if dbias is None else dbias.reshape(param_shape)
    return dx.reshape(cache["x_shape"]), dweight, dbias


def normalize_backward_graph(dy, cache):
    """The same gradient, one node of the computation graph at a time.

    Derived in chapter 2. Read top to bottom: each line undoes one forward
    step, in reverse order. Unmasked, centered only; it exists to be
    compared with `normalize_backward`.

    Shown in chapter 2, "The backward pass, node by node".
    """
    xhat, rstd, weight = cache["xhat"], cache["rstd"], cache["weight"]
    axes, count = cache["axes"], cache["count"]
    var, eps = cache["var"], cache["eps"]
    dy = dy.reshape(xhat.shape)                # GroupNorm: (N, G, C/G, *S)
    xc = xhat / rstd                           # x - mean
    dxhat = dy if weight is None else dy * weight   # y = weight * xhat + b
    drstd = (dxhat * xc).sum(axis=axes, keepdims=True)  # xhat = xc * rstd
    dxc = dxhat * rstd                         #   (the xc branch)
    dvar = drstd * -0.5 * (var + eps) ** -1.5  # rstd = (var + eps)^(-1/2)
    dxc = dxc + dvar * 2 * xc / count          # var = mean(xc^2)
    dmean = -dxc.sum(axis=axes, keepdims=True)  # xc = x - mean
    dx = dxc + dmean / count                   # mean = mean(x)
    return dx.reshape(cache["x_shape"])


# ---- each norm is a choice of axes ---------------------------------------

def _per_channel(param, ndim, channel_axis, name):
    if param is None:
        return None
    if param.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one value per channel, "
                         f"got shape {tuple(param.shape)}")
    shape = [1] * ndim
    shape[channel_axis] = param.shape[0]
    return param.reshape(shape)


def _check_channels(x, channel_axis, weight, bias=None):
    if x.ndim < 2:
        raise ValueError(f"x must have a batch and a channel axis, "
                         f"got shape {tuple(x.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape[0] != x.shape[channel_axis]:
            raise ValueError(f"{name} has {p.shape[0]} values but x has "
                             f"{x.shape[channel_axis]} channels "
                             f"(axis {channel_axis})")


def batch_norm(x, weight=None, bias=None, eps=1e-5, mask=None, channel_axis=1):
    """BatchNorm: statistics per channel, over the batch and every other axis.

    mask (x's shape without the channel axis; True/1 = real value) leaves
    padding out of the statistics.
    """
    _check_channels(x, channel_axis, weight, bias)
    channel_axis %= x.ndim
    axes = tuple(a for a in range(x.ndim) if a != channel_axis)
    if mask is not None:
        expected = tuple(x.shape[a] for a in axes)
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask must have shape {expected} (x without "
                             f"its channel axis), got {tuple(mask.shape)}")
        mask = mask.reshape(tuple(1 if a == channel_axis else x.shape[a]
                                  for a in range(x.ndim)))
    count = math.prod(x.shape[a] for a in axes) if mask is None else mask.sum()
    # An empty batch passes, as in torch (its output is empty); an
    # all-padding one would divide 0 by 0 (not checked under vmap)
    if holds(count == 1) or (mask is not None and holds(count == 0)):
        raise ValueError(f"Expected more than 1 value per channel when "
                         f"training, got input size {tuple(x.shape)}"
                         + (" with the padding mask applied"
                            if mask is not None else ""))
    y, cache = normalize(x, axes,
                         _per_channel(weight, x.ndim, channel_axis, "weight"),
                         _per_channel(bias, x.ndim, channel_axis, "bias"),
                         eps, mask=mask)
    cache["param_shape"] = (x.shape[channel_axis],)
    return y, cache


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5,
               center=True):
    """LayerNorm: statistics per sample, over the trailing axes.

    Shown in chapter 3, "The forward pass: statistics per sample".
    """
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if k == 0 or tuple(x.shape[-k:]) != normalized_shape:
        raise ValueError(f"x must end in normalized_shape="
                         f"{list(normalized_shape)}, got shape "
                         f"{tuple(x.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != normalized_shape:
            raise ValueError(f"{name} must have shape {normalized_shape}, "
                             f"got {tuple(p.shape)}")
    return normalize(x, tuple(range(-k, 0)), weight, bias, eps, center=center)


def rms_norm(x, normalized_shape, weight=None, eps=1e-5):
    """RMSNorm: LayerNorm without subtracting the mean, and without a bias."""
    return layer_norm(x, normalized_shape, weight, None, eps, center=False)


def instance_norm(x, weight=None, bias=None, eps=1e-5):
    """InstanceNorm: statistics per sample and channel, over the spatial
    axes."""
    _check_channels(x, 1, weight, bias)
    if x.ndim < 3:
        raise ValueError(f"x must have spatial axes after (N, C), "
                         f"got shape {tuple(x.shape)}")
    y, cache = normalize(x, tuple(range(2, x.ndim)),
                         _per_channel(weight, x.ndim, 1, "weight"),
                         _per_channel(bias, x.ndim, 1, "bias"), eps)
    cache["param_shape"] = (x.shape[1],)
    return y, cache


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """GroupNorm: statistics per sample and group of channels, over the
    group and space.

    The channels are split into groups by a reshape
    (N, C, *S) -> (N, G, C/G, *S).
    """
    _check_channels(x, 1, weight, bias)
    n, c = x.shape[:2]
    if num_groups <= 0 or c % num_groups:
        raise ValueError(f"num_groups={num_groups} must be positive and "
                         f"divide the {c} channels")
    # N, G, C/G, *S
    grouped = x.reshape((n, num_groups, c // num_groups) + tuple(x.shape[2:]))
    param_shape = (1, num_groups, c // num_groups) + (1,) * (x.ndim - 2)
    weight_g = None if weight is None else weight.reshape(param_shape)
    bias_g = None if bias is None else bias.reshape(param_shape)
    y, cache = normalize(grouped, tuple(range(2, grouped.ndim)), weight_g,
                         bias_g, eps)
    cache["x_shape"], cache["param_shape"] = x.shape, (c,)
    return y.reshape(x.shape), cache
