"""The exercises of `normlib.check` on the per-sample norms: LayerNorm of a
Transformer's tokens, GroupNorm, RMSNorm.

Each exercise is normlib's answer written as the reader's function, a few
fixed inputs, and the usual wrong variants, each with its explanation as its
docstring.  The last input of LayerNorm and GroupNorm sits far from 0, where
the one-pass variance E[x^2] - E[x]^2 loses its digits.
"""
import numpy as np

from . import functional as F
from ._check_run import OFFSET, Case, Exercise, symptom

rng = np.random.default_rng(2019)    # fixed inputs, the same on every run


def normal(shape, scale=1.0, center=0.0):
    return center + scale * rng.normal(size=shape)


def standardize(x, axes, eps, ddof=0):
    mean = x.mean(axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axes, ddof=ddof, keepdims=True) + eps)


# ---- LayerNorm of a Transformer's activations (B, T, C), no affine -------

def token_layer_norm(x, eps):
    return F.layer_norm(x, x.shape[-1], eps=eps)[0]


def per_sentence(x, eps):
    """one mean and variance per sentence, over its T tokens and C
    features. LayerNorm in a Transformer normalizes each token on its own,
    over its C features (axis -1)."""
    return standardize(x, (1, 2), eps)


def across_words(x, eps):
    """statistics per sentence and feature, across the T words (InstanceNorm
    on (B, C, T)). A token's output would then depend on the other words,
    future ones included; LayerNorm averages over each token's C features."""
    return standardize(x, (1,), eps)


def batch_norm_axes(x, eps):
    """statistics per feature over the B * T tokens of the batch:
    BatchNorm's axes. LayerNorm averages over each token's C features."""
    return standardize(x, (0, 1), eps)


def unbiased_variance(x, eps):
    """the unbiased variance, divided by C - 1. LayerNorm normalizes with
    the biased one, divided by C."""
    return standardize(x, (-1,), eps, ddof=1)


def eps_outside_sqrt(x, eps):
    """eps added outside the square root, (x - mean) / (sqrt(var) + eps).
    The formula divides by sqrt(var + eps)."""
    xc = x - x.mean(-1, keepdims=True)
    return xc / (np.sqrt((xc ** 2).mean(-1, keepdims=True)) + eps)


@symptom
def one_pass_variance(x, eps):
    """the one-pass variance E[x^2] - E[x]^2, which loses most of its
    digits for values near 1e7 (two nearly equal numbers of about 1e14
    subtracted). Subtract the mean first: var = E[(x - E[x])^2]."""
    mean = x.mean(-1, keepdims=True)
    var = (x ** 2).mean(-1, keepdims=True) - mean ** 2
    return (x - mean) / np.sqrt(var + eps)


TOKEN_LAYER_NORM = Exercise(
    token_layer_norm,
    [Case((normal((3, 6, 8), 2.0, 1.0), 1e-5)),
     Case((normal((2, 4, 5), 0.05, -0.5), 1e-3)),
     Case((normal((4, 3, 16), 1.0, 0.5), 0.1)),
     Case((normal((2, 5, 8), 1.0, 1e7), 1e-5), **OFFSET)],
    [per_sentence, across_words, batch_norm_axes, unbiased_variance,
     eps_outside_sqrt, one_pass_variance])


# ---- GroupNorm, x of shape (N, C, H, W), no affine ------------------------

def group_norm(x, num_groups, eps):
    return F.group_norm(x, num_groups, eps=eps)[0]


