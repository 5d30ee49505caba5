"""FrozenBatchNorm2d: BatchNorm2d whose statistics and affine parameters are
fixed, as torchvision and detectron2 define it.

Imported by `normlib.nn`, which is where to find it.
"""
import torch
from torch import nn

from ._autograd import check_eps
from ._batchnorm import BatchNorm2d
from ._syncbatchnorm import SyncBatchNorm

# what convert_frozen_batchnorm freezes: torch's and ours
_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, BatchNorm2d, SyncBatchNorm)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d over (N, C, H, W) with fixed statistics and affine
    parameters; drop-in for torchvision.ops.FrozenBatchNorm2d.

    Detection models fine-tune a backbone on batches of one or two images,
    too few for batch statistics, so they freeze its BatchNorm layers as
    they came from pre-training.  All four per-channel tensors are buffers,
    not parameters: an optimizer never sees them, and train() and eval()
    compute the same map, eval-mode BatchNorm's

        y = (x - running_mean) / sqrt(running_var + eps) * weight + bias
          = x * scale + shift.

    It is affine in x, so autograd of the forward is the derived backward:
    dx = dy * scale, and nothing else to derive.  A `state_dict` of
    `torch.nn.BatchNorm2d` loads (its `num_batches_tracked` is dropped, as
    torchvision does).  The output's dtype is the input's and the buffers'
    promoted, as in torchvision: a half-precision input with float32
    buffers gives float32.

    - `num_features`: C, the input's channels (axis 1); the buffers
      `weight` (ones), `bias` (zeros), `running_mean` (zeros) and
      `running_var` (ones) hold one value per channel.
    - `eps`: added to `running_var` before the square root.
    """

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        check_eps(eps)
        self.num_features, self.eps = num_features, eps
        for name, fill in (("weight", 1.0), ("bias", 0.0),
                           ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), fill))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              *args):
        """torchvision's rule: a BatchNorm2d's `num_batches_tracked` means
        nothing here, so it is dropped, not reported as unexpected."""
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      *args)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"

    def forward(self, input):
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")
        if input.shape[1] != self.num_features:
            raise RuntimeError(f"input has {input.shape[1]} channels "
                               f"(axis 1) but "
                               f"num_features={self.num_features}")
        shape = (1, self.num_features, 1, 1)    # one value per channel
        # scale = weight / sqrt(running_var + eps)
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        # shift = bias - running_mean * scale
        shift = self.bias - self.running_mean * scale
        # y = x * scale + shift
        return input * scale.reshape(shape) + shift.reshape(shape)

    @classmethod
    def convert_frozen_batchnorm(cls, module):
        """Freeze every BatchNorm2d and SyncBatchNorm in `module` (torch's
        or normlib's), as detectron2's classmethod of this name does.

        - `module`: a model, or one BatchNorm layer.

        Returns a new FrozenBatchNorm2d when `module` is itself a BatchNorm
        layer; otherwise converts its children in place and returns
        `module`.  The frozen layer takes copies of the running statistics,
        of `eps`, and of the weight and bias (ones and zeros when the layer
        had `affine=False`).  A layer with `track_running_stats=False` has
        no statistics to freeze and raises ValueError.
        """
        if isinstance(module, _BATCH_NORMS):
            if module.running_mean is None:
                raise ValueError(f"{module} has track_running_stats=False: "
                                 f"no running statistics to freeze")
            frozen = cls(module.num_features, module.eps)
            # copies, in the layer's dtype and on its device
            for name, fill in (("weight", 1.0), ("bias", 0.0),
                               ("running_mean", None), ("running_var", None)):
                value = getattr(module, name)
                setattr(frozen, name,
                        torch.full_like(module.running_mean, fill)
                        if value is None else value.detach().clone())
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module
