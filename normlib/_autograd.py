"""The autograd bridge of normlib.nn: a `functional` norm as an autograd.Function, and what all modules share.

The backward is the derived `normalize_backward`, run on the forward's cache.
When autograd records the backward itself (`create_graph=True`: gradient
penalties, Hessian-vector products), the cache is recomputed from the saved
input with autograd on, and the same formula runs on tensors it can trace.
Half-precision inputs are normalized in float32 and returned in their own
dtype, as torch does.
"""
from types import SimpleNamespace

import torch
from torch import nn

from . import functional as F

HALF = (torch.float16, torch.bfloat16)


def compute_dtype(x):
    """The dtype the statistics accumulate in: float32 for half-precision inputs."""
    return torch.float32 if x.dtype in HALF else x.dtype


def check_param_dtype(x, **params):
    """torch's CPU kernels take parameters of the input's dtype, or float32 ones for a half input."""
    for name, p in params.items():
        if p is not None and p.dtype not in (x.dtype, compute_dtype(x)):
            raise RuntimeError(f"mixed dtype: input is {x.dtype} but {name} is {p.dtype}; "
                               f"{name} must be {x.dtype}" + (" or float32" if x.dtype in HALF else ""))


def _to(t, dtype):
    return None if t is None else t.to(dtype)


class _Normalize(torch.autograd.Function):
    """Forward: a `functional` norm.  Backward: the derived `normalize_backward`, not autograd.

    Written in the setup_context style with generate_vmap_rule, so torch.func.vmap can run it
    for many models at once (normlib.ensemble).  The cache's tensors leave forward as extra,
    non-differentiable outputs; its other entries travel in `box`, which forward fills.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, norm_fn, box):
        dtype = compute_dtype(x)
        y, cache = norm_fn(x.to(dtype), _to(weight, dtype), _to(bias, dtype))
        keys = [k for k, v in cache.items() if isinstance(v, torch.Tensor) and k != "weight"]
        box.keys = keys
        box.meta = {k: v for k, v in cache.items() if k not in keys and k != "weight"}
        box.weight_shape = None if cache["weight"] is None else tuple(cache["weight"].shape)
        if weight is None and bias is None:   # y is xhat, also an output: one tensor may not be both
            y = y.clone()
        return (y.to(x.dtype), *(cache[k] for k in keys))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, norm_fn, box = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(x, weight, bias, *output[1:])
        ctx.keys, ctx.meta, ctx.weight_shape, ctx.norm_fn = box.keys, box.meta, box.weight_shape, norm_fn

    @staticmethod
    def backward(ctx, dy, *_):
        x, weight, bias, *saved = ctx.saved_tensors
        dtype = compute_dtype(x)
        if torch.is_grad_enabled():   # create_graph=True: rebuild the cache where autograd sees x and weight
            _, cache = ctx.norm_fn(x.to(dtype), _to(weight, dtype), _to(bias, dtype))
        else:
            cache = dict(ctx.meta, **dict(zip(ctx.keys, saved)))
            cache["weight"] = None if weight is None else weight.to(dtype).reshape(ctx.weight_shape)
        dx, dweight, dbias = F.normalize_backward(dy.to(dtype), cache)
        return (dx.to(x.dtype), _to(dweight, None if weight is None else weight.dtype),
                _to(dbias, None if bias is None else bias.dtype), None, None)


def normalize(x, weight, bias, norm_fn, stats=None):
    """norm_fn(x, weight, bias) -> (y, cache) of `functional`, differentiated by `normalize_backward`.

    `stats`, a dict, receives the forward's mean, var and count (for running statistics).
    """
    box = SimpleNamespace()          # not a dict: functorch would copy a dict (a pytree) on the way in
    y, *saved = _Normalize.apply(x, weight, bias, norm_fn, box)
    if stats is not None:
        cache = dict(box.meta, **dict(zip(box.keys, saved)))
        stats.update(mean=cache["mean"], var=cache["var"], count=cache["count"])
    return y


def check_eps(eps):
    if eps is not None and not eps > 0:
        raise ValueError(f"eps must be > 0, got eps={eps}")


class AffineNorm(nn.Module):
    """What every norm module shares: an optional learned weight (ones) and bias (zeros)."""

    def _init_affine(self, shape, weight, bias, factory):
        for name, wanted in (("weight", weight), ("bias", weight and bias)):
            self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)) if wanted else None)
        AffineNorm.reset_parameters(self)

    def reset_parameters(self):
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
