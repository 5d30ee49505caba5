"""Weight Standardization (Qiao et al. 2019): a convolution whose filters are
standardized, each to zero mean and unit variance, before they are used.

Imported by `normlib.nn`, which is where to find it.
"""
import torch
from torch import nn

from . import functional as F
from ._autograd import check_eps, compute_dtype, normalize


def standardize_weight(weight, eps=1e-5):
    """Each output channel's filter of `weight` (C_out, C_in / groups, kH, kW)
    minus its mean, divided by sqrt(its unbiased variance + eps).

    The unbiased variance is n / (n - 1) times the biased one that
    `functional.normalize` takes (n = C_in / groups * kH * kW values per
    filter), so

        (W - mean) / sqrt(var_unbiased + eps)
            = sqrt((n - 1) / n) * (W - mean) / sqrt(var + eps * (n - 1) / n):

    normalize over axes (1, 2, 3) with a constant weight and a rescaled eps,
    exactly, and its derived backward with them.
    """
    n = weight[0].numel()     # values per filter: C_in / groups * kH * kW
    shrink = (n - 1) / n
    scale = torch.full((1, 1, 1, 1), shrink ** 0.5, device=weight.device,
                       dtype=compute_dtype(weight))
    return normalize(weight, scale, None, lambda w, s, _: F.normalize(
        w, (1, 2, 3), s, None, eps * shrink))


class WSConv2d(nn.Conv2d):
    """Conv2d with Weight Standardization; drop-in for torch.nn.Conv2d
    (same arguments, parameters and `state_dict` keys).

    The learned `weight` W stays as it is; each forward convolves with

        W_hat = (W - mean) / sqrt(var + eps)

    per output channel, over its C_in / groups * kH * kW values, with the
    unbiased variance and eps = 1e-5 of the authors' code: the
    Batch-Channel-Normalization repository's `imagenet/models/layers.py`,
    the code of the paper under its final title, "Micro-Batch Training with
    Batch-Channel Normalization and Weight Standardization".  Their first
    code (the WeightStandardization repository's README and its
    pytorch-classification `models/layers.py`) divides by std + 1e-5
    instead (unbiased std), and the paper's equation by the biased std
    + eps.  The three differ only by a factor per output channel (within
    about eps / (2 var) + 1 / (2 n) of 1), which the BatchNorm or GroupNorm
    that WS is meant to be followed by takes out.  This one is
    `functional.normalize`'s formula, eps inside the root, so its backward
    is the derived one (`standardize_weight`).

    Arguments as torch.nn.Conv2d's (`in_channels`, `out_channels`,
    `kernel_size`, `stride`, `padding`, `dilation`, `groups`, `bias`,
    `padding_mode`, `device`, `dtype`), and, keyword only:

    - `eps`: added to each filter's variance before the square root.

    A filter of one value (a 1x1 kernel on one input channel per group) has
    no variance to standardize by, and is refused.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1,
                 padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None, *, eps=1e-5):
        check_eps(eps)
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode,
                         device, dtype)
        if self.weight[0].numel() == 1:
            raise ValueError(f"Weight Standardization needs more than one "
                             f"value per filter, got in_channels/groups="
                             f"{in_channels // groups} and kernel_size="
                             f"{self.kernel_size}")
        self.eps = eps

    def extra_repr(self):
        return f"{super().extra_repr()}, eps={self.eps}"

    def standardized_weight(self):
        """The weight the convolution uses, W_hat."""
        return standardize_weight(self.weight, self.eps)

    def forward(self, input):
        return self._conv_forward(input, self.standardized_weight(),
                                  self.bias)
