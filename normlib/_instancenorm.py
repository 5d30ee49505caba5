"""InstanceNorm: statistics per sample and channel over space, with torch.nn's
bookkeeping (running statistics averaged over the batch, old checkpoints).

Imported by `normlib.nn`, which is where to find it.
"""
import warnings

from . import functional as F
from ._autograd import normalize
from ._batchnorm import RunningStatsNorm


class _InstanceNorm(RunningStatsNorm):
    """InstanceNorm: statistics per sample and channel over space; running
    statistics averaged over the batch.

    Arguments as `RunningStatsNorm`, except that `affine` and
    `track_running_stats` default to `False`, as in torch, and that
    `momentum=None` means 0 here (torch's rule): the running statistics never
    move.  Without `affine`, an input whose channels differ from
    `num_features` only gets a warning, as in torch.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine,
                         track_running_stats, device, dtype, bias=bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Checkpoints from before torch 0.4 (no version) carry running
        statistics this layer may not track."""
        keys = [prefix + name for name in ("running_mean", "running_var")
                if prefix + name in state_dict]
        if (local_metadata.get("version") is None
                and not self.track_running_stats and keys):
            # torch's message
            name, buffers = (type(self).__name__,
                             " and ".join(f'"{k}"' for k in keys))
            error_msgs.append(
                f"Unexpected running stats buffer(s) {buffers} for {name} "
                f"with track_running_stats=False. If state_dict is a "
                f"checkpoint saved before 0.4.0, this may be expected "
                f"because {name} does not track running stats by default "
                f"since 0.4.0. Please remove these keys from state_dict. If "
                f"the running stats are actually needed, instead set "
                f"track_running_stats=True in {name} to enable them. See the "
                f"documentation of {name} for details.")
            for key in keys:
                state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _check_input_dim(self, x):
        if x.dim() not in (self.spatial_dims + 1, self.spatial_dims + 2):
            raise ValueError(f"expected {self.spatial_dims + 1}D or "
                             f"{self.spatial_dims + 2}D input "
                             f"(got {x.dim()}D input)")

    def forward(self, input):
        self._check_input_dim(input)
        channel_axis = input.dim() - self.spatial_dims - 1
        if input.shape[channel_axis] != self.num_features:
            if self.affine:
                raise ValueError(
                    f"expected input's size at dim={channel_axis} to match "
                    f"num_features ({self.num_features}), but got: "
                    f"{input.shape[channel_axis]}.")
            # torch's wording; num_features only sizes the weight, bias and
            # running statistics
            warnings.warn(f"input's size at dim={channel_axis} does not "
                          "match num_features. You can silence this warning "
                          "by not passing in num_features, which is not used "
                          "because affine=False", stacklevel=2)
        if channel_axis == 0:       # unbatched (C, *spatial): a batch of one
            return self._normalize(input.unsqueeze(0)).squeeze(0)
        return self._normalize(input)

    def _normalize(self, x):
        self._check_dtypes(x)
        if not self.training and self.track_running_stats:
            return self._with_running_stats(x, 1)
        if x.shape[2:].numel() == 1:
            raise ValueError(f"Expected more than 1 spatial element when "
                             f"training, got input size {x.shape}")
        stats = {}
        y = normalize(x, self.weight, self.bias,
                      lambda x, w, b: F.instance_norm(x, w, b, self.eps),
                      stats)
        if self.training and self.track_running_stats and x.shape[0] > 0:
            # torch averages the per-sample statistics over the batch;
            # momentum=None means 0 here
            factor = 0.0 if self.momentum is None else self.momentum
            self._update_running_stats(stats["mean"].mean(0),
                                       stats["var"].mean(0), stats["count"],
                                       factor)
        return y


class InstanceNorm1d(_InstanceNorm):
    """InstanceNorm over (N, C, L) or unbatched (C, L); drop-in for
    torch.nn.InstanceNorm1d.

    Arguments as `_InstanceNorm` (`RunningStatsNorm`'s, other defaults).
    """

    spatial_dims = 1


class InstanceNorm2d(_InstanceNorm):
    """InstanceNorm over (N, C, H, W) or unbatched (C, H, W); drop-in for
    torch.nn.InstanceNorm2d.

    Arguments as `_InstanceNorm` (`RunningStatsNorm`'s, other defaults).
    """

    spatial_dims = 2
