"""Many small models trained as one: torch.func.vmap runs E independent runs
through one Python loop.

A tiny model's training step pays a fixed cost per operation (Python,
dispatch) on top of its arithmetic.  Stacking E models of the same
architecture along a new leading axis and mapping one functional call over
it pays the fixed part once per step for all E; the arithmetic stays E times
one member's (benchmarks/bench_train.py measures both: "member ms" is what
batching cannot remove).  Each member keeps its own initialization, data
order, learning rate and warm-up, and its own Adam state: the members never
interact, so each ends as if trained alone (up to float rounding), as
tests/normbook/common/test_ensemble.py checks.
"""
import copy
import math
import warnings

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from normbook.common.train import index_stream, lr_scale
from normbook.common.transformer import SelfAttention


class Ensemble:
    """E models of one architecture as stacked parameters and buffers, called
    through vmap."""

    def __init__(self, models):
        # name -> (E, *shape)
        self.params, self.buffers = stack_module_state(list(models))
        self.size = len(models)
        # the architecture only
        self.base = copy.deepcopy(models[0]).to("meta")
        for module in self.base.modules():
            if isinstance(module, SelfAttention):
                # vmap has no batching rule for the fused kernel
                module.fused = False

    def __call__(self, *inputs, training=True):
        """inputs stacked along a leading member axis (E, ...) -> outputs
        (E, ...)."""
        self.base.train(training)

        def one(params, buffers, *member_inputs):
            return functional_call(self.base, (params, buffers), member_inputs)

        # BatchNorm's running-statistics update has no fast vmap rule
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "There is a performance drop",
                                    UserWarning)
            return vmap(one)(self.params, self.buffers, *inputs)

    def member(self, index, model):
        """Copy member `index`'s parameters and buffers into `model` (same
        architecture) and return it."""
        state = {name: value[index]
                 for name, value in {**self.params, **self.buffers}.items()}
        model.load_state_dict(state)
        return model


def lm_losses(logits, targets):
    """Per-member next-token cross-entropy: logits (E, B, T, V), targets
    (E, B, T) -> (E,)."""
    E, B, T, V = logits.shape                # members, batch, time, vocab
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
                           reduction="none").view(E, -1).mean(1)


class StackedAdam:
    """Adam over stacked parameters with one learning rate per member
    (torch.optim.Adam's defaults)."""

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.betas, self.eps, self.t = list(params), betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lrs):
        """lrs (E,): this step's learning rate of every member."""
        self.t += 1
        b1, b2 = self.betas
        grads = [p.grad for p in self.params]
        # m = b1 m + (1 - b1) g
        torch._foreach_lerp_(self.m, grads, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        # v = b2 v + (1 - b2) g^2
        torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, math.sqrt(1 - b2 ** self.t))
        torch._foreach_add_(denom, self.eps)        # sqrt(v_hat) + eps
        steps = torch._foreach_div(self.m, denom)
        scale = lrs / (1 - b1 ** self.t)            # lr * m_hat / m
        for p, s in zip(self.params, steps):
            p.sub_(s * scale.view(-1, *[1] * (p.ndim - 1)))


class StackedSGD:
    """SGD with momentum over stacked parameters, one learning rate per
    member (as torch.optim.SGD)."""

    def __init__(self, params, momentum=0.9):
        self.params, self.momentum = list(params), momentum
        self.buffers = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lrs):
        grads = [p.grad for p in self.params]
        torch._foreach_mul_(self.buffers, self.momentum)
        torch._foreach_add_(self.buffers, grads)    # buf = momentum buf + g
        for p, buf in zip(self.params, self.buffers):
            p.sub_(buf * lrs.view(-1, *[1] * (p.ndim - 1)))


def _lr_scales(step, steps, warmups, schedule):
    """Each member's learning-rate factor at `step`, as train.lr_scale gives
    it."""
    return torch.tensor([lr_scale(step, steps, warmup, schedule)
                         for warmup in warmups])


@torch.no_grad()
def _test_losses(ensemble, windows_test, batch_size=256):
    """Eval-mode next-token loss of every member on the same test windows
    (N, T + 1) -> (E,)."""
    total = torch.zeros(ensemble.size, dtype=torch.float64)
    for chunk in windows_test.split(batch_size):
        stacked = chunk.expand(ensemble.size, *chunk.shape)     # E, n, T + 1
        logits = ensemble(stacked[:, :, :-1], training=False)
        total += (lm_losses(logits, stacked[:, :, 1:]).double()
                  * chunk[:, 1:].numel())
    return total / windows_test[:, 1:].numel()


