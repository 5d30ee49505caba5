"""One seeded training and evaluation loop for every experiment in the book."""
import random

import numpy as np
import torch


def set_seed(seed, threads=1):
    """Seed Python, NumPy and torch, and fix torch's thread count (results are bit-stable only for a fixed count)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
