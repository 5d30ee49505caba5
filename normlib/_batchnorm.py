"""The norms with running statistics, BatchNorm and InstanceNorm: torch.nn's bookkeeping around `functional`.

Imported by `normlib.nn`, which is where to find them.
"""
import warnings

import torch

from . import functional as F
from ._autograd import AffineNorm, check_eps, check_param_dtype, compute_dtype, normalize


class _NormBase(AffineNorm):
    """torch.nn's constructor, buffers, repr and state_dict for the norms with running statistics."""

    _version = 2   # torch's state_dict version of these layers (the one with num_batches_tracked)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        check_eps(eps)
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

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        """torch's upgrade of old checkpoints: num_batches_tracked, added in version 2, keeps its value."""
        key = prefix + "num_batches_tracked"
        if local_metadata.get("version", 0) < 2 and self.track_running_stats and key not in state_dict:
            meta = self.num_batches_tracked.device.type == "meta"
            state_dict[key] = torch.tensor(0, dtype=torch.long) if meta else self.num_batches_tracked
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def _check_dtypes(self, x):
        check_param_dtype(x, weight=self.weight, bias=self.bias, running_mean=self.running_mean)

    def _count_batch(self):
        """Count a training batch in num_batches_tracked; the weight it gets in the running averages."""
        if not (self.training and self.track_running_stats):
            return 0.0
        self.num_batches_tracked.add_(1)
        # momentum=None: a cumulative average of every batch so far
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def _update_running_stats(self, mean, var, count, factor):
        """Move the running averages towards this batch's mean and unbiased variance, per channel."""
        if isinstance(count, int) and count == 0:   # an empty batch: torch leaves the averages alone
            return
        with torch.no_grad():
            unbiased_var = var * count / (count - 1)                   # running_var is unbiased
            # (1 - factor) * running + factor * batch; not lerp_, which torch.func.vmap has no rule for
            self.running_mean.mul_(1 - factor).add_(mean.reshape(-1).to(self.running_mean.dtype), alpha=factor)
            self.running_var.mul_(1 - factor).add_(unbiased_var.reshape(-1).to(self.running_var.dtype), alpha=factor)

    def _with_running_stats(self, x, channel_axis):
        """Eval with running statistics: a fixed per-channel affine map, nothing to derive."""
        shape = [1] * x.ndim
        shape[channel_axis] = self.num_features
        dtype = compute_dtype(x)
        mean, var = self.running_mean.to(dtype).reshape(shape), self.running_var.to(dtype).reshape(shape)
        y = (x.to(dtype) - mean) * (var + self.eps) ** -0.5
        if self.weight is not None:
            y = y * self.weight.to(dtype).reshape(shape)
        if self.bias is not None:
            y = y + self.bias.to(dtype).reshape(shape)
        return y.to(x.dtype)


class BatchNormBase(_NormBase):
    """BatchNorm: statistics per channel over the batch and every other axis."""

    channel_axis = 1

    def _check_input(self, x, pad_mask):
        channels = x.shape[self.channel_axis]
        if channels != self.num_features:
            raise RuntimeError(f"input has {channels} channels (axis {self.channel_axis}) "
                               f"but num_features={self.num_features}")
        self._check_dtypes(x)
        if pad_mask is None:
            return None
        expected = tuple(s for a, s in enumerate(x.shape) if a != self.channel_axis % x.ndim)
        if tuple(pad_mask.shape) != expected or pad_mask.dtype != torch.bool:
            raise ValueError(f"pad_mask must be a bool tensor of shape {expected} (True = padding), "
                             f"got {pad_mask.dtype} of shape {tuple(pad_mask.shape)}")
        return (~pad_mask).to(compute_dtype(x))

    def forward(self, input, pad_mask=None):
        """Normalize `input`; `pad_mask` (True = padding) keeps pads out of the statistics."""
        self._check_input_dim(input)
        valid = self._check_input(input, pad_mask)
        if pad_mask is not None:   # select, don't multiply: inf or nan in the padding must not reach the statistics
            input = input.masked_fill(pad_mask.unsqueeze(self.channel_axis), 0)
        factor = self._count_batch()
        if self.training or self.running_mean is None:
            stats = {}
            y = normalize(input, self.weight, self.bias, lambda x, w, b: F.batch_norm(
                x, w, b, self.eps, valid, self.channel_axis), stats)
            if self.training and self.running_mean is not None:
                self._update_running_stats(stats["mean"], stats["var"], stats["count"], factor)
            return y
        y = self._with_running_stats(input, self.channel_axis % input.ndim)
        return y if valid is None else y * valid.unsqueeze(self.channel_axis).to(y.dtype)


