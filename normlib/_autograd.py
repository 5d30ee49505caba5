"""The autograd bridge of normlib.nn: a `functional` norm as an
autograd.Function, and what all modules share.

The backward is the derived `normalize_backward`, run on the forward's cache.
When autograd records the backward itself (`create_graph=True`: gradient
penalties, Hessian-vector products), the cache is recomputed from the saved
input with autograd on, and the same formula runs on tensors it can trace.
Half-precision inputs are normalized in float32 and returned in their own
dtype, as torch does.
"""
import torch
from torch import nn

from . import functional as F

HALF = (torch.float16, torch.bfloat16)


def compute_dtype(x):
    """The dtype the statistics accumulate in: float32 for half-precision
    inputs."""
    return torch.float32 if x.dtype in HALF else x.dtype


def check_param_dtype(x, **params):
    """torch's CPU kernels take parameters of the input's dtype, or float32
    ones for a half input."""
    for name, p in params.items():
        if p is not None and p.dtype not in (x.dtype, compute_dtype(x)):
            raise RuntimeError(f"mixed dtype: input is {x.dtype} but {name} "
                               f"is {p.dtype}; {name} must be {x.dtype}"
                               + (" or float32" if x.dtype in HALF else ""))


def _to(t, dtype):
    return None if t is None else t.to(dtype)


class _Info:
    """The non-tensor part of the cache, from forward to setup_context (an
    object, not a dict: torch.func rebuilds dicts it passes through)."""


class _NormalizeFunc(torch.autograd.Function):
    """Forward: a `functional` norm.  Backward: the derived
    `normalize_backward`, not autograd.

    The forward returns the cache's tensors beside y, so that torch.func.vmap
    can map the forward and the backward example by example
    (generate_vmap_rule); `info` carries the rest of the cache (axes, shapes,
    flags).  This is the form torch.func needs.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, norm_fn, info):
        dtype = compute_dtype(x)
        y, cache = norm_fn(x.to(dtype), _to(weight, dtype), _to(bias, dtype))
        info.keys = [k for k, v in cache.items()
                     if isinstance(v, torch.Tensor)]
        info.meta = {k: v for k, v in cache.items() if k not in info.keys}
        # detach: no output may be a view (GroupNorm's y is a reshape; the
        # cached weight is the input's), or autograd refuses in-place changes
        # to it, such as an in-place ReLU after the norm
        return (y.to(x.dtype).detach(),
                *(cache[k].detach() for k in info.keys))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, norm_fn, info = inputs
        ctx.mark_non_differentiable(*output[1:])
        # else backward receives zeros the size of xhat for the cache outputs
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, weight, bias, *output[1:])
        ctx.keys, ctx.meta, ctx.norm_fn = info.keys, info.meta, norm_fn

    @staticmethod
    def backward(ctx, dy, *_):
        if dy is None:        # y took no part in what is differentiated
            return None, None, None, None, None
        x, weight, bias, *saved = ctx.saved_tensors
        dtype = compute_dtype(x)
        # create_graph=True: rebuild the cache where autograd sees x, weight
        if torch.is_grad_enabled():
            _, cache = ctx.norm_fn(x.to(dtype), _to(weight, dtype),
                                   _to(bias, dtype))
        else:
            cache = dict(ctx.meta, **dict(zip(ctx.keys, saved)))
        dx, dweight, dbias = F.normalize_backward(dy.to(dtype), cache)
        return (dx.to(x.dtype),
                _to(dweight, None if weight is None else weight.dtype),
                _to(dbias, None if bias is None else bias.dtype), None, None)


class _Normalize(torch.autograd.Function):
    """The same Function with the context in forward: outside torch.func this
    skips the signature binding torch does on every call of a Function with
    setup_context (about 60 us)."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _NormalizeFunc.forward(*inputs)
        _NormalizeFunc.setup_context(ctx, inputs, output)
        return output

    backward = _NormalizeFunc.backward


def _transformed(*tensors):
    """Whether torch.func (vmap, grad, ...) wraps any of these tensors."""
    return any(t is not None
               and torch._C._functorch.is_functorch_wrapped_tensor(t)
               for t in tensors)


def normalize(x, weight, bias, norm_fn, stats=None):
    """norm_fn(x, weight, bias) -> (y, cache) of `functional`,
    differentiated by `normalize_backward`.

    `stats`, a dict, receives the forward's mean, var and count (for running
    statistics).
    """
    info = _Info()
    function = _NormalizeFunc if _transformed(x, weight, bias) else _Normalize
    y, *saved = function.apply(x, weight, bias, norm_fn, info)
    if stats is not None:
        cache = dict(info.meta, **dict(zip(info.keys, saved)))
        stats.update(mean=cache["mean"], var=cache["var"],
                     count=cache["count"])
    return y


def check_eps(eps):
    if eps is not None and not eps > 0:
        raise ValueError(f"eps must be > 0, got eps={eps}")


class AffineNorm(nn.Module):
    """What every norm module shares: an optional learned weight (ones) and
    bias (zeros)."""

    def _init_affine(self, shape, weight, bias, factory):
        for name, wanted in (("weight", weight), ("bias", weight and bias)):
            self.register_parameter(
                name, nn.Parameter(torch.empty(shape, **factory))
                if wanted else None)
        AffineNorm.reset_parameters(self)

    def reset_parameters(self):
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
