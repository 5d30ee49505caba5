"""Checkers for the book's coding exercises: each runs the reader's function
on fixed inputs, compares it in float64 with normlib, prints pass or fail
with the relative error, and on a failure names the usual mistake that the
function's output matches, if it matches one.

Write the function with NumPy or with torch.  It first gets NumPy float64
arrays; if it fails on them with a TypeError or an AttributeError, as torch
code handed an array does, it gets torch float64 tensors instead.  It must
return the kind it got, in float64, with the shapes normlib returns.  A stub
that raises NotImplementedError is "not implemented yet"; another error, a
wrong shape or a wrong dtype is reported in one line.  Every checker returns
its `Verdict`, which is true when the function passed.
"""
from ._check_backward import (
    BATCH_NORM_BACKWARD,
    LAYER_NORM_BACKWARD,
    RMS_NORM_BACKWARD,
)
from ._check_batch import BATCH_NORM, BATCH_NORM_2D, MASKED_BATCH_NORM
from ._check_run import Verdict, run
from ._check_sample import GROUP_NORM, RMS_NORM, TOKEN_LAYER_NORM
from ._check_stats import MERGE_SHARES, RUNNING_STATS

__all__ = ["Verdict", "token_layer_norm", "group_norm", "batch_norm_forward",
           "batch_norm_backward", "running_stats", "layer_norm_backward",
           "rms_norm", "rms_norm_backward", "batch_norm_2d",
           "masked_batch_norm", "merge_shares"]


def token_layer_norm(fn):
    """Check `fn(x, eps) -> y`: LayerNorm without weight and bias for a
    Transformer's activations x of shape (B, T, C).

    Shown in chapter 1, "Exercises in code".
    """
    return run(fn, TOKEN_LAYER_NORM)


def group_norm(fn):
    """Check `fn(x, num_groups, eps) -> y`: GroupNorm without weight and
    bias for x of shape (N, C, H, W).

    Shown in chapter 1, "Exercises in code".
    """
    return run(fn, GROUP_NORM)


def batch_norm_forward(fn):
    """Check `fn(x, gamma, beta, eps) -> y`: BatchNorm in training mode for
    x of shape (N, C), gamma and beta of shape (C,).  Returning `(y, cache)`
    is fine too.

    Shown in chapter 2, "Exercises in code".
    """
    return run(fn, BATCH_NORM)


def batch_norm_backward(fn):
    """Check `fn(dy, cache) -> (dx, dgamma, dbeta)`: BatchNorm's backward
    for x of shape (N, C), on the cache of `functional.batch_norm`.

    Shown in chapter 2, "Exercises in code".
    """
    return run(fn, BATCH_NORM_BACKWARD)


def running_stats(fn):
    """Check `fn(running_mean, running_var, x, momentum) -> (running_mean,
    running_var)`: one training step's update of BatchNorm's running
    statistics, with PyTorch's conventions, for x of shape (N, C).

    Shown in chapter 2, "Exercises in code".
    """
    return run(fn, RUNNING_STATS)


def layer_norm_backward(fn):
    """Check `fn(dy, cache) -> (dx, dgamma, dbeta)`: LayerNorm's backward
    for x of shape (B, T, C), on the cache of `functional.layer_norm`.

    Shown in chapter 3, "Exercises in code".
    """
    return run(fn, LAYER_NORM_BACKWARD)


def rms_norm(fn):
    """Check `fn(x, weight, eps) -> y`: RMSNorm over the last axis of x,
    weight of shape (C,).

    Shown in chapter 3, "Exercises in code".
    """
    return run(fn, RMS_NORM)


def rms_norm_backward(fn):
    """Check `fn(dy, cache) -> (dx, dweight)`: RMSNorm's backward for x of
    shape (B, T, C), on the cache of `functional.rms_norm`.

    Shown in chapter 3, "Exercises in code".
    """
    return run(fn, RMS_NORM_BACKWARD)


def batch_norm_2d(fn):
    """Check `fn(x, eps) -> y`: BatchNorm in training mode, without weight
    and bias, for images x of shape (N, C, H, W).

    Shown in chapter 4, "Exercises in code".
    """
    return run(fn, BATCH_NORM_2D)


def masked_batch_norm(fn):
    """Check `fn(x, pad_mask, eps) -> y`: BatchNorm without weight and bias
    for a padded batch x of shape (B, T, C), with the statistics of the
    real tokens only; pad_mask (B, T) is True at the pads, where y is not
    checked.

    Shown in chapter 5, "Exercises in code".
    """
    return run(fn, MASKED_BATCH_NORM)


def merge_shares(fn):
    """Check `fn(counts, means, variances) -> (mean, var)`: the statistics
    of a whole batch from those of its P shares.  counts (P,) holds each
    share's number of rows, means and variances (P, C) its statistics per
    channel, the variance biased (divided by the count), as the result.

    Shown in chapter 11, "Exercises in code".
    """
    return run(fn, MERGE_SHARES)