class BatchNorm1d(BatchNormBase):
    """BatchNorm over (N, C) or (N, C, L); drop-in for torch.nn.BatchNorm1d, plus an optional pad_mask (N, L)."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class BatchNorm2d(BatchNormBase):
    """BatchNorm over (N, C, H, W); drop-in for torch.nn.BatchNorm2d."""

    def _check_input_dim(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")


class SequenceBatchNorm(BatchNormBase):
    """BatchNorm for Transformer activations (B, T, C), channels last, with pad_mask (B, T).

    torch has no such layer (BatchNorm1d wants (N, C, L)); this one saves the transposes.
    """

    channel_axis = -1

    def _check_input_dim(self, x):
        if x.dim() != 3:
            raise ValueError(f"expected 3D input (batch, time, channels) (got {x.dim()}D input)")


class _InstanceNorm(_NormBase):
    """InstanceNorm: statistics per sample and channel over space; running statistics averaged over the batch."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                 device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Checkpoints from before torch 0.4 (no version) carry running statistics this layer may not track."""
        keys = [prefix + name for name in ("running_mean", "running_var") if prefix + name in state_dict]
        if local_metadata.get("version") is None and not self.track_running_stats and keys:
            name, buffers = type(self).__name__, " and ".join(f'"{k}"' for k in keys)   # torch's message
            error_msgs.append(
                f"Unexpected running stats buffer(s) {buffers} for {name} with track_running_stats=False. "
                f"If state_dict is a checkpoint saved before 0.4.0, this may be expected because {name} "
                f"does not track running stats by default since 0.4.0. Please remove these keys from "
                f"state_dict. If the running stats are actually needed, instead set track_running_stats=True "
                f"in {name} to enable them. See the documentation of {name} for details.")
            for key in keys:
                state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _check_input_dim(self, x):
        if x.dim() not in (self.spatial_dims + 1, self.spatial_dims + 2):
            raise ValueError(f"expected {self.spatial_dims + 1}D or {self.spatial_dims + 2}D input "
                             f"(got {x.dim()}D input)")

    def forward(self, input):
        self._check_input_dim(input)
        channel_axis = input.dim() - self.spatial_dims - 1
        if input.shape[channel_axis] != self.num_features:
            if self.affine:
                raise ValueError(f"expected input's size at dim={channel_axis} to match num_features "
                                 f"({self.num_features}), but got: {input.shape[channel_axis]}.")
            # torch's wording; num_features only sizes the weight, bias and running statistics
            warnings.warn(f"input's size at dim={channel_axis} does not match num_features. You can silence "
                          "this warning by not passing in num_features, which is not used because affine=False",
                          stacklevel=2)
        if channel_axis == 0:       # unbatched (C, *spatial): a batch of one
            return self._normalize(input.unsqueeze(0)).squeeze(0)
        return self._normalize(input)

    def _normalize(self, x):
        self._check_dtypes(x)
        if not self.training and self.track_running_stats:
            return self._with_running_stats(x, 1)
        if x.shape[2:].numel() == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {x.shape}")
        stats = {}
        y = normalize(x, self.weight, self.bias, lambda x, w, b: F.instance_norm(x, w, b, self.eps), stats)
        if self.training and self.track_running_stats and x.shape[0] > 0:
            # torch averages the per-sample statistics over the batch; momentum=None means 0 here
            factor = 0.0 if self.momentum is None else self.momentum
            self._update_running_stats(stats["mean"].mean(0), stats["var"].mean(0), stats["count"], factor)
        return y


class InstanceNorm1d(_InstanceNorm):
    """InstanceNorm over (N, C, L) or unbatched (C, L); drop-in for torch.nn.InstanceNorm1d."""

    spatial_dims = 1


class InstanceNorm2d(_InstanceNorm):
    """InstanceNorm over (N, C, H, W) or unbatched (C, H, W); drop-in for torch.nn.InstanceNorm2d."""

    spatial_dims = 2


class GhostBatchNorm1d(BatchNorm1d):
    """BatchNorm1d over (N, C) whose training statistics come from ghost_size rows at a time (Hoffer et al.).

    This is exactly what per-process BatchNorm computes when N / ghost_size processes
    hold ghost_size rows each: each block normalized by its own statistics.  The
    running statistics take the first block's, as data-parallel training keeps rank 0's
    buffers.  ghost_size=None is plain BatchNorm1d.
    """

    def __init__(self, num_features, ghost_size=None, **kwargs):
        super().__init__(num_features, **kwargs)
        self.ghost_size = ghost_size

    def forward(self, input):
        n, channels = input.shape                         # N, C
        if not self.training or self.ghost_size in (None, n):
            return super().forward(input)
        if n % self.ghost_size:
            raise ValueError(f"the batch ({n}) must be a multiple of ghost_size={self.ghost_size}")
        self._check_input(input, None)
        factor = self._count_batch()
        stats = {}
        blocks = input.reshape(n // self.ghost_size, self.ghost_size, channels)   # G, ghost, C
        y = normalize(blocks, self.weight, self.bias,
                      lambda x, w, b: F.normalize(x, (1,), w, b, self.eps), stats)
        if self.running_mean is not None:
            self._update_running_stats(stats["mean"][0], stats["var"][0], stats["count"], factor)
        return y.reshape(n, channels)


