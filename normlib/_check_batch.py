"""The exercises of `normlib.check` on BatchNorm's forward pass: for (N, C),
for images, and for padded sequences.

Each exercise is normlib's answer written as the reader's function, a few
fixed inputs, and the usual wrong variants, each with its explanation as its
docstring.  The last input of each sits far from 0 (1e7 plus a spread of
about 1): there the one-pass variance E[x^2] - E[x]^2 keeps about two correct
digits, and a correct float64 function about nine.
"""
import numpy as np

from . import functional as F
from ._check_run import OFFSET, Case, Exercise, symptom

rng = np.random.default_rng(19)    # fixed inputs, the same on every run


def normal(shape, scale=1.0, center=0.0):
    return center + scale * rng.normal(size=shape)


# ---- BatchNorm's forward pass, x of shape (N, C) -------------------------

def batch_norm(x, gamma, beta, eps):
    return F.batch_norm(x, gamma, beta, eps)[0]


def unbiased_variance(x, gamma, beta, eps):
    """the unbiased variance (divided by N - 1) normalizes x. BN divides by
    N; the unbiased variance goes only into running_var."""
    return gamma * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps) + beta


def eps_outside_sqrt(x, gamma, beta, eps):
    """eps added outside the square root, (x - mean) / (sqrt(var) + eps).
    The formula divides by sqrt(var + eps)."""
    return gamma * (x - x.mean(0)) / (x.std(0) + eps) + beta


def layer_norm_axes(x, gamma, beta, eps):
    """statistics per sample, over its C features: LayerNorm's axes. BN
    takes one mean and one variance per channel, over the batch (axis 0)."""
    mean, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


@symptom
def one_pass_variance(x, gamma, beta, eps):
    """the one-pass variance E[x^2] - E[x]^2. It is right for values near
    0, but for values near 1e7 it subtracts two nearly equal numbers of
    about 1e14 and loses most of its digits. Subtract the mean first:
    var = E[(x - E[x])^2]."""
    var = (x ** 2).mean(0) - x.mean(0) ** 2
    return gamma * (x - x.mean(0)) / np.sqrt(var + eps) + beta


def _affine_cases(shapes):
    return [Case((normal(shape, scale, center), normal(shape[-1], 0.3, 1.0),
                  normal(shape[-1], 0.5), eps), **extra)
            for shape, scale, center, eps, extra in shapes]


BATCH_NORM = Exercise(
    batch_norm,
    _affine_cases([((8, 3), 2.0, 1.0, 1e-5, {}),
                   ((4, 5), 0.05, -1.0, 1e-3, {}),
                   ((32, 2), 1.0, 0.5, 0.1, {}),
                   ((16, 3), 1.0, 1e7, 1e-5, OFFSET)]),
    [unbiased_variance, eps_outside_sqrt, layer_norm_axes,
     one_pass_variance])


# ---- BatchNorm for images, x of shape (N, C, H, W) ------------------------

def batch_norm_2d(x, eps):
    return F.batch_norm(x, eps=eps)[0]


def _standardize(x, axes, eps, ddof=0):
    mean = x.mean(axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axes, ddof=ddof, keepdims=True) + eps)


def per_position(x, eps):
    """statistics over the batch only, one per channel and position:
    BatchNorm1d's axes on an image. Each then averages N values; BN for
    images averages over the batch and every position, N * H * W values."""
    return _standardize(x, (0,), eps)


def instance_norm_axes(x, eps):
    """statistics over each image's positions, per sample and channel:
    InstanceNorm. BN also averages over the batch; with N = 1 the two
    agree, and only then."""
    return _standardize(x, (2, 3), eps)


def layer_norm_axes_2d(x, eps):
    """statistics per sample over (C, H, W): LayerNorm's axes. BN keeps
    one statistic per channel, over (N, H, W)."""
    return _standardize(x, (1, 2, 3), eps)


def unbiased_variance_2d(x, eps):
    """the unbiased variance, divided by N * H * W - 1. BN normalizes with
    the biased one, divided by N * H * W."""
    return _standardize(x, (0, 2, 3), eps, ddof=1)


