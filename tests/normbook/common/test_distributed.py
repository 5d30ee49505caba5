"""normbook.common.distributed: running a function on each rank of a group."""
import pytest
import torch

import normbook.ch11_batchnorm_across_processes as ch10
from normbook.common.distributed import run_on_group

TOL = 1e-12   # float64



def test_run_on_group_returns_each_ranks_result():
    results = run_on_group(ch10.sync_step_rank, 2, (3, 4), (2,), 2,
                           timeout=30)
    assert [r["y"].shape[0] for r in results] == [3, 4]
    errors = ch10.sync_errors(results, (3, 4), (2,), 2)
    assert max(errors.values()) < TOL


def _fail_on_rank_1(rank, world_size):
    if rank == 1:
        raise KeyError("rank 1 failed")
    torch.distributed.barrier()          # waits for rank 1, which never comes


def test_a_rank_that_fails_ends_the_run_with_its_error(group2):
    """Last in the file: it shuts group2 down (rank 0 would wait in the
    barrier)."""
    with pytest.raises(KeyError, match="rank 1 failed"):
        group2.run(_fail_on_rank_1)
    with pytest.raises(RuntimeError, match="closed"):
        group2.run(_fail_on_rank_1)
