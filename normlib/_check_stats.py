"""The exercises of `normlib.check` on BatchNorm's statistics beyond one
batch: the running statistics, and the shares of several processes merged
(SyncBatchNorm).  Each wrong variant's docstring says what is wrong.
"""
import numpy as np
import torch

from . import functional as F
from . import nn
from ._check_run import OFFSET, Case, Exercise, symptom

rng = np.random.default_rng(1019)    # fixed inputs, the same on every run


def normal(shape, scale=1.0, center=0.0):
    return center + scale * rng.normal(size=shape)


# ---- running statistics: one training step's update ----------------------

def update_running_stats(running_mean, running_var, x, momentum):
    layer = nn.BatchNorm1d(x.shape[1], momentum=momentum, affine=False,
                           dtype=torch.float64)
    layer.running_mean.copy_(torch.from_numpy(running_mean))
    layer.running_var.copy_(torch.from_numpy(running_var))
    with torch.no_grad():
        layer(torch.from_numpy(x))
    return layer.running_mean.numpy(), layer.running_var.numpy()


def biased_variance(running_mean, running_var, x, momentum):
    """running_var updated with the biased batch variance (divided by N).
    PyTorch normalizes with the biased variance but keeps the unbiased one,
    divided by N - 1, in running_var."""
    return ((1 - momentum) * running_mean + momentum * x.mean(0),
            (1 - momentum) * running_var + momentum * x.var(0))


def keras_momentum(running_mean, running_var, x, momentum):
    """Keras's momentum convention, momentum * running + (1 - momentum) *
    batch. In PyTorch momentum is the weight of the new batch: (1 -
    momentum) * running + momentum * batch."""
    return (momentum * running_mean + (1 - momentum) * x.mean(0),
            momentum * running_var + (1 - momentum) * x.var(0, ddof=1))


RUNNING_STATS = Exercise(
    update_running_stats,
    [Case((normal(3, 0.5), normal(3, 0.2, 1.0), normal((4, 3), 2.0, 1.0),
           0.1)),
     Case((normal(2, 1.0), normal(2, 0.2, 2.0), normal((8, 2), 1.0), 0.3))],
    [biased_variance, keras_momentum],
    outputs=("running_mean", "running_var"))


# ---- merging the shares of P processes (SyncBatchNorm's statistics) ------

def merge_shares(counts, means, variances):
    count, mean, m2 = F.merge_moments(counts, means,
                                      variances * counts[:, None])
    return mean, m2 / count


def means_averaged(counts, means, variances):
    """the shares' means and variances averaged as equals. A share of 1 row
    then counts as much as one of 30, and the spread between the shares'
    means is left out: weight each share by its count, and add the spread
    of its mean about the global mean."""
    return means.mean(0), variances.mean(0)


def spread_left_out(counts, means, variances):
    """the variances averaged with the counts as weights, but the spread of
    the shares' means about the global mean left out: add counts * (means
    - mean)^2 to the sum before dividing by the total count."""
    weights = counts[:, None] / counts.sum()
    return (weights * means).sum(0), (weights * variances).sum(0)


@symptom
def sums_of_squares(counts, means, variances):
    """the global variance from sums of squares, E[x^2] - E[x]^2. It is
    right for means near 0, but for means near 1e7 it subtracts two nearly
    equal numbers of about 1e14 and loses most of its digits. Merge the
    deviations instead, as merge_moments does."""
    weights = counts[:, None] / counts.sum()
    mean = (weights * means).sum(0)
    return mean, (weights * (variances + means ** 2)).sum(0) - mean ** 2


def _shares(counts, spread, center):
    counts = np.array(counts, dtype=float)
    variances = rng.uniform(0.5, 2.0, size=(len(counts), 3))
    variances[counts == 1] = 0.0                 # one row: no spread
    return counts, normal((len(counts), 3), spread, center), variances


MERGE_SHARES = Exercise(
    merge_shares,
    [Case(_shares([7, 1, 12, 30], 2.0, 0.0)),
     Case(_shares([5, 20], 1.0, 3.0)),
     Case(_shares([4, 9, 2], 1.0, 1e7), **OFFSET)],
    [means_averaged, spread_left_out, sums_of_squares],
    outputs=("mean", "var"))
