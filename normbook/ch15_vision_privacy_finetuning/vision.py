"""Chapter 15, "Vision's LayerNorm": the three LayerNorms of an image, and
the book's CNN trained with each.

A run builds its own data and models from its arguments, so any worker
process of `normbook.common.parallel.run_all` can run it, and returns plain
numbers.
"""
import torch
import torch.nn.functional as F

from normbook.common import data
from normbook.common.ensemble import train_classifier_ensemble
from normbook.common.models import IgnoreMask, TinyCNN
from normbook.common.train import accuracy, seeded
from normlib.nn import GroupNorm, LayerNorm, LayerNorm2d

# the CNN's variants: make_norm's kinds and one of our own ("ln_chw");
# BatchNorm is the yardstick
CNN_KINDS = ("ln2d", "ln", "ln_chw", "bn")
KIND_LABELS = {"ln2d": "LayerNorm2d", "ln": "GroupNorm(1, C)",
               "ln_chw": "LayerNorm([C, H, W])", "bn": "BatchNorm2d"}


def three_layernorms(channels, height, width):
    """The three norms that are called "LayerNorm" for a (N, C, H, W)
    activation, by the name of the layer -> module (normlib.nn, default
    affine parameters)."""
    return {"LayerNorm2d": LayerNorm2d(channels),
            "GroupNorm(1, C)": GroupNorm(1, channels),
            "LayerNorm([C, H, W])": LayerNorm([channels, height, width])}


def tiny_cnn(kind):
    """TinyCNN with one of CNN_KINDS: make_norm's "ln2d", "ln" (GroupNorm(1,
    C)) and "bn", or "ln_chw", LayerNorm over (C, H, W) with an affine
    weight per value, which make_norm does not offer because it must know
    H and W (8 x 8 after the first convolution, 4 x 4 after the second).

    Shown in chapter 15, "Does the choice matter on the book's CNN?".
    """
    if kind != "ln_chw":
        return TinyCNN(kind)
    model = TinyCNN("ln")
    c1, c2 = model.conv1.out_channels, model.conv2.out_channels
    model.norm1 = IgnoreMask(LayerNorm([c1, 8, 8]))
    model.norm2 = IgnoreMask(LayerNorm([c2, 4, 4]))
    return model


def norm_parameters(model):
    """How many parameters the norms of a TinyCNN hold."""
    return sum(p.numel() for name, p in model.named_parameters()
               if name.startswith("norm"))


def cnn_runs(*, kind, seeds, steps, batch_size, lr):
    """Train tiny_cnn(kind) on the digits from each of `seeds` (Adam, cosine
    decay, the fixed split), the seeds together as one batched model
    (`normbook.common.ensemble`) -> one dict per seed: "kind", "seed",
    "test_acc", "test_loss" (nats, eval mode), "norm_params".

    Shown in chapter 15, "Does the choice matter on the book's CNN?".
    """
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    models = seeded(lambda: tiny_cnn(kind), seeds)
    _, ensemble = train_classifier_ensemble(
        models, x_train, y_train, steps=steps, batch_size=batch_size,
        lrs=[lr] * len(seeds), seeds=list(seeds), schedule="cosine")
    results = []
    for index, (seed, model) in enumerate(zip(seeds, models)):
        model = ensemble.member(index, model).eval()
        with torch.no_grad():
            test_loss = F.cross_entropy(model(x_test), y_test).item()
        results.append(dict(kind=kind, seed=seed,
                            test_acc=accuracy(model, x_test, y_test),
                            test_loss=test_loss,
                            norm_params=norm_parameters(model)))
    return results
