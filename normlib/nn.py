"""Drop-in replacements for torch.nn's norm layers whose backward is the
formula derived in the book.

The math is `normlib.functional` (one copy, shared with the NumPy derivations);
the modules are bookkeeping, as in d2l's split: parameters, running statistics,
train/eval, argument checks with torch's error types, and an
`autograd.Function` (`_autograd.py`) that calls `normalize_backward` instead of
letting autograd differentiate the forward.  The norms with running statistics
live in `_batchnorm.py` (SyncBatchNorm, across processes, in
`_syncbatchnorm.py`, FrozenBatchNorm2d, with fixed ones, in
`_frozenbatchnorm.py`); this file has the per-sample ones (LayerNorm2d, per
pixel, in `_layernorm2d.py`) and lists them all.

Batch Renormalization, BatchNorm corrected towards its running statistics,
is in `_batchrenorm.py`; the norms of weights rather than activations,
Weight Standardization (`WSConv2d`) and Weight Normalization
(`weight_norm`), are in `_wsconv.py` and `_weightnorm.py`.
"""
import numbers

import torch

from . import functional as F
from ._autograd import (
    AffineNorm,
    check_eps,
    check_param_dtype,
    compute_dtype,
    normalize,
)
from ._batchnorm import BatchNorm1d, BatchNorm2d, SequenceBatchNorm
from ._batchrenorm import BatchRenorm1d, BatchRenorm2d
from ._frozenbatchnorm import FrozenBatchNorm2d
from ._ghostbatchnorm import GhostBatchNorm1d
from ._instancenorm import InstanceNorm1d, InstanceNorm2d
from ._layernorm2d import LayerNorm2d
from ._syncbatchnorm import SyncBatchNorm
from ._weightnorm import weight_norm
from ._wsconv import WSConv2d

__all__ = ["BatchNorm1d", "BatchNorm2d", "SequenceBatchNorm",
           "GhostBatchNorm1d", "SyncBatchNorm", "FrozenBatchNorm2d",
           "InstanceNorm1d", "InstanceNorm2d", "LayerNorm", "LayerNorm2d",
           "GroupNorm", "RMSNorm", "ImageRMSNorm", "DyT",
           "BatchRenorm1d", "BatchRenorm2d", "WSConv2d", "weight_norm"]


def _as_shape(normalized_shape):
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def _check_trailing(x, normalized_shape):
    k = len(normalized_shape)
    if tuple(x.shape[-k:]) != normalized_shape or x.dim() < k:
        raise RuntimeError(f"Given normalized_shape={list(normalized_shape)}, "
                           f"expected input with shape "
                           f"[*, {', '.join(map(str, normalized_shape))}], "
                           f"but got input of size {list(x.shape)}")


