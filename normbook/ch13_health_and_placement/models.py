"""Chapter 13's networks: a deep MLP whose norm sits before or after the
activation, an MLP with dropout before or after BatchNorm, and a BatchNorm
whose statistics are constants in the backward pass."""
import math

import torch
from torch import nn

from normbook.common.models import make_norm
from normlib.nn import BatchNorm1d

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ProbeMLP(nn.Module):
    """`depth` blocks of linear -> norm -> activation (place="before", the
    BN paper's order) or linear -> activation -> norm (place="after"), then
    a linear head: (N, 1, 8, 8) digits -> (N, 10) logits.

    norm: "none", "bn" or "ln" (`models.make_norm`, vector layout).
    init_scale=None keeps torch's default initialization of nn.Linear
    (uniform, std 1 / sqrt(3 fan_in)); a number s draws every hidden weight
    from N(0, s^2 / fan_in) instead.  The linear layers have a bias only
    where no norm's shift follows them directly: without a norm, or with
    the norm after the activation.  `activations` lists the activation
    modules, the layers the probes watch.
    """

    def __init__(self, depth=8, width=64, norm="none", activation="tanh",
                 place="before", init_scale=None):
        super().__init__()
        if place not in ("before", "after"):
            raise ValueError(f"place must be 'before' or 'after', "
                             f"got {place!r}")
        bias = norm == "none" or place == "after"
        self.place = place
        self.linears = nn.ModuleList(
            nn.Linear(64 if i == 0 else width, width, bias=bias)
            for i in range(depth))
        self.norms = nn.ModuleList(make_norm(norm, width, "vector")
                                   for _ in range(depth))
        self.activations = nn.ModuleList(ACTIVATIONS[activation]()
                                         for _ in range(depth))
        self.head = nn.Linear(width, 10)
        if init_scale is not None:
            for linear in self.linears:
                fan_in = linear.weight.shape[1]
                nn.init.normal_(linear.weight,
                                std=init_scale / math.sqrt(fan_in))

    def forward(self, x):
        h = x.flatten(1)                                  # N, 64
        for linear, norm, act in zip(self.linears, self.norms,
                                     self.activations):
            h = (act(norm(linear(h))) if self.place == "before"
                 else norm(act(linear(h))))               # N, width
        return self.head(h)                               # N, 10


class DropoutMLP(nn.Module):
    """Three blocks of linear -> BatchNorm -> ReLU and a linear head, with
    dropout (rate p) at `dropout`:

    - "none": no dropout;
    - "every": after every block's ReLU, so it feeds the next block's
      linear -> BN (dropout before BN, Li et al.'s case) and, after the
      last block, the head;
    - "last": only after the last block, before the head: after every BN.
    """

    def __init__(self, dropout="every", p=0.5, width=64, depth=3):
        super().__init__()
        if dropout not in ("none", "every", "last"):
            raise ValueError("dropout must be 'none', 'every' or 'last', "
                             f"got {dropout!r}")
        layers = []
        for i in range(depth):
            layers += [nn.Linear(64 if i == 0 else width, width, bias=False),
                       BatchNorm1d(width), nn.ReLU()]
            if dropout == "every" or (dropout == "last" and i == depth - 1):
                layers.append(nn.Dropout(p))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))


class DetachedBatchNorm1d(nn.Module):
    """BatchNorm without affine parameters whose batch mean and variance are
    constants in the backward pass (`detach_var=False` keeps the variance's
    gradient).

    A broken norm, kept here to show Ioffe & Szegedy's argument: it is not
    in normlib, which holds only norms meant for use.

    Shown in chapter 13, "Gradients through the statistics".
    """

    def __init__(self, eps=1e-5, detach_var=True):
        super().__init__()
        self.eps, self.detach_var = eps, detach_var

    def forward(self, x):
        mean = x.mean(0).detach()                         # C
        var = x.var(0, unbiased=False)                    # C
        if self.detach_var:
            var = var.detach()
        return (x - mean) / torch.sqrt(var + self.eps)    # N, C


class CenteredMLP(nn.Module):
    """`depth` blocks of linear (with bias) -> norm without affine
    parameters -> ReLU, and a linear head: Ioffe & Szegedy's layer
    x = u + b followed by a normalization.

    detached=False normalizes with normlib's BatchNorm1d (affine=False, the
    derived backward); True with `DetachedBatchNorm1d`.
    """

    def __init__(self, detached, depth=3, width=64):
        super().__init__()
        self.linears = nn.ModuleList(
            nn.Linear(64 if i == 0 else width, width) for i in range(depth))
        self.norms = nn.ModuleList(
            DetachedBatchNorm1d() if detached
            else BatchNorm1d(width, affine=False, track_running_stats=False)
            for _ in range(depth))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        h = x.flatten(1)
        for linear, norm in zip(self.linears, self.norms):
            h = torch.relu(norm(linear(h)))
        return self.head(h)
