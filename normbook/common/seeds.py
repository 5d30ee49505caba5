"""The book's one seed knob: every chapter derives all its seeds from
NORMBOOK_SEED.

The book is built with base 0, where book_seed(k) is k. Another base moves
every draw of a chapter at once (initialization, batch order, noise,
synthetic data) to seeds that no other base uses, so a reader reruns the
whole book on a new draw by changing one number: `NORMBOOK_SEED=3 make test`.
"""
import os

STRIDE = 1000   # offsets per base: a chapter uses fewer than this many seeds


def seed_base():
    """The base read from the environment variable NORMBOOK_SEED
    (default 0)."""
    raw = os.environ.get("NORMBOOK_SEED", "0").strip() or "0"
    try:
        base = int(raw)
    except ValueError:
        raise ValueError("NORMBOOK_SEED must be a non-negative integer, "
                         f"got {raw!r}") from None
    if base < 0:
        raise ValueError("NORMBOOK_SEED must be a non-negative integer, "
                         f"got {base}")
    return base


def book_seed(offset=0):
    """The seed `offset` of this draw: STRIDE * base + offset (offset itself
    for base 0)."""
    if not 0 <= offset < STRIDE:
        raise ValueError(f"offset must be in [0, {STRIDE}), got {offset}")
    return STRIDE * seed_base() + offset


def book_seeds(count, start=0):
    """`count` consecutive seeds of this draw, from offset `start`,
    as a tuple."""
    return tuple(book_seed(start + i) for i in range(count))
