"""GhostBatchNorm1d: BatchNorm whose training statistics come from blocks of
the batch, as per-process BatchNorm computes them.

Imported by `normlib.nn`, which is where to find it.
"""
from . import functional as F
from ._autograd import normalize
from ._batchnorm import BatchNorm1d


class GhostBatchNorm1d(BatchNorm1d):
    """BatchNorm1d over (N, C) whose training statistics come from ghost_size
    rows at a time (Hoffer et al.).

    This is exactly what per-process BatchNorm computes when N / ghost_size
    processes hold ghost_size rows each: each block normalized by its own
    statistics.  The running statistics take the first block's, as
    data-parallel training keeps rank 0's buffers.

    Arguments as `RunningStatsNorm` (all but `num_features` by keyword), and:

    - `ghost_size`: the rows in each ghost batch; a training batch must be a
      multiple of it.  `None` (or a batch of exactly ghost_size rows) is
      plain BatchNorm1d, and so is eval.
    """

    def __init__(self, num_features, ghost_size=None, **kwargs):
        super().__init__(num_features, **kwargs)
        self.ghost_size = ghost_size

    def forward(self, input):
        """In training, each block of ghost_size rows normalized by its own
        statistics; otherwise plain BatchNorm1d.

        Shown in chapter 11, "Per-process statistics ("ghost batches")
        against SyncBatchNorm".
        """
        if not self.training or self.ghost_size in (None, input.shape[0]):
            return super().forward(input)
        if input.dim() != 2:
            raise ValueError(f"ghost batches take (N, C) input, got "
                             f"{input.dim()}D input")
        n, channels = input.shape                         # N, C
        if n % self.ghost_size:
            raise ValueError(f"the batch ({n}) must be a multiple of "
                             f"ghost_size={self.ghost_size}")
        self._check_input(input, None)
        factor = self._count_batch()
        stats = {}
        # G, ghost, C
        blocks = input.reshape(n // self.ghost_size, self.ghost_size, channels)
        y = normalize(blocks, self.weight, self.bias,
                      lambda x, w, b: F.normalize(x, (1,), w, b, self.eps),
                      stats)
        if self.running_mean is not None:
            self._update_running_stats(stats["mean"][0], stats["var"][0],
                                       stats["count"], factor)
        return y.reshape(n, channels)
