"""normbook.ch11_batchnorm_across_processes: the chapter's multi-rank runs."""

import normbook.ch11_batchnorm_across_processes as ch10


def test_torch_syncbatchnorm_on_cpu_refuses_training_works_in_eval(group2):
    for result in group2.run(ch10.torch_sync_on_cpu_rank):
        assert "expected input tensor to be on GPU" in result["train"]
        assert result["eval_max_abs_diff"] == 0.0


def test_data_parallel_training_with_sync_follows_one_process(group2):
    results = group2.run(ch10.train_steps_rank, 3, 32, 0, 1)
    single = ch10.train_steps_rank(0, 1, 3, 32, 0, 1)
    assert results[0]["losses"] == results[1]["losses"]
    assert max(abs(a - b) for a, b in zip(results[0]["losses"],
                                          single["losses"])) < 1e-5
    assert results[0]["per_layer"] == [(2.0, 4 * (1 + 4 * 128))] * 2
