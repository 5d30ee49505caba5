"""The norms with running statistics: their shared base, and BatchNorm as
torch.nn's bookkeeping around `functional`.

Imported by `normlib.nn`, which is where to find them; InstanceNorm, the
other norm with running statistics, is in `_instancenorm.py`, and the
ghost-batch variant of BatchNorm1d in `_ghostbatchnorm.py`.
"""

import torch

from . import functional as F
from ._autograd import (
    AffineNorm,
    check_eps,
    check_param_dtype,
    compute_dtype,
    normalize,
)


class RunningStatsNorm(AffineNorm):
    """torch.nn's constructor, buffers, repr and state_dict for the norms
    with running statistics.

    - `num_features`: C, the number of channels; it sizes the weight, the
      bias and the running statistics.
    - `eps`: added to the variance before the square root.
    - `momentum`: the weight of the new batch in the running averages,
      `(1 - momentum) * running + momentum * batch`; `None` for a cumulative
      average of every batch so far.
    - `affine`: whether to learn a weight (initialized to ones) and a bias
      (zeros), one value per channel.
    - `track_running_stats`: whether to keep the buffers `running_mean`,
      `running_var` (unbiased) and `num_batches_tracked`, updated in training
      and used in eval; with `False` they are `None` and eval normalizes
      with the batch's own statistics too.
    - `device`, `dtype`: where and in what dtype the parameters and the
      running statistics are created (`num_batches_tracked` is int64).
    - `bias` (keyword only): `False` learns no bias, only the weight;
      relevant only with `affine=True`.
    """

    # torch's state_dict version of these layers (the one with
    # num_batches_tracked)
    _version = 2

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *,
                 bias=True):
        super().__init__()
        check_eps(eps)
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = (
            num_features, eps, momentum)
        self.affine, self.track_running_stats = affine, track_running_stats
        self._init_affine(num_features, affine, bias, factory)
        if track_running_stats:
            self.register_buffer("running_mean",
                                 torch.zeros(num_features, **factory))
            self.register_buffer("running_var",
                                 torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device))
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
        return (f"{self.num_features}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              *args):
        """torch's upgrade of old checkpoints: num_batches_tracked, added in
        version 2, keeps its value."""
        key = prefix + "num_batches_tracked"
        if (local_metadata.get("version", 0) < 2 and self.track_running_stats
                and key not in state_dict):
            meta = self.num_batches_tracked.device.type == "meta"
            state_dict[key] = (torch.tensor(0, dtype=torch.long) if meta
                               else self.num_batches_tracked)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      *args)

    def _check_dtypes(self, x):
        check_param_dtype(x, weight=self.weight, bias=self.bias,
                          running_mean=self.running_mean)

    def _count_batch(self):
        """Count a training batch in num_batches_tracked; the weight it gets
        in the running averages."""
        if not (self.training and self.track_running_stats):
            return 0.0
        self.num_batches_tracked.add_(1)
        # momentum=None: a cumulative average of every batch so far
        return (1.0 / float(self.num_batches_tracked) if self.momentum is None
                else self.momentum)

    def _update_running_stats(self, mean, var, count, factor):
        """Move the running averages towards this batch's mean and unbiased
        variance, per channel."""
        if isinstance(count, int) and count == 0:
            return   # an empty batch: torch leaves the averages alone
        with torch.no_grad():
            unbiased_var = var * count / (count - 1)  # running_var is unbiased
            # (1 - factor) * running + factor * batch; not lerp_, which
            # torch.func.vmap has no rule for
            self.running_mean.mul_(1 - factor).add_(
                mean.reshape(-1).to(self.running_mean.dtype), alpha=factor)
            self.running_var.mul_(1 - factor).add_(
                unbiased_var.reshape(-1).to(self.running_var.dtype),
                alpha=factor)

    def _with_running_stats(self, x, channel_axis):
        """Eval with running statistics: a fixed per-channel affine map,
        nothing to derive."""
        shape = [1] * x.ndim
        shape[channel_axis] = self.num_features
        dtype = compute_dtype(x)
        mean, var = (self.running_mean.to(dtype).reshape(shape),
                     self.running_var.to(dtype).reshape(shape))
        y = (x.to(dtype) - mean) * (var + self.eps) ** -0.5
        if self.weight is not None:
            y = y * self.weight.to(dtype).reshape(shape)
        if self.bias is not None:
            y = y + self.bias.to(dtype).reshape(shape)
        return y.to(x.dtype)


class BatchNormBase(RunningStatsNorm):
    """BatchNorm: statistics per channel over the batch and every other axis.

    Arguments as `RunningStatsNorm`.
    """

    channel_axis = 1

    def _check_input(self, x, pad_mask):
        channels = x.shape[self.channel_axis]
        if channels != self.num_features:
            raise RuntimeError(f"input has {channels} channels "
                               f"(axis {self.channel_axis}) "
                               f"but num_features={self.num_features}")
        self._check_dtypes(x)
        if pad_mask is None:
            return None
        expected = tuple(s for a, s in enumerate(x.shape)
                         if a != self.channel_axis % x.ndim)
        if tuple(pad_mask.shape) != expected or pad_mask.dtype != torch.bool:
            raise ValueError(f"pad_mask must be a bool tensor of shape "
                             f"{expected} (True = padding), "
                             f"got {pad_mask.dtype} of shape "
                             f"{tuple(pad_mask.shape)}")
        return (~pad_mask).to(compute_dtype(x))

    def forward(self, input, pad_mask=None):
        """Normalize `input`; `pad_mask` (True = padding) keeps pads out of
        the statistics."""
        self._check_input_dim(input)
        valid = self._check_input(input, pad_mask)
        # select, don't multiply: inf or nan in the padding must not reach
        # the statistics
        if pad_mask is not None:
            input = input.masked_fill(pad_mask.unsqueeze(self.channel_axis), 0)
        factor = self._count_batch()
        if self.training or self.running_mean is None:
            stats = {}
            y = normalize(
                input, self.weight, self.bias, lambda x, w, b: F.batch_norm(
                    x, w, b, self.eps, valid, self.channel_axis), stats)
            if self.training and self.running_mean is not None:
                self._update_running_stats(stats["mean"], stats["var"],
                                           stats["count"], factor)
            return y
        y = self._with_running_stats(input, self.channel_axis % input.ndim)
        return (y if valid is None
                else y * valid.unsqueeze(self.channel_axis).to(y.dtype))


class BatchNorm1d(BatchNormBase):
    """BatchNorm over (N, C) or (N, C, L); drop-in for torch.nn.BatchNorm1d,
    plus an optional pad_mask (N, L).

    Arguments as `RunningStatsNorm`.
    """

    def _check_input_dim(self, x):
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class BatchNorm2d(BatchNormBase):
    """BatchNorm over (N, C, H, W); drop-in for torch.nn.BatchNorm2d.

    Arguments as `RunningStatsNorm`.
    """

    def _check_input_dim(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")


class SequenceBatchNorm(BatchNormBase):
    """BatchNorm for Transformer activations (B, T, C), channels last, with
    pad_mask (B, T).

    torch has no such layer (BatchNorm1d wants (N, C, L)); this one saves the
    transposes.  Arguments as `RunningStatsNorm` (`num_features` is C, the
    last axis).
    """

    channel_axis = -1

    def _check_input_dim(self, x):
        if x.dim() != 3:
            raise ValueError(f"expected 3D input (batch, time, channels) "
                             f"(got {x.dim()}D input)")
