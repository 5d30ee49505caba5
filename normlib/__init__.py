"""normlib: Batch Norm, Layer Norm and friends, derived and implemented once.

`normlib.functional` is the math (one `normalize` forward and backward, and
every norm as a choice of axes); `normlib.nn` has drop-in replacements for
`torch.nn`'s norm layers whose backward is the derived formula;
`normlib.check` checks the reader's code for the book's exercises against
them and names the usual mistakes.
"""
from normlib import check, functional, nn

__all__ = ["check", "functional", "nn"]
