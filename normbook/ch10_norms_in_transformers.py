"""Chapter 10, "Norms in today's Transformers": norm timings, attention logits,
LayerNorm's curves.
"""
import torch

from normbook.common.charlm import stream_sizes
from normbook.common.timing import (
    forward_backward,
    norm_inputs,
    time_interleaved,
)
from normbook.common.transformer import SelfAttention
from normlib.nn import LayerNorm


def time_forward_backward(norms, shape, repeats=30, seed=0):
    """Median seconds of one forward + backward of each module in `norms`
    (name -> module) on `shape`.

    The modules take turns in every round
    (`normbook.common.timing.time_interleaved`), so a machine that slows down
    slows all of them alike.
    """
    x, grad = norm_inputs(shape, seed)
    steps = {name: forward_backward(norm, x, grad)
             for name, norm in norms.items()}
    return {name: median for name, (best, median)
            in time_interleaved(steps, repeats=repeats).items()}


@torch.no_grad()
def attention_logits(model, windows):
    """Per block (max attention logit, mean attention entropy in nats) on
    windows (N, T + 1), eval mode.

    Shown in chapter 10, "QK-norm and attention-logit growth".
    """
    layers = [m for m in model.modules() if isinstance(m, SelfAttention)]
    for layer in layers:
        layer.record = []
    model.eval()(windows[:, :-1])
    stats = [layer.record[0] for layer in layers]
    for layer in layers:
        layer.record = None
    return stats


@torch.no_grad()
def layer_norm_curves(model, windows):
    """For each LayerNorm of `model`: (input, normalized output before the
    affine step), both (N*T, C) numbers.

    As Zhu et al. (2025, Sec. 3) plot them: x against (x - mean) / std of its
    own token.

    Shown in chapter 10, "DyT: a tanh in place of the norm".
    """
    pairs, hooks = [], []
    for norm in (m for m in model.modules() if isinstance(m, LayerNorm)):
        def keep(module, inputs, output):
            x = inputs[0].flatten(0, -2).double()               # tokens, C
            x_hat = ((x - x.mean(-1, keepdim=True))
                     / (x.var(-1, unbiased=False, keepdim=True)
                        + module.eps).sqrt())
            pairs.append((x.tolist(), x_hat.tolist()))
        hooks.append(norm.register_forward_hook(keep))
    model.eval()(windows[:, :-1])
    for hook in hooks:
        hook.remove()
    return pairs


def trained_probe(model, windows):
    """What chapter 10 reads from a trained model: stream sizes, attention
    logits, LayerNorm curves (4 windows)."""
    model.eval()
    return dict(stream=stream_sizes(model, windows),
                attention=attention_logits(model, windows),
                curves=layer_norm_curves(model, windows[:4]))