def _fit(ensemble, batch_losses, *, steps, lrs, warmup_steps, schedule,
         optimizer, on_step=None):
    """The loop both trainers share: batch_losses(step) -> (E,) losses of
    this step's batches.

    Returns (losses (E, steps), diverged (E,)).  A member whose loss turns nan
    or inf gets learning rate 0 from then on and is reported as diverged.
    """
    E = ensemble.size
    warmups = list(warmup_steps or [0] * E)
    base_lrs = torch.tensor(lrs, dtype=torch.float32)
    optimizer = {"adam": StackedAdam, "sgd": StackedSGD}[optimizer](
        ensemble.params.values())
    diverged = torch.zeros(E, dtype=torch.bool)
    losses = []
    for step in range(steps):
        member_losses = batch_losses(step)                           # E
        diverged |= ~torch.isfinite(member_losses.detach())
        for p in ensemble.params.values():
            p.grad = None
        member_losses.masked_fill(diverged, 0.0).sum().backward()
        optimizer.step(torch.where(
            diverged, 0.0,
            base_lrs * _lr_scales(step, steps, warmups, schedule)))
        losses.append(member_losses.detach())
        if on_step is not None:
            on_step(step)
    return torch.stack(losses, 1), diverged


def train_lm_ensemble(models, windows, *, steps, batch_size, lrs, seeds,
                      warmup_steps=None, schedule="constant",
                      windows_test=None, eval_every=None):
    """Train E language models at once, member e as train.train_lm would with
    lrs[e], seeds[e].

    warmup_steps: one per member (default none).  Returns (one history per
    member, the Ensemble): "train_loss" per step, every eval_every steps
    "eval_step" and "test_loss_curve", "diverged", and the final eval-mode
    "test_loss" (inf for a member whose loss turned nan or inf; it is left out
    from then on).  The models' initialization must already differ (build
    each after set_seed(seed)).
    """
    ensemble = Ensemble(models)
    streams = [index_stream(len(windows), batch_size, seed, None)
               for seed in seeds]
    curve, eval_steps = [], []

    def batch_losses(step):
        # E, B, T + 1
        batch = windows[torch.stack([next(stream) for stream in streams])]
        return lm_losses(ensemble(batch[:, :, :-1]), batch[:, :, 1:])

    def evaluate(step):
        if (eval_every and windows_test is not None
                and (step + 1) % eval_every == 0):
            eval_steps.append(step)
            curve.append(_test_losses(ensemble, windows_test))

    losses, diverged = _fit(ensemble, batch_losses, steps=steps, lrs=lrs,
                            warmup_steps=warmup_steps, schedule=schedule,
                            optimizer="adam", on_step=evaluate)
    test = (_test_losses(ensemble, windows_test)
            if windows_test is not None else None)
    histories = []
    for e in range(ensemble.size):
        history = {"train_loss": losses[e].tolist(),
                   "diverged": bool(diverged[e]), "eval_step": eval_steps,
                   "test_loss_curve": [point[e].item() for point in curve]}
        if test is not None:
            history["test_loss"] = math.inf if diverged[e] else test[e].item()
        histories.append(history)
    return histories, ensemble


def train_classifier_ensemble(models, x, y, *, steps, batch_size, lrs, seeds,
                              optimizer="adam", warmup_steps=None,
                              schedule="constant"):
    """Train E classifiers on (x, y) at once, member e as
    train.train_classifier would with lrs[e], seeds[e].

    Returns (one history per member with "train_loss" and "diverged", the
    Ensemble); evaluate the members with `Ensemble.member`.
    """
    ensemble = Ensemble(models)
    streams = [index_stream(len(x), batch_size, seed, None) for seed in seeds]

    def batch_losses(step):
        index = torch.stack([next(stream) for stream in streams])   # E, B
        logits = ensemble(x[index])                           # E, B, classes
        return F.cross_entropy(logits.flatten(0, 1), y[index].flatten(),
                               reduction="none").view(len(index), -1).mean(1)

    losses, diverged = _fit(ensemble, batch_losses, steps=steps, lrs=lrs,
                            warmup_steps=warmup_steps, schedule=schedule,
                            optimizer=optimizer)
    return [{"train_loss": losses[e].tolist(), "diverged": bool(diverged[e])}
            for e in range(ensemble.size)], ensemble
