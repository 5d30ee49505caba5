"""The training loop of chapter 14's runs: many small models of one
architecture trained as one batched model (`normbook.common.ensemble`), with
SGD, per-member weight decay (with or without the norms' own parameters),
the weights' norm and angular step recorded per step, and Batch
Renormalization's rmax/dmax schedule."""
import torch
import torch.nn.functional as F

from normbook.common.ensemble import Ensemble, StackedSGD
from normbook.common.models import IgnoreMask
from normbook.common.train import index_stream, lr_scale
from normlib.nn import BatchRenorm1d, BatchRenorm2d

# Ioffe (2017), section 4: BatchNorm (rmax=1, dmax=0) for the first 5k of
# 160k steps, then relaxed to dmax=5 at 25k and rmax=3 at 40k
RENORM_SCHEDULE = dict(start=5_000, d_full=25_000, r_full=40_000,
                       steps=160_000, rmax=3.0, dmax=5.0)


def renorm_limits(step, steps, schedule=RENORM_SCHEDULE):
    """(rmax, dmax) at `step` of a run of `steps`: Ioffe's schedule with
    each milestone at the same fraction of the run as in the paper, the
    bounds relaxed linearly (the paper says "gradually").

    Shown in chapter 14, "Batch Renormalization's schedule".
    """
    at = step / steps * schedule["steps"]       # the paper's step count
    start = schedule["start"]

    def ramp(full):
        return min(1.0, max(0.0, (at - start) / (full - start)))

    return (1 + (schedule["rmax"] - 1) * ramp(schedule["r_full"]),
            schedule["dmax"] * ramp(schedule["d_full"]))


def norm_parameter_names(model):
    """The names of the parameters of `model`'s norm layers (their scale
    gamma and shift beta)."""
    return {f"{prefix}.{name}" for prefix, module in model.named_modules()
            if isinstance(module, IgnoreMask)
            for name, _ in module.named_parameters()}


def train_members(models, x, y, *, steps, batch_size, lr, seeds,
                  momentum=0.0, schedule="constant", decay=None,
                  decay_norms=None, watch=(), renorm=None):
    """Train E models of one architecture on (x, y) as one batched model:
    SGD (torch.optim.SGD's update, weight decay added to the gradient),
    member e with its own seed, weight decay decay[e] (default 0) and, if
    decay_norms[e] is False, no decay on its norm layers' parameters.

    watch: parameter names whose norm |w| (before each step) and angular
    step, the angle between w before and after the step, are recorded per
    step.  renorm: a function step -> (rmax, dmax) for every Batch
    Renormalization layer.  Returns (the Ensemble, {"loss": (E, steps),
    name: {"norm": (E, steps), "angle": (E, steps)}}).
    """
    ensemble = Ensemble(models)
    E = ensemble.size
    decay = torch.zeros(E) if decay is None else torch.as_tensor(decay)
    keep = (torch.ones(E) if decay_norms is None
            else torch.as_tensor(decay_norms, dtype=torch.float32))
    norm_names = norm_parameter_names(models[0])
    renorms = [m for m in ensemble.base.modules()
               if isinstance(m, (BatchRenorm1d, BatchRenorm2d))]
    optimizer = StackedSGD(ensemble.params.values(), momentum)
    streams = [index_stream(len(x), batch_size, seed, None) for seed in seeds]
    record = {"loss": torch.zeros(E, steps)}
    record |= {name: {"norm": torch.zeros(E, steps),
                      "angle": torch.zeros(E, steps)} for name in watch}
    for step in range(steps):
        if renorm is not None:
            for module in renorms:
                module.rmax, module.dmax = renorm(step)
        index = torch.stack([next(stream) for stream in streams])  # E, B
        logits = ensemble(x[index])                        # E, B, classes
        losses = F.cross_entropy(logits.flatten(0, 1), y[index].flatten(),
                                 reduction="none").view(E, -1).mean(1)
        for p in ensemble.params.values():
            p.grad = None
        losses.sum().backward()
        before = {name: ensemble.params[name].detach().flatten(1).double()
                  for name in watch}
        with torch.no_grad():
            for name, p in ensemble.params.items():
                rate = decay * keep if name in norm_names else decay
                p.grad.add_(p * rate.view(-1, *[1] * (p.ndim - 1)))
        optimizer.step(torch.full((E,), lr * lr_scale(step, steps, 0,
                                                      schedule)))
        record["loss"][:, step] = losses.detach()
        for name, w in before.items():
            after = ensemble.params[name].detach().flatten(1).double()
            cosine = F.cosine_similarity(w, after, dim=1).clamp(-1, 1)
            record[name]["norm"][:, step] = w.norm(dim=1)
            record[name]["angle"][:, step] = torch.arccos(cosine)
    return ensemble, record

