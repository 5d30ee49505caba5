"""Drop-in replacements for torch.nn's norm layers whose backward is the formula derived in the book.

The math is `normlib.functional` (one copy, shared with the NumPy derivations);
this file is bookkeeping, as in d2l's split: parameters, running statistics,
train/eval, argument checks with torch's error types, and an
`autograd.Function` that calls `normalize_backward` instead of letting
autograd differentiate the forward.
"""
import numbers

import torch
from torch import nn

from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "SequenceBatchNorm", "LayerNorm", "GroupNorm", "RMSNorm"]


class _Normalize(torch.autograd.Function):
    """Forward: a `functional` norm.  Backward: the derived `normalize_backward`, not autograd."""

    @staticmethod
    def forward(ctx, x, weight, bias, norm_fn, stats):
        y, cache = norm_fn(x, weight, bias)
        # save_for_backward, not ctx attributes, so saving y (== xhat when there is no affine) makes no cycle
        keys = [k for k, v in cache.items() if isinstance(v, torch.Tensor)]
        ctx.save_for_backward(*(cache[k] for k in keys))
        ctx.keys, ctx.meta = keys, {k: v for k, v in cache.items() if k not in keys}
        stats.update(mean=cache["mean"], var=cache["var"], count=cache["count"])
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        cache = dict(ctx.meta, **dict(zip(ctx.keys, ctx.saved_tensors)))
        dx, dweight, dbias = F.normalize_backward(dy, cache)
        return dx, dweight, dbias, None, None


def _apply(x, weight, bias, norm_fn, stats=None):
    return _Normalize.apply(x, weight, bias, norm_fn, {} if stats is None else stats)


def _check_eps(eps):
    if eps is not None and not eps > 0:
        raise ValueError(f"eps must be > 0, got eps={eps}")


class _AffineNorm(nn.Module):
    """What every norm module shares: an optional learned weight (ones) and bias (zeros)."""

    def _init_affine(self, shape, weight, bias, factory):
        for name, wanted in (("weight", weight), ("bias", weight and bias)):
            self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)) if wanted else None)
        _AffineNorm.reset_parameters(self)

    def reset_parameters(self):
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class _BatchNorm(_AffineNorm):
    """Shared bookkeeping of the BatchNorm classes; torch.nn's constructor and state_dict."""

    channel_axis = 1

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        _check_eps(eps)
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self._init_affine(num_features, affine, bias, factory)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        super().reset_parameters()

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")

    def _check_input(self, x, pad_mask):
        channels = x.shape[self.channel_axis]
        if channels != self.num_features:
            raise RuntimeError(f"input has {channels} channels (axis {self.channel_axis}) "
                               f"but num_features={self.num_features}")
        if pad_mask is None:
            return None
        expected = tuple(s for a, s in enumerate(x.shape) if a != self.channel_axis % x.ndim)
        if tuple(pad_mask.shape) != expected or pad_mask.dtype != torch.bool:
            raise ValueError(f"pad_mask must be a bool tensor of shape {expected} (True = padding), "
                             f"got {pad_mask.dtype} of shape {tuple(pad_mask.shape)}")
        return (~pad_mask).to(x.dtype)

    def forward(self, input, pad_mask=None):
        """Normalize `input`; `pad_mask` (True = padding) keeps pads out of the statistics."""
        self._check_input_dim(input)
        valid = self._check_input(input, pad_mask)
        if pad_mask is not None:   # select, don't multiply: inf or nan in the padding must not reach the statistics
            input = input.masked_fill(pad_mask.unsqueeze(self.channel_axis), 0)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            # momentum=None: a cumulative average of every batch so far
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        if self.training or self.running_mean is None:
            stats = {}
            y = _apply(input, self.weight, self.bias, lambda x, w, b: F.batch_norm(
                x, w, b, self.eps, valid, self.channel_axis), stats)
            if self.training and self.running_mean is not None:
                with torch.no_grad():
                    count = stats["count"]
                    unbiased_var = stats["var"] * count / (count - 1)    # running_var is unbiased
                    self.running_mean.lerp_(stats["mean"].reshape(-1), factor)
                    self.running_var.lerp_(unbiased_var.reshape(-1).to(self.running_var.dtype), factor)
            return y
        # eval with running statistics: a fixed per-channel affine map, nothing to derive
        shape = [1] * input.ndim
        shape[self.channel_axis] = self.num_features
        y = (input - self.running_mean.reshape(shape)) * (self.running_var.reshape(shape) + self.eps) ** -0.5
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        if valid is not None:
            y = y * valid.unsqueeze(self.channel_axis)
        return y


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) or (N, C, L); drop-in for torch.nn.BatchNorm1d, plus an optional pad_mask (N, L)."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    """BatchNorm over (N, C, H, W); drop-in for torch.nn.BatchNorm2d."""

    def _check_input_dim(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")


class SequenceBatchNorm(_BatchNorm):
    """BatchNorm for Transformer activations (B, T, C), channels last, with pad_mask (B, T).

    torch has no such layer (BatchNorm1d wants (N, C, L)); this one saves the transposes.
    """

    channel_axis = -1

    def _check_input_dim(self, x):
        if x.dim() != 3:
            raise ValueError(f"expected 3D input (batch, time, channels) (got {x.dim()}D input)")


def _as_shape(normalized_shape):
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def _check_trailing(x, normalized_shape):
    k = len(normalized_shape)
    if tuple(x.shape[-k:]) != normalized_shape or x.dim() < k:
        raise RuntimeError(f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, normalized_shape))}], but got input of size {list(x.shape)}")


class LayerNorm(_AffineNorm):
    """LayerNorm over the trailing `normalized_shape`; drop-in for torch.nn.LayerNorm."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        _check_eps(eps)
        factory = {"device": device, "dtype": dtype}
        self.normalized_shape, self.eps = _as_shape(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, bias, factory)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")

    def forward(self, input):
        _check_trailing(input, self.normalized_shape)
        return _apply(input, self.weight, self.bias,
                      lambda x, w, b: F.layer_norm(x, self.normalized_shape, w, b, self.eps))


class RMSNorm(_AffineNorm):
    """RMSNorm (no mean, no bias); drop-in for torch.nn.RMSNorm, eps=None meaning finfo(dtype).eps."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        _check_eps(eps)
        self.normalized_shape, self.eps = _as_shape(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, False, {"device": device, "dtype": dtype})

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

    def forward(self, input):
        _check_trailing(input, self.normalized_shape)
        eps = torch.finfo(input.dtype).eps if self.eps is None else self.eps
        return _apply(input, self.weight, None,
                      lambda x, w, b: F.rms_norm(x, self.normalized_shape, w, eps))


class GroupNorm(_AffineNorm):
    """GroupNorm over (N, C, *); drop-in for torch.nn.GroupNorm."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        _check_eps(eps)
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
        return _apply(input, self.weight, self.bias,
                      lambda x, w, b: F.group_norm(x, self.num_groups, w, b, self.eps))
