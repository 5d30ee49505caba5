"""Forward+backward time of each normlib.nn module against its torch.nn twin, float32 on CPU, side by side.

Run with `make bench`.  Each pair is timed alternately in the same process, with
the same input and gradient.  The ratio uses the best of 30 steps of each: on this
virtual machine every fresh full-size tensor costs page faults whose price swings
from run to run, so medians wander by 2x while the best times are repeatable.
The median ratio is printed beside it.
"""
import statistics
import time

import torch
from torch import nn

import normlib.nn as ours

CASES = [  # name, normlib module, torch module, input shape
    ("BatchNorm1d (N, C)", lambda: ours.BatchNorm1d(512), lambda: nn.BatchNorm1d(512), (256, 512)),
    ("BatchNorm2d (N, C, H, W)", lambda: ours.BatchNorm2d(64), lambda: nn.BatchNorm2d(64), (32, 64, 28, 28)),
    ("LayerNorm (B, T, C)", lambda: ours.LayerNorm(512), lambda: nn.LayerNorm(512), (32, 128, 512)),
    ("GroupNorm (N, C, H, W)", lambda: ours.GroupNorm(8, 64), lambda: nn.GroupNorm(8, 64), (32, 64, 28, 28)),
    ("RMSNorm (B, T, C)", lambda: ours.RMSNorm(512), lambda: nn.RMSNorm(512), (32, 128, 512)),
]


def step(module, x, dy):
    module.zero_grad(set_to_none=True)
    x.grad = None
    module(x).backward(dy)


def time_pair(make_ours, make_ref, shape, repeats=30):
    torch.manual_seed(0)
    x = torch.randn(shape).requires_grad_()
    dy = torch.randn(shape)
    mods = {"normlib": make_ours().train(), "torch": make_ref().train()}
    for m in mods.values():       # warm up
        for _ in range(3):
            step(m, x, dy)
    times = {k: [] for k in mods}
    for _ in range(repeats):
        for k, m in mods.items():
            start = time.perf_counter()
            step(m, x, dy)
            times[k].append(time.perf_counter() - start)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def main():
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward+backward, best of 30")
    print(f"{'module':28s} {'input':>18s} {'normlib ms':>11s} {'torch ms':>9s} {'ratio':>6s} {'median ratio':>13s}")
    worst = 0.0
    for name, make_ours, make_ref, shape in CASES:
        t = time_pair(make_ours, make_ref, shape)
        (best, median), (best_ref, median_ref) = t["normlib"], t["torch"]
        worst = max(worst, best / best_ref)
        print(f"{name:28s} {str(shape):>18s} {1e3 * best:11.2f} {1e3 * best_ref:9.2f} "
              f"{best / best_ref:6.2f} {median / median_ref:13.2f}")
    print(f"worst ratio {worst:.2f} (target: under 3)")


if __name__ == "__main__":
    main()
