"""Drop-in replacements for torch.nn's norm layers whose backward is the formula derived in the book.

The math is `normlib.functional` (one copy, shared with the NumPy derivations);
the modules are bookkeeping, as in d2l's split: parameters, running statistics,
train/eval, argument checks with torch's error types, and an
`autograd.Function` (`_autograd.py`) that calls `normalize_backward` instead of
letting autograd differentiate the forward.  The norms with running statistics
live in `_batchnorm.py` (SyncBatchNorm, across processes, in
`_syncbatchnorm.py`); this file has the per-sample ones and lists them all.
"""
import numbers

import torch

from . import functional as F
from ._autograd import AffineNorm, check_eps, check_param_dtype, compute_dtype, normalize
from ._batchnorm import (BatchNorm1d, BatchNorm2d, GhostBatchNorm1d, InstanceNorm1d, InstanceNorm2d,
                         SequenceBatchNorm)
from ._syncbatchnorm import SyncBatchNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "SequenceBatchNorm", "GhostBatchNorm1d", "SyncBatchNorm",
           "InstanceNorm1d", "InstanceNorm2d", "LayerNorm", "GroupNorm", "RMSNorm", "ImageRMSNorm", "DyT"]


def _as_shape(normalized_shape):
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def _check_trailing(x, normalized_shape):
    k = len(normalized_shape)
    if tuple(x.shape[-k:]) != normalized_shape or x.dim() < k:
        raise RuntimeError(f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, normalized_shape))}], but got input of size {list(x.shape)}")


class LayerNorm(AffineNorm):
    """LayerNorm over the trailing `normalized_shape`; drop-in for torch.nn.LayerNorm."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        check_eps(eps)
        factory = {"device": device, "dtype": dtype}
        self.normalized_shape, self.eps = _as_shape(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, bias, factory)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")

    def forward(self, input):
        _check_trailing(input, self.normalized_shape)
        check_param_dtype(input, weight=self.weight, bias=self.bias)
        return normalize(input, self.weight, self.bias,
                         lambda x, w, b: F.layer_norm(x, self.normalized_shape, w, b, self.eps))


class RMSNorm(AffineNorm):
    """RMSNorm (no mean, no bias); drop-in for torch.nn.RMSNorm, eps=None meaning finfo(dtype).eps."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        check_eps(eps)
        self.normalized_shape, self.eps = _as_shape(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, False, {"device": device, "dtype": dtype})

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

    def forward(self, input):
        _check_trailing(input, self.normalized_shape)
        # eps=None: the machine epsilon of the dtype the statistics accumulate in (float32 for half inputs)
        eps = torch.finfo(compute_dtype(input)).eps if self.eps is None else self.eps
        # no dtype check: torch's RMSNorm computes in the input's precision whatever the weight's
        return normalize(input, self.weight, None,
                         lambda x, w, b: F.rms_norm(x, self.normalized_shape, w, eps))


class GroupNorm(AffineNorm):
    """GroupNorm over (N, C, *); drop-in for torch.nn.GroupNorm."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        check_eps(eps)
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        factory = {"device": device, "dtype": dtype}
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self._init_affine(num_channels, affine, bias, factory)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")

    def forward(self, input):
        if input.dim() < 2 or input.shape[1] != self.num_channels:
            raise RuntimeError(f"GroupNorm expects input of shape (N, {self.num_channels}, *), "
                               f"got {list(input.shape)}")
        check_param_dtype(input, weight=self.weight, bias=self.bias)
        if input.shape[0] * input.shape[1] // self.num_groups * input.shape[2:].numel() == 1:
            # torch's rule: a single sample whose groups hold one value each (its output would be all zeros)
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
        return normalize(input, self.weight, self.bias,
                         lambda x, w, b: F.group_norm(x, self.num_groups, w, b, self.eps))


class DyT(torch.nn.Module):
    """Dynamic Tanh (Zhu et al. 2025), a norm-free stand-in: weight * tanh(alpha * x) + bias.

    alpha is one learned scalar (init 0.5), weight and bias are per channel.  It has
    no statistics to derive a backward for, so autograd differentiates the forward.
    """

    def __init__(self, num_features, alpha_init=0.5):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = torch.nn.Parameter(torch.ones(num_features))
        self.bias = torch.nn.Parameter(torch.zeros(num_features))

    def forward(self, input):
        return self.weight * torch.tanh(self.alpha * input) + self.bias


class ImageRMSNorm(AffineNorm):
    """RMSNorm for images (N, C, H, W): each sample divided by its root mean
    square over (C, H, W), then multiplied by a weight per channel.

    It is `GroupNorm(1, C)` (the image LayerNorm) without the mean and without
    the bias; torch has no such layer.

    - `num_channels`: C, the length of the weight.
    - `eps`: added to the mean square before the square root.
    """

    def __init__(self, num_channels, eps=1e-5):
        super().__init__()
        check_eps(eps)
        self.num_channels, self.eps = num_channels, eps
        self._init_affine((num_channels,), True, False, {})

    def _norm(self, x, weight, bias):
        C = x.shape[1]
        y, cache = F.normalize(x, (1, 2, 3), weight.reshape(1, C, 1, 1), None,
                               self.eps, center=False)
        cache["param_shape"] = (C,)   # the gradient of weight comes back as (C,)
        return y, cache

    def forward(self, input):
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (N, C, H, W), got {input.dim()}D input")
        return normalize(input, self.weight, None, self._norm)
