"""What kernel fusion (torch.compile) would buy the chapter 7 ensemble, and
what it costs.

`python benchmarks/bench_compile.py` (about a minute; not part of
`make bench`).

normlib's norms do not compile under vmap (dynamo cannot trace their
autograd.Function with its non-tensor arguments, and falls back to eager), so
this measures an upper bound: the chapter 7 LayerNorm ensemble (10 members,
batch 32) with torch.nn.LayerNorm swapped in, eager and compiled, on one
thread.  It prints member steps per second, the compile time (paid once per
model configuration, in every worker), and the break-even: how many member
steps a configuration must train before compiling pays for itself.
"""
import time

import torch

# the script's own folder is on sys.path: benchmarks/bench_train.py
from bench_train import CASES
from torch.func import functional_call, vmap

from normbook.common.data import (
    char_lm_windows,
    char_vocab,
    split,
    text_corpus,
)
from normbook.common.ensemble import (
    Ensemble,
    StackedAdam,
    lm_losses,
)
from normbook.common.models import IgnoreMask
from normbook.common.train import set_seed
from normbook.common.transformer import TinyTransformer
from normlib.nn import LayerNorm

MEMBERS, STEPS = 10, 50


def torch_norms(model):
    """Replace every normlib LayerNorm by torch.nn.LayerNorm (same init: ones
    and zeros)."""
    for module in model.modules():
        if (isinstance(module, IgnoreMask)
                and isinstance(module.norm, LayerNorm)):
            module.norm = torch.nn.LayerNorm(module.norm.normalized_shape)
    return model


def main():
    torch.set_num_threads(1)
    name, model_args, batch_size, _ = CASES[0]
    text = text_corpus()
    stoi, itos = char_vocab(text)
    train, _ = split(char_lm_windows(text, 16, stoi), 0.1, seed=0)
    print(f"{name}, torch.nn.LayerNorm, {MEMBERS} members, 1 thread")
    rates = {}
    for mode in ("eager", "compiled"):
        models = []
        for seed in range(MEMBERS):
            set_seed(seed)
            models.append(torch_norms(TinyTransformer(
                len(itos), max_len=16, causal=True, **model_args)))
        ensemble = Ensemble(models)
        ensemble.base.train(True)

        def losses(batch):
            logits = vmap(
                lambda p, b, x: functional_call(ensemble.base, (p, b), (x,)))(
                ensemble.params, ensemble.buffers, batch[:, :, :-1])
            return lm_losses(logits, batch[:, :, 1:]).sum()

        loss_fn = torch.compile(losses) if mode == "compiled" else losses
        adam, generator = (StackedAdam(ensemble.params.values()),
                           torch.Generator().manual_seed(0))

        def step():
            batch = train[torch.randint(len(train), (MEMBERS, batch_size),
                                        generator=generator)]
            for p in ensemble.params.values():
                p.grad = None
            loss_fn(batch).backward()
            adam.step(torch.full((MEMBERS,), 3e-3))

        start = time.perf_counter()
        step()  # compiles forward and backward
        first = time.perf_counter() - start
        for _ in range(5):
            step()
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        rates[mode] = MEMBERS * STEPS / (time.perf_counter() - start)
        print(f"{mode:9s} {rates[mode]:5.0f} member steps/s, "
              f"first step {first:5.1f} s")
        if mode == "compiled":
            # seconds per member step
            saved = 1 / rates["eager"] - 1 / rates["compiled"]
            print("compiled / eager "
                  f"{rates['compiled'] / rates['eager']:.2f}; compiling pays "
                  f"for itself after {first / saved:,.0f} member steps of one "
                  "configuration in one worker")


if __name__ == "__main__":
    main()
