"""Forward+backward time of each normlib.nn module against its torch.nn twin,
float32 on CPU, side by side.

Run with `make bench`.  Each pair is timed alternately in the same process,
with the same input and gradient, at one thread and at two
(`normbook.common.timing.time_interleaved`, the loop chapter 12 times with).
The ratio uses the best of 30 steps of each: on this virtual machine every
fresh full-size tensor costs page faults whose price swings from run to run,
so medians wander by 2x while the best times are repeatable.  The median ratio
is printed beside it.

A second table gives the error of half-precision inputs (float32 parameters)
against float64, normlib beside torch.
"""
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"
                       / "normlib"))
from norm_cases import MODULES, make, precision_errors  # noqa: E402

import normlib.nn as ours  # noqa: E402
from normbook.common.timing import (  # noqa: E402
    forward_backward,
    time_interleaved,
)


def time_pair(name, repeats=30):
    """{"normlib": (best, median), "torch": (...)} seconds of forward +
    backward, the two taking turns."""
    torch.manual_seed(0)
    shape = MODULES[name][1]
    x = torch.randn(shape).requires_grad_()
    dy = torch.randn(shape)
    affine = {"affine": True} if name.startswith("Instance") else {}
    steps = {label: forward_backward(make(library, name, **affine), x, dy)
             for label, library in (("normlib", ours), ("torch", nn))}
    return time_interleaved(steps, repeats=repeats, warmup=3)


def speed_table():
    print(f"torch {torch.__version__}, float32, forward+backward, "
          "best of 30; ratio = normlib / torch")
    print(f"{'module':15s} {'input':>17s} {'threads':>7s} "
          f"{'normlib ms':>10s} {'torch ms':>9s} "
          f"{'ratio':>6s} {'median ratio':>12s}")
    worst = {}
    for name in MODULES:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            t = time_pair(name)
            (best, median), (best_ref, median_ref) = t["normlib"], t["torch"]
            worst[threads] = max(worst.get(threads, 0.0), best / best_ref)
            print(f"{name:15s} {str(MODULES[name][1]):>17s} {threads:7d} "
                  f"{1e3 * best:10.2f} {1e3 * best_ref:9.2f} "
                  f"{best / best_ref:6.2f} {median / median_ref:12.2f}")
    print(f"worst ratio: {worst[1]:.2f} at one thread (target: under 3), "
          f"{worst[2]:.2f} at two")


def precision_table():
    print("\nhalf-precision input, float32 parameters: relative error "
          "against float64 (same rounded input)")
    print(f"{'module':15s} {'dtype':9s} {'y normlib':>10s} {'y torch':>8s} "
          f"{'dx normlib':>10s} {'dx torch':>9s} "
          f"{'dw normlib':>10s} {'dw torch':>9s}")
    torch.set_num_threads(1)
    for name in MODULES:
        for dtype in (torch.bfloat16, torch.float16):
            errors = precision_errors(name, dtype, small=False)
            widths = (("normlib", 10), ("torch", 9))
            cells = [f"{errors[lib][i]:{w - (i == 0 and lib == 'torch')}.1e}"
                     for i in range(3) for lib, w in widths]
            print(f"{name:15s} {str(dtype)[6:]:9s} " + " ".join(cells))


if __name__ == "__main__":
    speed_table()
    precision_table()
