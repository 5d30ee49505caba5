"""Chapter 14's weight-decay runs: what decay does to the weights that feed
a BatchNorm (their norm and their angular step), and the recipe of no decay
on the norms' own scale and shift.

A run builds its own data and models from its arguments and returns plain
numbers, so any worker of `normbook.common.parallel.run_all` can run it.
"""
import torch
import torch.nn.functional as F

from normbook.ch14_weights_and_small_batches.training import (
    norm_parameter_names,
    train_members,
)
from normbook.common import data
from normbook.common.models import TinyMLP
from normbook.common.train import accuracy, set_seed

# the weights that feed a BatchNorm in TinyMLP: scale-invariant, row by row
WATCHED = ("fc1.weight", "fc2.weight")
# arm -> (decay on?, decay on the norms' gamma and beta too?)
ARMS = {"none": (False, True), "all": (True, True),
        "no_norms": (True, False)}


def invariance_check(model, x, y, factor=2.0):
    """For each WATCHED layer of a BatchNorm TinyMLP in train mode, on the
    batch (x, y): the largest |cosine| between a row of the weight and the
    row of its gradient, and factor * |grad| after the layer's weight is
    scaled by `factor`, divided by |grad| before (1 for a scale-invariant
    layer: the gradient scales as 1 / |w|).  The model is left as it was.

    Shown in chapter 14, "Why decay changes the step".
    """
    def gradients():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()
                if name in WATCHED}

    model.train()
    weights = dict(model.named_parameters())
    before = gradients()
    result = {}
    for name in WATCHED:
        cosine = F.cosine_similarity(weights[name], before[name], dim=1)
        with torch.no_grad():
            weights[name].mul_(factor)
        after = gradients()[name]
        with torch.no_grad():
            weights[name].div_(factor)
        result[name] = dict(
            cosine=cosine.abs().max().item(),
            ratio=(factor * after.norm() / before[name].norm()).item())
    return result


def _members(arms, seeds, decay):
    """Models, seeds, decay rates and norm flags, arm by arm."""
    models, member_seeds, rates, norms, labels = [], [], [], [], []
    for arm in arms:
        on, with_norms = ARMS[arm]
        for seed in seeds:
            set_seed(seed)
            models.append(TinyMLP("bn"))
            member_seeds.append(seed)
            rates.append(decay if on else 0.0)
            norms.append(with_norms)
            labels.append(arm)
    return models, member_seeds, rates, norms, labels


def decay_dynamics_run(*, seeds, steps, lr, decay, batch_size=32):
    """TinyMLP with BatchNorm, plain SGD at a constant `lr` for `steps`,
    in three arms (ARMS): no decay, decay on every parameter, decay on all
    but the norms' own.  Returns one dict per arm and seed: per step, for
    each WATCHED layer, |w| ("norm") and the angle in radians between w
    before and after the step ("angle"); after training, the eval-mode test
    accuracy "acc", |gamma| of each norm, and the median over fc2's
    features of the variance its pre-activations have in a batch of 256
    ("fc2_var", which BatchNorm divides by sqrt(var + eps)).

    Shown in chapter 14, "Measuring the step".
    """
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    models, member_seeds, rates, norms, labels = _members(
        ARMS, seeds, decay)
    ensemble, record = train_members(
        models, x_train, y_train, steps=steps, batch_size=batch_size,
        lr=lr, seeds=member_seeds, decay=rates, decay_norms=norms,
        watch=WATCHED)
    results = []
    for index, model in enumerate(models):
        model = ensemble.member(index, model)
        with torch.no_grad():
            hidden = torch.relu(model.norm1(model.fc1(x_train[:256]
                                                      .flatten(1))))
            fc2_var = model.fc2(hidden).var(0, unbiased=False).median()
        results.append(dict(
            arm=labels[index], seed=member_seeds[index],
            acc=accuracy(model, x_test, y_test), fc2_var=fc2_var.item(),
            gamma={name: model.get_parameter(name).norm().item()
                   for name in sorted(norm_parameter_names(model))
                   if name.endswith("weight")},
            **{name: {key: record[name][key][index].tolist()
                      for key in ("norm", "angle")} for name in WATCHED}))
    return results


def decay_recipe_run(*, seeds, decay, epochs, lr=0.1, batch_size=32):
    """TinyMLP with BatchNorm trained as chapter 4 trains at batch 32 (SGD
    with momentum 0.9, a cosine decay of `lr` over `epochs`), with weight
    decay `decay` on every parameter ("all") or on all but the norms' own
    gamma and beta ("no_norms"), the same seeds in both arms.  Returns one
    dict per arm and seed: the eval-mode test accuracy "acc", |gamma| of
    the norm before the head ("gamma2") and the mean training loss of the
    last epoch ("loss_last").

    Shown in chapter 14, "No decay on gamma and beta?".
    """
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    models, member_seeds, rates, norms, labels = _members(
        ("all", "no_norms"), seeds, decay)
    per_epoch = len(x_train) // batch_size
    ensemble, record = train_members(
        models, x_train, y_train, steps=epochs * per_epoch,
        batch_size=batch_size, lr=lr, seeds=member_seeds, momentum=0.9,
        schedule="cosine", decay=rates, decay_norms=norms)
    results = []
    for index, model in enumerate(models):
        model = ensemble.member(index, model)
        results.append(dict(
            arm=labels[index], seed=member_seeds[index], decay=decay,
            acc=accuracy(model, x_test, y_test),
            gamma2=model.norm2.norm.weight.norm().item(),
            loss_last=record["loss"][index, -per_epoch:].mean().item()))
    return results
