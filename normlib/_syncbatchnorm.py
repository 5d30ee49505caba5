"""SyncBatchNorm: BatchNorm whose statistics are those of the whole batch,
spread over the processes of a group.

Imported by `normlib.nn`, which is where to find it.  Forward: each process
sends its per-channel count, mean and sum of squared deviations (M2); every
process merges them with Chan et al.'s parallel update, never E[x^2] - E[x]^2.
Backward: chapter 2's compact formula, whose two per-channel sums (of dy and
of dy * xhat) are summed over the processes.  The gradients of weight and
bias stay local (each process's share), as in torch.nn.SyncBatchNorm; the
data-parallel wrapper then sums or averages them with the other parameters.
"""
import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from ._autograd import compute_dtype
from ._batchnorm import BatchNorm1d, BatchNorm2d, BatchNormBase
from ._moments import merge_moments


class CollectiveCounter:
    """How many collective calls a layer made and how many bytes it handed to
    them (per process)."""

    def __init__(self):
        self.calls, self.bytes = 0, 0

    def add(self, tensor):
        self.calls += 1
        self.bytes += tensor.numel() * tensor.element_size()


def global_moments(x, group, counter):
    """Per-channel (count, mean, biased var) of x (N, C, *) over every
    process of the group: one all_gather."""
    channels = x.shape[1]
    axes = [0] + list(range(2, x.ndim))        # everything but the channel
    count = x.numel() // channels if channels else 0
    x = x.detach().to(compute_dtype(x))
    mean = x.mean(axes) if count else x.new_zeros(channels)
    # two passes: stable
    m2 = ((x - mean.reshape(1, -1, *[1] * (x.ndim - 2))) ** 2).sum(axes)
    packed = torch.cat([x.new_tensor([count]), mean, m2])    # 1 + 2C values
    parts = [torch.empty_like(packed)
             for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, packed, group=group)
    counter.add(packed)
    table = torch.stack(parts)                               # P, 1 + 2C
    total, mean, m2 = merge_moments(table[:, 0], table[:, 1:1 + channels],
                                    table[:, 1 + channels:])
    return int(total), mean, m2 / max(int(total), 1)


class _SyncBatchNormFunction(torch.autograd.Function):
    """y = weight * (x - mean) * rstd + bias with global statistics;
    backward with global sums."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, rstd, count, group, counter):
        # per channel, broadcast over N and space
        shape = (1, -1) + (1,) * (x.ndim - 2)
        dtype = compute_dtype(x)
        xhat = (x.to(dtype) - mean.reshape(shape)) * rstd.reshape(shape)
        y = xhat
        if weight is not None:
            y = y * weight.to(dtype).reshape(shape)
        if bias is not None:
            y = y + bias.to(dtype).reshape(shape)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.count, ctx.group, ctx.counter, ctx.has_bias = (
            count, group, counter, bias is not None)
        ctx.param_dtype = next((p.dtype for p in (weight, bias)
                                if p is not None), dtype)
        ctx.x_dtype = x.dtype
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        """Chapter 2's compact formula for dx, its two per-channel sums taken
        over every process; dweight and dbias stay this process's share.

        Shown in chapter 11, "The derivation and the module".
        """
        xhat, rstd, weight = ctx.saved_tensors
        shape = (1, -1) + (1,) * (xhat.ndim - 2)      # per channel
        axes = [0] + list(range(2, xhat.ndim))         # all but the channel
        dy = dy.to(xhat.dtype)
        sum_dy = dy.sum(axes)                          # this process's sums
        sum_dy_xhat = (dy * xhat).sum(axes)
        # the parameter gradients are this process's share, not reduced
        dweight = None if weight is None else sum_dy_xhat.to(weight.dtype)
        dbias = sum_dy.to(ctx.param_dtype) if ctx.has_bias else None
        dx = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_dy, sum_dy_xhat])    # 2C values
            dist.all_reduce(sums, group=ctx.group)
            ctx.counter.add(sums)
            mean_dy, mean_dy_xhat = (sums / ctx.count).reshape(2, *shape)
            scale = rstd if weight is None else rstd * weight.to(xhat.dtype)
            # chapter 2, dxhat = weight * dy, means over the whole batch:
            # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
            dx = scale.reshape(shape) * (dy - mean_dy - xhat * mean_dy_xhat)
            dx = dx.to(ctx.x_dtype)
        return dx, dweight, dbias, None, None, None, None, None


class SyncBatchNorm(BatchNormBase):
    """BatchNorm over (N, C, *) with statistics over all processes; drop-in
    for torch.nn.SyncBatchNorm (on CPU).

    Arguments as `RunningStatsNorm`, and, between `track_running_stats` and
    `device` as in torch:

    - `process_group`: the processes whose batches make up the statistics;
      `None` for the default group (all processes).  With one process, no
      initialised group, or in eval, the layer is plain BatchNorm.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None,
                 dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine,
                         track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group
        self.collectives = CollectiveCounter()

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input "
                             f"(got {x.dim()}D input)")

    def _world_size(self):
        """How many processes share the statistics: 1 outside an initialised
        group."""
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group)

    def forward(self, input):
        self._check_input_dim(input)
        # eval mode, or nobody to share with: plain BatchNorm, as torch's
        # falls back to F.batch_norm
        if not self.training or self._world_size() == 1:
            return super().forward(input)
        self._check_input(input, None)
        factor = self._count_batch()
        count, mean, var = global_moments(input, self.process_group,
                                          self.collectives)
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when "
                             f"training, got {count} across "
                             f"{self._world_size()} processes "
                             f"(input size {list(input.shape)} here)")
        if self.running_mean is not None:
            self._update_running_stats(mean, var, count, factor)
        rstd = (var + self.eps) ** -0.5
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias,
                                            mean, rstd, count,
                                            self.process_group,
                                            self.collectives)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replace every BatchNorm layer (torch's or normlib's, channels on
        axis 1) with a SyncBatchNorm.

        The new layers share the old ones' parameters and running statistics
        and keep their train/eval mode, as
        torch.nn.SyncBatchNorm.convert_sync_batchnorm does.
        """
        converted = module
        if isinstance(module, (torch.nn.modules.batchnorm._BatchNorm,
                               BatchNorm1d, BatchNorm2d, cls)):
            converted = cls(module.num_features, module.eps, module.momentum,
                            module.affine, module.track_running_stats,
                            process_group, bias=module.bias is not None)
            if module.affine:
                with torch.no_grad():
                    converted.weight, converted.bias = (
                        module.weight, module.bias)
            converted.running_mean, converted.running_var = (
                module.running_mean, module.running_var)
            converted.num_batches_tracked = module.num_batches_tracked
            converted.training = module.training
            if hasattr(module, "qconfig"):
                converted.qconfig = module.qconfig
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(
                child, process_group))
        return converted
