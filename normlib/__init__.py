"""normlib: Batch Norm, Layer Norm and friends, derived and implemented once.

`normlib.functional` is the math (one `normalize` forward and backward, and
every norm as a choice of axes); `normlib.nn` has drop-in replacements for
`torch.nn`'s norm layers whose backward is the derived formula.
"""
from normlib import functional, nn

__all__ = ["functional", "nn"]
