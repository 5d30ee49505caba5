"""Weight Normalization (Salimans & Kingma 2016): a weight written as a
length g times a direction v / ||v||, as a torch parametrization.

Imported by `normlib.nn`, which is where to find it.
"""
import torch
from torch import nn
from torch.nn.utils import parametrize

from ._autograd import compute_dtype
from ._steps import holds


def _norm_axes(v, dim):
    """The axes ||v|| runs over: all but `dim`; all of them for dim=-1
    (torch's weight norm reads -1 as 'no dim', not as the last axis)."""
    if dim == -1:
        return tuple(range(v.ndim))
    if not -v.ndim <= dim < v.ndim:
        # torch's message
        raise IndexError(f"Dimension out of range (expected to be in range "
                         f"of [{-v.ndim}, {v.ndim - 1}], but got {dim})")
    return tuple(a for a in range(v.ndim) if a != dim % v.ndim)


def _norm(v, axes):
    """||v|| over `axes`, kept as size-1 axes."""
    if not axes:    # a 1-D v normalized per element
        return v.abs()
    return torch.linalg.vector_norm(v, dim=axes, keepdim=True)


def _sum(a, axes):
    return a.sum(dim=axes, keepdim=True) if axes else a


class _WeightNormFunction(torch.autograd.Function):
    """w = g * v / ||v||, with its derived backward.

    With v_hat = v / ||v|| (a unit vector per slice), w = g * v_hat, and

        dg = sum(dw * v_hat)
        dv = (g / ||v||) * (dw - v_hat * sum(dw * v_hat)):

    dw scaled by g / ||v|| with its component along v_hat taken out, since
    stretching v leaves w unchanged.  It is RMSNorm's backward (chapter 3)
    with the mean over the axes replaced by a sum.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(g, v, axes, name):
        dtype = compute_dtype(v)
        norm = _norm(v.to(dtype), axes)
        if holds((norm == 0).any()):
            raise ValueError(
                f"weight_norm: v (parametrizations.{name}.original1) has "
                f"{int((norm == 0).sum())} slice(s) of all zeros, whose "
                f"direction v / ||v|| is 0 / 0 (torch's weight_norm returns "
                f"NaN there)")
        return (v.to(dtype) * (g.to(dtype) / norm)).to(v.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        g, v, axes, _ = inputs
        ctx.save_for_backward(g, v)
        ctx.axes = axes

    @staticmethod
    def backward(ctx, dw):
        g, v = ctx.saved_tensors
        dtype = compute_dtype(v)
        g_, v_, dw = g.to(dtype), v.to(dtype), dw.to(dtype)
        norm = _norm(v_, ctx.axes)
        v_hat = v_ / norm
        dw_along = _sum(dw * v_hat, ctx.axes)         # sum(dw * v_hat)
        dv = (g_ / norm) * (dw - v_hat * dw_along)
        return (dw_along.reshape(g.shape).to(g.dtype), dv.to(v.dtype), None,
                None)


class _WeightNorm(nn.Module):
    """The parametrization: original0 is g, original1 is v, as in torch."""

    def __init__(self, dim=0, name="weight"):
        super().__init__()
        self.dim = -1 if dim is None else dim
        self.name = name

    def forward(self, weight_g, weight_v):
        return _WeightNormFunction.apply(
            weight_g, weight_v, _norm_axes(weight_v, self.dim), self.name)

    def right_inverse(self, weight):
        """g = ||weight||, v = weight: the same weight, as torch starts."""
        g = _norm(weight, _norm_axes(weight, self.dim))
        return (g.reshape(()) if self.dim == -1 else g), weight


def weight_norm(module, name="weight", dim=0):
    """Weight Normalization of `module`'s parameter `name`; drop-in for
    torch.nn.utils.parametrizations.weight_norm.

    The parameter becomes w = g * v / ||v||, with the length g in
    `module.parametrizations.<name>.original0` and the direction v in
    `...original1`, starting from g = ||w||, v = w.  The same parametrization
    names, shapes and `state_dict` keys as torch's, and a `state_dict` of
    the old `torch.nn.utils.weight_norm` (keys `<name>_g`, `<name>_v`) loads
    too.

    - `module`: the module whose parameter is reparametrized (in place; it
      is also returned).
    - `name`: the parameter's name.
    - `dim`: the axis that keeps one g per slice (0: one per output channel
      of Linear and Conv); ||v|| runs over every other axis.  `None` (and
      -1, as in torch) for one g and one norm over the whole tensor.

    Plain torch with a derived backward (`_WeightNormFunction`), not
    `functional.normalize`: normalize divides by sqrt(mean square + eps)
    with eps > 0, while weight norm (in the paper and in torch) divides by
    the norm itself, with no eps.  A slice of v that is all zeros has no
    direction: torch returns NaN there; this raises a ValueError.
    """
    parametrize.register_parametrization(module, name, _WeightNorm(dim, name),
                                         unsafe=True)

    def load_old_keys(module, state_dict, prefix, *args):
        """torch's compatibility rule: `<name>_g`, `<name>_v` are g and v."""
        g_key, v_key = f"{prefix}{name}_g", f"{prefix}{name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original0"] = (
                state_dict.pop(g_key))
            state_dict[f"{prefix}parametrizations.{name}.original1"] = (
                state_dict.pop(v_key))

    module.register_load_state_dict_pre_hook(load_old_keys)
    return module
