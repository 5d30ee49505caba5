"""Batch Renormalization (Ioffe 2017): BatchNorm whose training output is
corrected towards what the running statistics would give.

Imported by `normlib.nn`, which is where to find it.
"""
import torch

from . import functional as F
from ._autograd import compute_dtype, normalize
from ._batchnorm import BatchNorm1d, BatchNorm2d, BatchNormBase


class BatchRenormBase(BatchNormBase):
    """Batch Renormalization: in training,

        y = weight * (xhat * r + d) + bias,

    with xhat the batch-normalized input and, per channel, from the batch's
    mean and standard deviation mu_B, sigma_B = sqrt(var_B + eps) and the
    running ones mu, sigma = sqrt(running_var + eps) (before this batch
    moves them):

        r = clip(sigma_B / sigma, 1 / rmax, rmax)
        d = clip((mu_B - mu) / sigma, -dmax, dmax),

    both constants for the gradient (Algorithm 1's stop_gradient).  Where
    the clips are inactive, y is the eval-mode output, (x - mu) / sigma
    scaled and shifted.  In eval it is plain BatchNorm with the running
    statistics, and with rmax=1, dmax=0 (r = 1, d = 0) training is exactly
    BatchNorm too.

    The backward is BatchNorm's derived one: with r and d fixed,
    y = (weight * r) * xhat + (weight * d + bias), a BatchNorm whose weight
    is weight * r and whose bias is weight * d + bias.  `normalize_backward`
    gives dx (with weight * r) and the sums over the batch of dy * xhat and
    dy, which the chain rule through the two per-channel products turns
    into dweight = sum(dy * (xhat * r + d)) and dbias = sum(dy).

    The running statistics update as BatchNorm's (the running mean and
    unbiased variance).  The paper's Algorithm 1 keeps a moving average of
    sigma itself; Chainer's batch_renormalization departs from it in the
    same way, and says so.  BatchNorm's buffers make `state_dict`s
    interchangeable and rmax=1, dmax=0 exactly BatchNorm.

    Arguments as `RunningStatsNorm` (`track_running_stats` must be True:
    r and d need the running statistics), and, keyword only:

    - `rmax`: r is clipped to [1/rmax, rmax]; rmax >= 1.
    - `dmax`: d is clipped to [-dmax, dmax]; dmax >= 0.

    The defaults are the paper's final values, rmax=3, dmax=5.  Its
    Inception-v3 runs on ImageNet start as BatchNorm (rmax=1, dmax=0) for
    the first 5000 steps, then relax the bounds gradually, to rmax=3 at
    40k steps and dmax=5 at 25k.  Ramping is the caller's job: set
    `module.rmax` and `module.dmax` between steps (they are checked when
    set).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *,
                 bias=True, rmax=3.0, dmax=5.0):
        if not track_running_stats:
            raise ValueError("Batch Renormalization corrects the batch "
                             "statistics towards the running ones: "
                             "track_running_stats must be True, got False")
        super().__init__(num_features, eps, momentum, affine,
                         track_running_stats, device, dtype, bias=bias)
        self.rmax, self.dmax = rmax, dmax

    @property
    def rmax(self):
        return self._rmax

    @rmax.setter
    def rmax(self, value):
        if not value >= 1:
            raise ValueError(f"rmax must be >= 1 (r is clipped to "
                             f"[1/rmax, rmax]), got rmax={value}")
        self._rmax = value

    @property
    def dmax(self):
        return self._dmax

    @dmax.setter
    def dmax(self, value):
        if not value >= 0:
            raise ValueError(f"dmax must be >= 0 (d is clipped to "
                             f"[-dmax, dmax]), got dmax={value}")
        self._dmax = value

    def extra_repr(self):
        return f"{super().extra_repr()}, rmax={self.rmax}, dmax={self.dmax}"

    def _corrections(self, x):
        """r and d per channel, from this batch and the running statistics;
        constants (no graph)."""
        axes = tuple(a for a in range(x.ndim) if a != 1)
        dtype = compute_dtype(x)
        with torch.no_grad():
            var_batch, mean_batch = torch.var_mean(x.to(dtype), dim=axes,
                                                   correction=0)
            sigma_batch = (var_batch + self.eps).sqrt()      # sigma_B
            sigma = (self.running_var.to(dtype) + self.eps).sqrt()
            r = (sigma_batch / sigma).clamp(1 / self.rmax, self.rmax)
            d = ((mean_batch - self.running_mean.to(dtype)) / sigma).clamp(
                -self.dmax, self.dmax)
        return r, d

    def forward(self, input):
        """Batch Renormalization in training, BatchNorm with the running
        statistics in eval."""
        if not self.training or input.numel() == 0:
            # an empty batch: BatchNorm's (empty) output, averages untouched
            return super().forward(input)
        self._check_input_dim(input)
        self._check_input(input, None)
        factor = self._count_batch()
        r, d = self._corrections(input)
        # y = (weight * r) * xhat + (weight * d + bias)
        weight = r if self.weight is None else self.weight * r
        bias = d if self.weight is None else self.weight * d
        if self.bias is not None:
            bias = bias + self.bias
        stats = {}
        y = normalize(input, weight, bias, lambda x, w, b: F.batch_norm(
            x, w, b, self.eps), stats)
        self._update_running_stats(stats["mean"], stats["var"],
                                   stats["count"], factor)
        return y


class BatchRenorm1d(BatchRenormBase, BatchNorm1d):
    """Batch Renormalization over (N, C) or (N, C, L); BatchNorm1d's
    arguments plus `rmax` and `dmax` (see `BatchRenormBase`).

    torch has no such layer.
    """


class BatchRenorm2d(BatchRenormBase, BatchNorm2d):
    """Batch Renormalization over (N, C, H, W); BatchNorm2d's arguments plus
    `rmax` and `dmax` (see `BatchRenormBase`).

    torch has no such layer.
    """
