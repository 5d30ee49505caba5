"""Chapter 15, "BatchNorm couples the examples of a batch": per-example
gradients with torch.func, and how a batch's statistics tie them together.

Every function takes a model and a batch (x (N, ...), y (N,)) and returns
gradients flattened to one row per example, (N, P), or one row, (P,), for
P parameters, with the loss summed over examples (so that per-example
gradients can add up to the batch's).
"""
import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev, vmap

from normlib.nn import BatchNorm2d


def _flat(grads):
    """name -> (..., *shape) gradients -> one tensor (..., P)."""
    return torch.cat([g.reshape(*g.shape[:g.dim() - p.dim()], -1)
                      for g, p in grads.values()], dim=-1)


def _state(model):
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    return params, buffers


def per_example_grads(model, x, y, pass_buffers=False):
    """torch.func's per-example gradients: vmap over the examples of
    grad(loss of one example) -> (N, P).

    Under vmap the model sees one example at a time, as a batch of one
    (x[i] unsqueezed to (1, ...)): what any norm computes is computed from
    that example alone.  pass_buffers=True hands the buffers to the mapped
    function as an input (the same for every example) instead of leaving
    them in its closure.

    Shown in chapter 15, "BatchNorm couples the examples of a batch".
    """
    params, buffers = _state(model)

    def loss(params, buffers, xi, yi):
        out = functional_call(model, (params, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    if pass_buffers:       # one input, the same for every example
        grads = vmap(grad(loss), in_dims=(None, None, 0, 0))(
            params, buffers, x, y)
    else:                  # the buffers stay in the closure
        grads = vmap(grad(lambda p, xi, yi: loss(p, buffers, xi, yi)),
                     in_dims=(None, 0, 0))(params, x, y)
    return _flat({name: (g, params[name]) for name, g in grads.items()})


def batch_grad(model, x, y):
    """The gradient of the batch's summed loss, one forward over all N
    examples -> (P,)."""
    params, buffers = _state(model)

    def loss(params):
        out = functional_call(model, (params, buffers), (x,))
        return F.cross_entropy(out, y, reduction="sum")

    grads = grad(loss)(params)
    return _flat({name: (g, params[name]) for name, g in grads.items()})


def loss_gradients(model, x, y):
    """The gradient of each example's loss within the batch: the Jacobian
    of the N per-example losses of one forward over the whole batch ->
    (N, P).  Its rows add up to `batch_grad` for any norm; with batch
    statistics, row i also depends on the other examples.

    Shown in chapter 15, "BatchNorm couples the examples of a batch".
    """
    params, buffers = _state(model)

    def losses(params):
        out = functional_call(model, (params, buffers), (x,))
        return F.cross_entropy(out, y, reduction="none")       # N

    grads = jacrev(losses)(params)                     # name -> (N, *shape)
    return _flat({name: (g, params[name]) for name, g in grads.items()})


def without_running_stats(model):
    """A copy of `model` whose BatchNorm2d layers keep no running
    statistics (track_running_stats=False, the buffers None): torch.func's
    documented patch for vmap.  They then normalize with the statistics of
    whatever batch they see, in train and in eval mode."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, BatchNorm2d):
            module.track_running_stats = False
            for name in ("running_mean", "running_var",
                         "num_batches_tracked"):
                setattr(module, name, None)
    return twin


def relative_gap(a, b):
    """||a - b|| / ||b|| over all entries."""
    return ((a - b).norm() / b.norm()).item()


def leak(model, x, y, j=0, seed=0):
    """How much example j reaches into the other examples' gradients:
    replace x[j] by a random image of the same spread and return
    ||change of rows i != j of loss_gradients|| / ||those rows||.

    0 when each example's gradient depends on that example alone.
    """
    generator = torch.Generator().manual_seed(seed)
    other = x.clone()
    other[j] = torch.randn(x[j].shape, generator=generator) * x.std()
    rest = torch.arange(len(x)) != j
    before = loss_gradients(model, x, y)[rest]
    after = loss_gradients(model, other, y)[rest]
    return relative_gap(after, before)