class LayerNorm(AffineNorm):
    """LayerNorm over the trailing `normalized_shape`; drop-in for
    torch.nn.LayerNorm.

    - `normalized_shape`: the sizes of the trailing axes to normalize over,
      which the input must end in; an int for the last axis alone.
    - `eps`: added to the variance before the square root.
    - `elementwise_affine`: whether to learn a weight (initialized to ones)
      and a bias (zeros), each of shape `normalized_shape`.
    - `bias`: `False` learns no bias, only the weight; relevant only with
      `elementwise_affine=True`.
    - `device`, `dtype`: where and in what dtype the parameters are created.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True,
                 bias=True, device=None, dtype=None):
        super().__init__()
        check_eps(eps)
        factory = {"device": device, "dtype": dtype}
        self.normalized_shape, self.eps = _as_shape(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, bias,
                          factory)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")

    def forward(self, input):
        _check_trailing(input, self.normalized_shape)
        check_param_dtype(input, weight=self.weight, bias=self.bias)
        return normalize(input, self.weight, self.bias,
                         lambda x, w, b: F.layer_norm(x, self.normalized_shape,
                                                      w, b, self.eps))


class RMSNorm(AffineNorm):
    """RMSNorm (no mean, no bias); drop-in for torch.nn.RMSNorm.

    - `normalized_shape`: the sizes of the trailing axes to normalize over,
      as in `LayerNorm`.
    - `eps`: added to the mean square before the square root; `None` for the
      machine epsilon of the dtype the statistics are computed in
      (`torch.finfo(dtype).eps`, float32's for half-precision inputs).
    - `elementwise_affine`: whether to learn a weight (initialized to ones)
      of shape `normalized_shape`.
    - `device`, `dtype`: where and in what dtype the weight is created.
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True,
                 device=None, dtype=None):
        super().__init__()
        check_eps(eps)
        self.normalized_shape, self.eps = _as_shape(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, False,
                          {"device": device, "dtype": dtype})

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")

    def forward(self, input):
        _check_trailing(input, self.normalized_shape)
        # eps=None: the machine epsilon of the dtype the statistics
        # accumulate in (float32 for half inputs)
        eps = (torch.finfo(compute_dtype(input)).eps if self.eps is None
               else self.eps)
        # no dtype check: torch's RMSNorm computes in the input's precision
        # whatever the weight's
        return normalize(input, self.weight, None,
                         lambda x, w, b: F.rms_norm(x, self.normalized_shape,
                                                    w, eps))


class GroupNorm(AffineNorm):
    """GroupNorm over (N, C, *); drop-in for torch.nn.GroupNorm.

    - `num_groups`: G, how many groups the channels are split into, each of
      C / G consecutive channels; it must divide `num_channels`.
    - `num_channels`: C, the channels the input must have on axis 1.
    - `eps`: added to the variance before the square root.
    - `affine`: whether to learn a weight (initialized to ones) and a bias
      (zeros), one value per channel.
    - `device`, `dtype`: where and in what dtype the parameters are created.
    - `bias` (keyword only): `False` learns no bias, only the weight;
      relevant only with `affine=True`.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        check_eps(eps)
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be "
                             f"divisible by num_groups ({num_groups})")
        factory = {"device": device, "dtype": dtype}
        self.num_groups, self.num_channels, self.eps, self.affine = (
            num_groups, num_channels, eps, affine)
        self._init_affine(num_channels, affine, bias, factory)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")

    def forward(self, input):
        if input.dim() < 2 or input.shape[1] != self.num_channels:
            raise RuntimeError(f"GroupNorm expects input of shape "
                               f"(N, {self.num_channels}, *), "
                               f"got {list(input.shape)}")
        check_param_dtype(input, weight=self.weight, bias=self.bias)
        if (input.shape[0] * input.shape[1] // self.num_groups
                * input.shape[2:].numel() == 1):
            # torch's rule: a single sample whose groups hold one value each
            # (its output would be all zeros)
            raise ValueError(f"Expected more than 1 value per channel when "
                             f"training, got input size {input.shape}")
        return normalize(input, self.weight, self.bias,
                         lambda x, w, b: F.group_norm(x, self.num_groups, w, b,
                                                      self.eps))


class DyT(torch.nn.Module):
    """Dynamic Tanh (Zhu et al. 2025), a norm-free stand-in:
    weight * tanh(alpha * x) + bias.

    It has no statistics to derive a backward for, so autograd
    differentiates the forward.

    - `num_features`: C, the size of the input's last axis; the learned
      weight (initialized to ones) and bias (zeros) have one value per
      channel.
    - `alpha_init`: the initial value of alpha, one learned scalar for the
      whole layer.
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

    - `num_channels`: C, the input's channels (axis 1); the learned weight
      (initialized to ones) has one value per channel.
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
        cache["param_shape"] = (C,)   # weight's gradient comes back as (C,)
        return y, cache

    def forward(self, input):
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (N, C, H, W), "
                             f"got {input.dim()}D input")
        return normalize(input, self.weight, None, self._norm)
