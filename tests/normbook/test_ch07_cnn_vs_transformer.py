"""normbook.ch07_cnn_vs_transformer: the CNN run of the comparison."""
from normbook.ch07_cnn_vs_transformer import cnn_run


def test_cnn_run_with_a_cosine_schedule_learns():
    history = cnn_run(seed=0, steps=60, batch_size=32, lr=3e-3, norm="bn",
                      schedule="cosine")
    assert history["test_acc"] > 0.5
