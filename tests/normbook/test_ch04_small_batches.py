"""normbook.ch04_small_batches: one run of the batch-size sweep, and the
running statistics' error split into noise and staleness."""
import math

from normbook.ch04_small_batches import batch_size_run, ema_staleness_run


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


def test_ema_staleness_run_reports_each_layer_against_precise_stats():
    rows = ema_staleness_run(model="mlp", batch_size=64, seeds=(0, 1),
                             epochs=1, base_lr=0.1, schedule="constant",
                             replays=2)
    assert [(r["seed"], r["layer"]) for r in rows] == [
        (0, "norm1"), (0, "norm2"), (1, "norm1"), (1, "norm2")]
    for r in rows:
        assert r["schedule"] == "constant"
        # (d_mu, d_var) each: positive, finite, and a spread over 2 replays
        for key in ("ema", "frozen", "frozen_sd"):
            assert len(r[key]) == 2
            assert all(0 < value < math.inf for value in r[key])


def test_without_training_the_ema_error_is_all_noise():
    # base_lr=0: the weights never move, so no batch statistic is stale and
    # the EMA is one more draw of the frozen EMA's noise
    rows = ema_staleness_run(model="mlp", batch_size=16, seeds=(0, 1, 2),
                             epochs=4, base_lr=0.0, schedule="constant",
                             replays=8)
    for stat in (0, 1):
        ema = sum(r["ema"][stat] for r in rows)
        frozen = sum(r["frozen"][stat] for r in rows)
        assert 0.5 < ema / frozen < 1.5
