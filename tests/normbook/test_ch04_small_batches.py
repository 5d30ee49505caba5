"""normbook.ch04_small_batches: one run of the batch-size sweep."""
import math

from normbook.ch04_small_batches import batch_size_run


def test_batch_size_run_reports_three_accuracies_for_bn():
    results = batch_size_run(model="mlp", norm="bn", batch_size=32,
                             seeds=(0, 1), epochs=1, base_lr=0.1)
    assert [r["seed"] for r in results] == [0, 1]
    assert results[0]["steps"] == 1348 // 32
    assert all({"ema", "precise", "batch"} <= r.keys() and r["ema"] > 0.5
               for r in results)
    # one epoch: no epoch before it
    assert all(math.isnan(r["loss_before"]) for r in results)
    other = batch_size_run(model="cnn", norm="gn", batch_size=64, seeds=(0,),
                           epochs=2, base_lr=0.1)
    assert "precise" not in other[0]
    # the mean training loss of each of the last two epochs: the second lower
    # than the first
    assert (0 < other[0]["loss_last"] < other[0]["loss_before"]
            < math.log(10) + 0.5)
