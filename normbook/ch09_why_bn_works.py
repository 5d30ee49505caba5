"""Chapter 9's tests of why BatchNorm helps: a deep MLP and Santurkar's,
Bjorck's and Yang's measurements."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from normbook.common import data
from normbook.common.ensemble import train_classifier_ensemble
from normbook.common.models import make_norm
from normbook.common.train import seeded, set_seed


class DeepMLP(nn.Module):
    """An input layer, `depth` blocks of linear-norm-relu (optionally
    residual), a linear head.

    (N, 1, 8, 8) digits -> (N, num_classes).  init="he" draws the weights of
    the input layer and the blocks as He et al. (keeps a plain ReLU net's
    activations at a constant scale); init="torch" keeps nn.Linear's default
    (weight variance 1/(3 fan_in), which shrinks them).  `noise`, when set to
    a list of (scale, shift) pairs of shape (width,), one per block, multiplies
    and shifts each norm's output: Santurkar's "noisy BatchNorm".
    """

    def __init__(self, depth, width, norm="none", residual=False, init="he",
                 in_features=64, num_classes=10):
        super().__init__()
        self.residual, self.noise = residual, None
        bias = norm == "none"  # a norm's shift makes the bias redundant
        self.inp = nn.Linear(in_features, width)
        self.linears = nn.ModuleList(nn.Linear(width, width, bias=bias)
                                     for _ in range(depth))
        self.norms = nn.ModuleList(make_norm(norm, width, "vector")
                                   for _ in range(depth))
        self.head = nn.Linear(width, num_classes)
        for layer in [self.inp, *self.linears] if init == "he" else []:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = self.inp(x.flatten(1))                               # N, width
        for i, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            z = norm(linear(h))                                  # N, width
            if self.noise is not None:
                scale, shift = self.noise[i]
                z = z * scale + shift
            z = torch.relu(z)
            h = h + z if self.residual else z
        return self.head(h)


def sample_noise(depth, width, generator, max_shift=1.0, max_scale=2.0):
    """One step's noise: per block and unit, shift ~ U(-max_shift, max_shift),
    scale ~ U(1/max_scale, max_scale).

    Resampled at every step, so the distribution each layer sees changes every
    step.
    """
    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(width, generator=generator)
    return [(uniform(1 / max_scale, max_scale), uniform(-max_shift, max_shift))
            for _ in range(depth)]


def _loss(model, params, x, y):
    return F.cross_entropy(functional_call(model, params, (x,)), y)


def _grads(model, params, x, y):
    """Gradient of the batch loss at `params` (name -> tensor) -> (loss, name
    -> gradient)."""
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    loss = _loss(model, params, x, y)
    grads = torch.autograd.grad(loss, list(params.values()))
    return loss.item(), dict(zip(params, grads))


def _upstream(name, block):
    """Whether parameter `name` of DeepMLP lies before block `block` (input
    layer, earlier blocks)."""
    parts = name.split(".")
    return parts[0] == "inp" or (parts[0] in ("linears", "norms")
                                 and int(parts[1]) < block)


def ics(model, x, y, lr, layers):
    """Santurkar et al.'s internal covariate shift of each block in `layers`
    for one SGD step of size lr.

    G_i is block i's weight gradient with every layer at step t; G'_i the same
    gradient after the layers before block i (input layer included) took their
    step t -> t + 1.  Returns [(||G_i - G'_i||, cos(G_i, G'_i)) for i in
    layers].  Uses the same batch throughout; BatchNorm's running statistics
    are left untouched.

    Shown in chapter 9, "Internal covariate shift, measured".
    """
    params = dict(model.named_parameters())
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    _, grads = _grads(model, {**params}, x, y)
    names = list(params)
    result = []
    for i in layers:
        key = f"linears.{i}.weight"
        moved = {n: (params[n] - lr * grads[n] if _upstream(n, i)
                     else params[n]).detach() for n in names}
        _, moved_grads = _grads(model, moved, x, y)
        g, g2 = grads[key].flatten(), moved_grads[key].flatten()
        result.append(((g - g2).norm().item(),
                       F.cosine_similarity(g, g2, dim=0).item()))
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
    return result


def smoothness(model, x, y, step_sizes):
    """Santurkar et al.'s landscape measures along the gradient g at the
    current point, one batch.

    For each step size s, move to w - s g.  Returns (loss range: max - min of
    the loss over the points, gradient predictiveness:
    max ||grad(w - s g) - g||, effective beta:
    max ||grad(w - s g) - g|| / ||s g||).

    Shown in chapter 9, "Smoothness along the gradient".
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    params = dict(model.named_parameters())
    loss0, grads = _grads(model, params, x, y)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads.values())).item()
    losses, changes, betas = [loss0], [], []
    for s in step_sizes:
        moved = {n: (p - s * grads[n]).detach() for n, p in params.items()}
        loss, moved_grads = _grads(model, moved, x, y)
        change = torch.sqrt(sum((moved_grads[n] - grads[n]).pow(2).sum()
                                for n in grads)).item()
        losses.append(loss)
        changes.append(change)
        betas.append(change / (s * norm))
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
    return max(losses) - min(losses), max(changes), max(betas)