def eps_outside_sqrt_2d(x, eps):
    """eps added outside the square root, (x - mean) / (sqrt(var) + eps).
    The formula divides by sqrt(var + eps)."""
    xc = x - x.mean((0, 2, 3), keepdims=True)
    return xc / (np.sqrt((xc ** 2).mean((0, 2, 3), keepdims=True)) + eps)


@symptom
def one_pass_variance_2d(x, eps):
    """the one-pass variance E[x^2] - E[x]^2, which loses most of its
    digits for values near 1e7 (two nearly equal numbers of about 1e14
    subtracted). Subtract the mean first: var = E[(x - E[x])^2]."""
    mean = x.mean((0, 2, 3), keepdims=True)
    var = (x ** 2).mean((0, 2, 3), keepdims=True) - mean ** 2
    return (x - mean) / np.sqrt(var + eps)


BATCH_NORM_2D = Exercise(
    batch_norm_2d,
    [Case((normal((4, 3, 5, 5), 2.0, 1.0), 1e-5)),
     Case((normal((2, 2, 3, 3), 0.05, 0.5), 1e-3)),
     Case((normal((1, 3, 4, 4), 1.0, -0.5), 1e-5)),       # one image
     Case((normal((4, 2, 3, 3), 1.0, 1e7), 1e-5), **OFFSET)],
    [per_position, instance_norm_axes, layer_norm_axes_2d,
     unbiased_variance_2d, eps_outside_sqrt_2d, one_pass_variance_2d])


# ---- BatchNorm of a padded batch (B, T, C); pad_mask (B, T) True at pads --

def masked_batch_norm(x, pad_mask, eps):
    return F.batch_norm(x, eps=eps, mask=~pad_mask, channel_axis=-1)[0]


def pads_counted(x, pad_mask, eps):
    """the pads counted in the statistics, as BN without a mask does. The
    mean and variance must be those of the real tokens alone."""
    return _standardize(x, (0, 1), eps)


def pads_zeroed_then_counted(x, pad_mask, eps):
    """the pads set to 0 and then counted. Zeroing a pad does not take it
    out of the mean and variance: the count still includes it."""
    return _standardize(np.where(pad_mask[..., None], 0.0, x), (0, 1), eps)


def count_includes_pads(x, pad_mask, eps):
    """sums over the real tokens divided by B * T, every position. Divide
    by the number of real tokens instead."""
    real = ~pad_mask[..., None]
    mean = (x * real).sum((0, 1)) / pad_mask.size
    var = ((x - mean) ** 2 * real).sum((0, 1)) / pad_mask.size
    return (x - mean) / np.sqrt(var + eps)


@symptom
def one_pass_masked(x, pad_mask, eps):
    """the one-pass variance E[x^2] - E[x]^2, which loses most of its
    digits for values near 1e7 (two nearly equal numbers of about 1e14
    subtracted). Subtract the mean first: var = E[(x - E[x])^2]."""
    real = ~pad_mask[..., None]
    count = real.sum()
    mean = (x * real).sum((0, 1)) / count
    var = (x ** 2 * real).sum((0, 1)) / count - mean ** 2
    return (x - mean) / np.sqrt(var + eps)


def _padded(lengths, steps, channels, center):
    pad_mask = np.arange(steps) >= np.array(lengths)[:, None]    # B, T
    x = normal((len(lengths), steps, channels), 1.5, center)
    x[pad_mask] = normal(channels, 1.0, 3.0)          # one pad embedding
    return x, pad_mask


MASKED_BATCH_NORM = Exercise(
    masked_batch_norm,
    [Case((*_padded([6, 2, 4], 6, 3, 0.5), 1e-5)),
     Case((*_padded([3, 5], 5, 4, -1.0), 1e-3)),
     Case((*_padded([4, 1, 2, 3], 4, 2, 1e7), 1e-5), **OFFSET)],
    [pads_counted, pads_zeroed_then_counted, count_includes_pads,
     one_pass_masked],
    compare_at=lambda x, pad_mask, eps: ~pad_mask[..., None])
