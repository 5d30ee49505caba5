"""Optimizer steps per second of the Part II Transformers: one run at a time,
runs in workers, ensembles in workers.

Run with `make bench`.  "one process" is how the chapters trained before: one
run after another on one thread.  "workers" runs 4 runs per worker through
`normbook.common.parallel.run_all`; "ensembles" trains 2 ensembles per worker
(`normbook.common.ensemble`), each with as many members as the chapter's: 4
seeds of a norm in chapter 7, 20 runs of a depth and placement in chapter 8.
Both count every run's optimizer steps against the wall time, starting the
workers included, which is what a chapter's time pays for.

"member ms" is what one more member adds to an ensemble step: (step time with
12 members - step time with 2) / 10: the part of a step that batching does not
remove, its arithmetic, with the per-operation overhead shared out.  "bound" =
workers / member time: the steps per second if every worker did nothing but
that arithmetic.  No batching of these models in eager PyTorch gets past it;
only fewer passes over memory (fused kernels) would.

The README's "before" column was measured with this script's `--normlib DIR`
option on a checkout of commit bdff47d; the option went when the lab moved out
of normlib into normbook (it loaded an older normlib in place of the installed
one, and the lab no longer lives there).
"""
import time

import torch

from normbook.common.data import (
    char_lm_windows,
    char_vocab,
    split,
    text_corpus,
)
from normbook.common.ensemble import train_lm_ensemble
from normbook.common.parallel import default_workers, run_all
from normbook.common.train import set_seed, train_lm
from normbook.common.transformer import TinyTransformer

# name, TinyTransformer arguments, batch size (windows of 16 characters),
# members as the chapter has
CASES = [
    ("chapter 7 LM, LayerNorm",           # 4 seeds
     dict(d_model=32, n_heads=4, n_layers=2, norm="ln"), 32, 4),
    ("chapter 7 LM, BatchNorm",
     dict(d_model=32, n_heads=4, n_layers=2, norm="bn"), 32, 4),
    ("chapter 8 sweep, 2 blocks",         # 5 rates x 2 seeds x 2 warm-ups
     dict(d_model=32, n_heads=2, n_layers=2), 16, 20),
    ("chapter 8 sweep, 6 blocks",
     dict(d_model=32, n_heads=2, n_layers=6), 16, 20),
]
STEPS = 300


def timed_run(model_args, batch_size, seed=0, steps=STEPS):
    """Seconds for `steps` optimizer steps of one causal LM on 16-character
    windows."""
    text = text_corpus()
    stoi, itos = char_vocab(text)
    train, _ = split(char_lm_windows(text, 16, stoi), 0.1, seed=0)
    set_seed(seed)
    model = TinyTransformer(len(itos), max_len=16, causal=True, **model_args)
    # warm up
    train_lm(model, train, steps=10, batch_size=batch_size, lr=3e-3,
             seed=seed)
    start = time.perf_counter()
    train_lm(model, train, steps=steps, batch_size=batch_size, lr=3e-3,
             seed=seed)
    return time.perf_counter() - start


def timed_ensemble(model_args, batch_size, members=10, steps=STEPS):
    """Seconds for `steps` optimizer steps of an ensemble of `members` causal
    LMs."""
    text = text_corpus()
    stoi, itos = char_vocab(text)
    train, _ = split(char_lm_windows(text, 16, stoi), 0.1, seed=0)
    models = []
    for seed in range(members):
        set_seed(seed)
        models.append(TinyTransformer(len(itos), max_len=16, causal=True,
                                      **model_args))
    run = dict(batch_size=batch_size, lrs=[3e-3] * members,
               seeds=list(range(members)))
    train_lm_ensemble(models, train, steps=5, **run)  # warm up
    start = time.perf_counter()
    train_lm_ensemble(models, train, steps=steps, **run)
    return time.perf_counter() - start


def member_cost(model_args, batch_size, small=2, large=12, steps=100):
    """Seconds one more member adds to an ensemble's optimizer step (its
    arithmetic, without the overhead)."""
    times = [timed_ensemble(model_args, batch_size, members=e, steps=steps)
             / steps for e in (small, large)]
    return (times[1] - times[0]) / (large - small)


def main():
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread per process, "
          f"{STEPS} steps per run")
    print(f"{'model':27s} {'one process':>12s} {'workers':>8s} "
          f"{'ensembles':>10s} {'member ms':>10s} {'bound':>6s}"
          f"   (steps/s, except member ms)")
    for name, model_args, batch_size, members in CASES:
        one = STEPS / timed_run(model_args, batch_size)
        line = f"{name:27s} {one:12.0f}"
        workers = default_workers()
        configs = [dict(model_args=model_args, batch_size=batch_size,
                        seed=seed) for seed in range(4 * workers)]
        start = time.perf_counter()
        run_all(timed_run, configs, workers)
        pooled = len(configs) * STEPS / (time.perf_counter() - start)
        tasks = [dict(model_args=model_args, batch_size=batch_size,
                      members=members)] * (2 * workers)
        start = time.perf_counter()
        run_all(timed_ensemble, tasks, workers)
        ensembles = (len(tasks) * members * STEPS
                     / (time.perf_counter() - start))
        member = member_cost(model_args, batch_size)
        line += (f" {pooled:8.0f} {ensembles:10.0f} {1e3 * member:10.2f} "
                 f"{workers / member:6.0f}")
        print(line)


if __name__ == "__main__":
    main()
