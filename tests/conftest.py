"""Shared pytest setup: one torch thread per worker (tiny tensors;
pytest-xdist already uses the cores)."""
import torch

torch.set_num_threads(1)