def measured_run(*, norm, seed, depth=16, width=64, steps=300, lr=0.05,
                 batch_size=64, noise=None, measure_every=25,
                 layers=(1, 5, 9, 13), step_sizes=(0.025, 0.05, 0.1, 0.2)):
    """Train DeepMLP on the digits with plain SGD, measuring ICS and
    smoothness every measure_every steps.

    Returns "train_loss" per step, "measure_step", and per measurement
    "ics_l2" and "ics_cos" (one value per block in `layers`), "loss_range",
    "grad_change", "beta".  noise=(max_shift, max_scale) adds a fresh
    sample_noise after every norm at every step.
    """
    x, y, _, _ = data.digits(seed=0)
    set_seed(seed)
    model = DeepMLP(depth, width, norm)
    noise_gen = torch.Generator().manual_seed(1000 + seed)
    order_gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    out = {k: [] for k in ("train_loss", "measure_step", "ics_l2", "ics_cos",
                           "loss_range", "grad_change", "beta")}
    for step in range(steps):
        idx = torch.randint(len(x), (batch_size,), generator=order_gen)
        if noise is not None:
            model.noise = sample_noise(depth, width, noise_gen, *noise)
        if measure_every and step % measure_every == 0:
            shifts = ics(model, x[idx], y[idx], lr, layers)
            out["measure_step"].append(step)
            out["ics_l2"].append([d for d, _ in shifts])
            out["ics_cos"].append([c for _, c in shifts])
            loss_range, change, beta = smoothness(model, x[idx], y[idx],
                                                  step_sizes)
            out["loss_range"].append(loss_range)
            out["grad_change"].append(change)
            out["beta"].append(beta)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out["train_loss"].append(loss.item())
    return out


def lr_sweep(*, norm, lrs, seeds, depth=16, width=64, steps=200,
             batch_size=64):
    """Train DeepMLP(norm) with SGD (momentum 0.9) at every lr for every seed,
    as one ensemble.

    Returns {"lr", "seed", "final_loss"} per member: the mean training loss of
    the last 20 steps (inf for a run whose loss turned nan or inf).
    """
    x, y, _, _ = data.digits(seed=0)
    members = [(lr, seed) for lr in lrs for seed in seeds]
    models = seeded(lambda: DeepMLP(depth, width, norm),
                    [seed for _, seed in members])
    histories, _ = train_classifier_ensemble(
        models, x, y, steps=steps, batch_size=batch_size, optimizer="sgd",
        lrs=[lr for lr, _ in members], seeds=[s for _, s in members])
    results = []
    for (lr, seed), history in zip(members, histories):
        tail = torch.tensor(history["train_loss"][-20:])
        final = (float("inf")
                 if history["diverged"] or not torch.isfinite(tail).all()
                 else tail.mean().item())
        results.append(dict(lr=lr, seed=seed, final_loss=final))
    return results


def init_grad_norms(*, norm, seed, depth=50, width=128, residual=False,
                    init="he", batch_size=64):
    """Norm of each block's weight gradient at initialization, on one batch of
    digits; block 1 first."""
    x, y, _, _ = data.digits(seed=0)
    set_seed(seed)
    model = DeepMLP(depth, width, norm, residual, init)
    idx = torch.randperm(
        len(x), generator=torch.Generator().manual_seed(seed))[:batch_size]
    F.cross_entropy(model(x[idx]), y[idx]).backward()
    return [layer.weight.grad.norm().item() for layer in model.linears]
