"""Single steps of `functional`'s formula, and the fused torch primitives
that run them faster.

Each helper is one step of the formula.  Its last lines are the plain array
code, which NumPy runs for the derivations and torch's autograd traces (double
backward).  For torch tensors that autograd is not recording it first tries
torch's fused primitives (`vector_norm`, `addcmul`, matrix-vector products,
`out=` buffers): the same value in fewer passes over memory.  `fused` decides.
"""
import torch


def masked_mean(a, axes, mask, count):
    """Mean over `axes`; with a 0/1 mask, over the positions it selects.

    Shown in chapter 5, "Masked BatchNorm: what the mask fixes".
    """
    if mask is None:
        return a.mean(axis=axes, keepdims=True)
    return (a * mask).sum(axis=axes, keepdims=True) / count


FUSED_FROM = 1 << 16


def fused(*arrays):
    """Whether torch's fused kernels may replace a step: torch tensors that
    autograd is not recording.

    Only the speed differs; NumPy arrays, recorded tensors and small tensors
    take the plain lines below it (under FUSED_FROM elements a step costs its
    Python calls, not its passes over memory, and the fused route makes more
    of them).
    """
    if (not isinstance(arrays[0], torch.Tensor)
            or arrays[0].numel() < FUSED_FROM):
        return False
    # under vmap: no out=, plain lines
    if torch._C._functorch.is_functorch_wrapped_tensor(arrays[0]):
        return False
    return not torch.is_grad_enabled() or not any(
        a.requires_grad for a in arrays if isinstance(a, torch.Tensor))


def holds(condition):
    """bool(condition); False for a tensor under torch.func.vmap, which has
    one value per example."""
    if (isinstance(condition, torch.Tensor)
            and torch._C._functorch.is_batchedtensor(condition)):
        return False
    return bool(condition)


def mean_square(a, axes, mask, count):
    """mean(a * a) over `axes`."""
    if (mask is None and fused(a)
            and axes == tuple(range(a.ndim - len(axes), a.ndim))):
        # innermost axes: one read, no a * a (over outer axes torch's norm is
        # slower than a * a and a sum)
        return (torch.linalg.vector_norm(a, dim=axes, keepdim=True)
                .square_() / count)
    return masked_mean(a * a, axes, mask, count)


def scale_by(a, factor, owned):
    """a * factor; in a's buffer when fused and `owned` (a is a temporary of
    the caller's, seen by no one else)."""
    return a.mul_(factor) if owned and fused(a, factor) else a * factor


def _inner_broadcast(weight, a):
    """Whether weight is constant along a's innermost axis (BN, IN, GN),
    where torch's addcmul is slower than a multiplication and an in-place
    addition."""
    return weight.ndim == a.ndim and weight.shape[-1] == 1 and a.shape[-1] != 1


def scale_shift(xhat, weight, bias):
    """weight * xhat + bias (weight 1 and bias 0 when None), always a new
    array."""
    if bias is not None and weight is not None and fused(xhat, weight, bias):
        if _inner_broadcast(weight, xhat):
            return torch.mul(xhat, weight).add_(bias)
        return torch.addcmul(bias, xhat, weight)        # one pass, not two
    y = xhat * (1 if weight is None else weight)
    return y if bias is None else y + bias


def mean_times(a, weight, axes, mask, count):
    """mean(a * weight) over `axes` (mean(a) when weight is None), without
    forming a * weight if fused."""
    if weight is None or mask is not None or not fused(a, weight):
        return masked_mean(a if weight is None else a * weight, axes, mask,
                           count)
    # weight as broadcast against a
    shape = (1,) * (a.ndim - weight.ndim) + tuple(weight.shape)
    varying = tuple(ax for ax in axes if shape[ax] != 1)
    if varying == axes == tuple(range(a.ndim - len(axes), a.ndim)) and all(
            shape[ax] == 1 for ax in range(a.ndim) if ax not in axes):
        # LayerNorm: one matrix-vector product
        rows = a.reshape(-1, weight.numel()) @ weight.reshape(-1)
        return rows.reshape(tuple(1 if ax in axes else n
                                  for ax, n in enumerate(a.shape))) / count
    # sum over the axes where weight is constant first (all of them for
    # BatchNorm, space for GroupNorm)
    constant = tuple(ax for ax in axes if shape[ax] == 1)
    # torch: dim=() sums everything
    partial = (a.sum(dim=constant, keepdim=True) if constant else a) * weight
    return (partial.sum(dim=varying, keepdim=True) if varying
            else partial) / count


def project_out(dy, weight, mean_dxhat, xhat, mean_dxhat_xhat, rstd, out):
    """rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) with
    dxhat = dy * weight.

    That is dxhat less its components along 1 and along xhat (chapter 2's two
    projections).  `out`, a spent temporary of dy's shape, receives the result
    when fused (a fresh tensor costs page faults).
    """
    # three passes, no new buffer; rstd last, so 0 stays exactly 0
    if fused(dy, xhat, rstd, weight):
        if weight is None:
            dx = torch.sub(dy, mean_dxhat, out=out)
        elif torch.is_tensor(mean_dxhat) and not _inner_broadcast(weight, dy):
            # dy * weight - mean_dxhat
            dx = torch.addcmul(-mean_dxhat, dy, weight, out=out)
        elif torch.is_tensor(mean_dxhat):
            dx = torch.mul(dy, weight, out=out).sub_(mean_dxhat)
        else:
            # RMSNorm: no mean to take out
            dx = torch.mul(dy, weight, out=out)
        return dx.addcmul_(xhat, mean_dxhat_xhat, value=-1).mul_(rstd)
    dxhat = dy if weight is None else dy * weight
    return rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


def sum_to(a, shape):
    """Sum a broadcast array back down to `shape` (the gradient of
    broadcasting)."""
    lead = a.ndim - len(shape)      # broadcasting added these leading axes
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and a.shape[lead + i] != 1)
    # nothing to sum, yet a new array: the caller may keep it while `a`
    # changes
    if not axes:
        return a * 1
    return a.sum(axis=axes, keepdims=True).reshape(shape)