def groups_interleaved(x, num_groups, eps):
    """the channels grouped in the wrong order: a reshape to (N, C // G, G,
    H, W) puts channels c, c + G, c + 2G, ... in one group. GroupNorm's
    groups are consecutive channels, the reshape (N, G, C // G, H, W)."""
    n, c, h, w = x.shape
    grouped = x.reshape(n, c // num_groups, num_groups, h, w)
    return standardize(grouped, (1, 3, 4), eps).reshape(x.shape)


def groups_without_space(x, num_groups, eps):
    """statistics over a group's channels at each position only. A group's
    statistics also run over H and W: axes (2, 3, 4) of (N, G, C // G, H,
    W)."""
    grouped = x.reshape(x.shape[0], num_groups, -1, *x.shape[2:])
    return standardize(grouped, (2,), eps).reshape(x.shape)


def unbiased_variance_groups(x, num_groups, eps):
    """the unbiased variance, divided by (C // G) * H * W - 1. GroupNorm
    normalizes with the biased one."""
    grouped = x.reshape(x.shape[0], num_groups, -1, *x.shape[2:])
    return standardize(grouped, (2, 3, 4), eps, ddof=1).reshape(x.shape)


def eps_outside_sqrt_groups(x, num_groups, eps):
    """eps added outside the square root, (x - mean) / (sqrt(var) + eps).
    The formula divides by sqrt(var + eps)."""
    grouped = x.reshape(x.shape[0], num_groups, -1, *x.shape[2:])
    xc = grouped - grouped.mean((2, 3, 4), keepdims=True)
    std = np.sqrt((xc ** 2).mean((2, 3, 4), keepdims=True))
    return (xc / (std + eps)).reshape(x.shape)


@symptom
def one_pass_variance_groups(x, num_groups, eps):
    """the one-pass variance E[x^2] - E[x]^2, which loses most of its
    digits for values near 1e7 (two nearly equal numbers of about 1e14
    subtracted). Subtract the mean first: var = E[(x - E[x])^2]."""
    grouped = x.reshape(x.shape[0], num_groups, -1, *x.shape[2:])
    mean = grouped.mean((2, 3, 4), keepdims=True)
    var = (grouped ** 2).mean((2, 3, 4), keepdims=True) - mean ** 2
    return ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)


GROUP_NORM = Exercise(
    group_norm,
    [Case((normal((2, 6, 3, 3), 2.0, 1.0), 3, 1e-5)),
     Case((normal((3, 8, 2, 2), 0.05, 0.5), 4, 1e-3)),
     Case((normal((2, 6, 2, 3), 1.0, -1.0), 2, 0.1)),
     Case((normal((2, 6, 2, 2), 1.0, 1e7), 3, 1e-5), **OFFSET)],
    [groups_interleaved, groups_without_space, unbiased_variance_groups,
     eps_outside_sqrt_groups, one_pass_variance_groups])


# ---- RMSNorm over the last axis, with a weight ---------------------------

def rms_norm(x, weight, eps):
    return F.rms_norm(x, x.shape[-1], weight, eps)[0]


def mean_subtracted(x, weight, eps):
    """the mean subtracted, which makes it LayerNorm without a bias.
    RMSNorm divides x itself by sqrt(mean(x^2) + eps)."""
    return weight * standardize(x, (-1,), eps)


def eps_outside_sqrt_rms(x, weight, eps):
    """eps added outside the square root, x / (sqrt(mean(x^2)) + eps).
    RMSNorm divides by sqrt(mean(x^2) + eps)."""
    return weight * x / (np.sqrt((x ** 2).mean(-1, keepdims=True)) + eps)


def sum_of_squares(x, weight, eps):
    """the sum of squares where the mean of squares belongs, so x is
    divided by its length |x|, not by its root mean square |x| / sqrt(C)."""
    return weight * x / np.sqrt((x ** 2).sum(-1, keepdims=True) + eps)


RMS_NORM = Exercise(
    rms_norm,
    [Case((normal((2, 5, 8), 2.0, 1.0), normal(8, 0.3, 1.0), 1e-5)),
     Case((normal((3, 4), 0.05, 0.02), normal(4, 0.3, 1.0), 1e-3)),
     Case((normal((4, 16), 1.0, 1.5), normal(16, 0.3, 1.0), 0.1))],
    [mean_subtracted, eps_outside_sqrt_rms, sum_of_squares])
