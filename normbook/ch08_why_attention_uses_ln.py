"""Chapter 8, "Why attention uses LayerNorm": gradients at initialization
(Xiong et al.'s W_FC2 measurement) and a trained LM scored in three modes.
"""
import torch
import torch.nn.functional as F

from normbook.common.charlm import causal_lm, char_lm_data
from normbook.common.probes import batch_stat_lm_loss
from normbook.common.train import lm_loss, train_lm


def fc2_grad_norms(*, seed, n_layers, batches=8, batch_size=16, context=16,
                   **model_args):
    """Xiong et al.'s measurement: the norm of the expected gradient of each
    block's W_FC2 at initialization.

    W_FC2 is the second weight of each block's MLP.  The gradient is averaged
    over `batches` batches first, then its Frobenius norm taken, as in their
    Figure 3.  Returns a list, block 1 (next to the input) first.

    Shown in chapter 8, "Gradients and the residual stream at initialization".
    """
    train, _, vocab = char_lm_data(context)
    model = causal_lm(vocab, context, seed, n_layers=n_layers, **model_args)
    weights = [block.mlp[2].weight for block in model.blocks]
    totals = [torch.zeros_like(w) for w in weights]
    order = torch.randperm(len(train),
                           generator=torch.Generator().manual_seed(seed))
    for batch in order[: batches * batch_size].split(batch_size):
        windows = train[batch]
        logits = model(windows[:, :-1])                          # B, T, vocab
        grads = torch.autograd.grad(
            F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()),
            weights)
        for total, grad in zip(totals, grads):
            total += grad
    return [(total / batches).norm().item() for total in totals]


def lm_mode_losses(*, seed, steps, batch_size, lr, context=32, scored=16,
                   **model_args):
    """Train a causal LM, then score `scored` test windows three ways ->
    [eval mode, train mode, train mode alone].

    Eval mode uses BatchNorm's running statistics; train mode normalizes the
    scored windows as one batch; "alone" normalizes each window by itself
    (batch 1) and averages.

    Shown in chapter 8, "Batch size 1, and the switch to running statistics".
    """
    train, test, vocab = char_lm_data(context)
    model = causal_lm(vocab, context, seed, **model_args)
    train_lm(model, train, steps=steps, batch_size=batch_size, lr=lr,
             seed=seed)
    windows = test[:scored]
    return [lm_loss(model, windows),
            batch_stat_lm_loss(model, windows, scored),
            batch_stat_lm_loss(model, windows, 1)]
