"""A network's health in numbers: per-layer activations and their
gradients, the saturated and dead fractions, and the update:data ratio.

These are the pictures Karpathy's makemore lectures draw, made into
functions any chapter can call:

- `probe(model, layers, x, y)` runs one forward and backward pass and
  keeps, for each watched module, its output a (N, C) and the gradient of
  the loss with respect to it, dL/da;
- `layer_stats` turns one layer's pair into numbers: mean, std, histogram,
  the saturated fraction |a| > SATURATED (tanh) and the dead fraction (ReLU
  units that are 0 for every sample);
- `snapshot` and `update_ratios` measure the update:data ratio per weight
  matrix, std(W_after - W_before) / std(W_before), over one optimizer step.
"""
import torch
import torch.nn.functional as F

# tanh(z) beyond 0.97 means |z| > 2.09, where tanh'(z) = 1 - tanh(z)^2 is
# below 0.06: Karpathy's makemore threshold
SATURATED = 0.97


def saturated_fraction(a, threshold=SATURATED):
    """Fraction of the entries of a tanh output with |a| > threshold (the
    flat tails, where tanh' < 1 - threshold**2)."""
    return (a.abs() > threshold).float().mean().item()


def dead_fraction(a):
    """Fraction of the units (columns of a (N, C)) whose output is exactly 0
    for every one of the N samples: dead ReLUs on this batch, which pass no
    gradient to their weights."""
    return (a == 0).all(dim=0).float().mean().item()


def histogram(values, bins=60, limits=None):
    """Density histogram of all entries -> (centres (bins,), density
    (bins,)); limits=(lo, hi) fixes the range (default: min and max), and
    values outside it are left out."""
    values = values.detach().flatten().double()
    lo, hi = limits if limits is not None else (values.min().item(),
                                                 values.max().item())
    if hi <= lo:
        hi = lo + 1e-12
    counts = torch.histc(values, bins=bins, min=lo, max=hi)
    width = (hi - lo) / bins
    centres = lo + width * (torch.arange(bins, dtype=torch.float64) + 0.5)
    density = counts / max(counts.sum().item(), 1.0) / width
    return centres.numpy(), density.numpy()


def probe(model, layers, x, y):
    """One forward and backward pass of `model` on (x, y), cross-entropy,
    in the model's current mode -> [(a, grad) per module of `layers`].

    a is the module's output (N, C) and grad is dL/da, the gradient that
    flows back into it; both detached.  The model's parameter gradients are
    left as this pass made them (zeroed first).

    Shown in chapter 13, "The probes".
    """
    outputs, handles = [], []

    def keep(module, inputs, output):
        output.retain_grad()        # a non-leaf tensor's grad is not kept
        outputs.append(output)

    for layer in layers:
        handles.append(layer.register_forward_hook(keep))
    try:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    finally:
        for handle in handles:
            handle.remove()
    return [(a.detach(), a.grad.detach()) for a in outputs]


def layer_stats(a, grad, bins=60, limits=(-1.0, 1.0), grad_limits=None):
    """The numbers of one layer's (a, grad) from `probe`.

    Returns dict: "mean", "std" of a; "saturated" (|a| > SATURATED) and
    "dead" fractions; "grad_std"; "hist" (centres, density) of a over
    `limits` and "grad_hist" of grad over `grad_limits` (default: +-4
    grad_std).  The saturated fraction means something for tanh, the dead
    one for ReLU.
    """
    grad_std = grad.std().item()
    if grad_limits is None:
        grad_limits = (-4 * grad_std, 4 * grad_std)
    return {"mean": a.mean().item(), "std": a.std().item(),
            "saturated": saturated_fraction(a), "dead": dead_fraction(a),
            "grad_std": grad_std,
            "hist": histogram(a, bins, limits),
            "grad_hist": histogram(grad, bins, grad_limits)}


def weight_matrices(model):
    """(name, parameter) of every parameter with 2 or more dimensions: the
    weights whose update:data ratio is watched (biases and a norm's
    gamma, beta are left out, as in makemore)."""
    return [(name, p) for name, p in model.named_parameters()
            if p.ndim >= 2]


@torch.no_grad()
def snapshot(model):
    """Copies of the weight matrices before an optimizer step, for
    `update_ratios`."""
    return {name: p.detach().clone() for name, p in weight_matrices(model)}


@torch.no_grad()
def update_ratios(model, before):
    """The update:data ratio of each weight matrix over the step since
    `before = snapshot(model)` -> {name: ratio}.

    ratio = std(W_after - W_before) / std(W_before), the standard
    deviations over all entries of the matrix.  For plain SGD the change is
    lr * grad, and this is makemore's (lr * p.grad).std() / p.data.std();
    taking the change itself makes it hold for any optimizer (momentum,
    Adam).  Its log10 is what makemore plots, with about -3 as the rule of
    thumb.

    Shown in chapter 13, "The probes".
    """
    return {name: ((p - before[name]).std() / before[name].std()).item()
            for name, p in weight_matrices(model)}
