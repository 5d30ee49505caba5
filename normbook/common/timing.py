"""Timing: the book's timing loop and one forward + backward as a callable.

Chapters 10 and 12 and the benchmarks (`benchmarks/bench_norms.py`) time norms
with these.
"""
import statistics
import time

import torch


def time_interleaved(steps, repeats=30, warmup=3):
    """Seconds per call of each callable in `steps` (name -> fn()), as
    {name: (best, median)}.

    The callables take turns in every round, so a machine that slows down
    slows them all alike; warm-up rounds are not kept.  Best-of-N is the
    repeatable figure on a shared machine, the median shows the spread.
    """
    times = {name: [] for name in steps}
    for round_ in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def forward_backward(module, x, dy):
    """A callable running one forward + backward of `module` on x
    (requires_grad) with upstream dy."""
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(dy)
    return step


def norm_inputs(shape, seed=0):
    """(x with requires_grad, dy) of `shape`, float32, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator).requires_grad_(),
            torch.randn(shape, generator=generator))
