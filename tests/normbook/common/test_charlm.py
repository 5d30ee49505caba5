"""normbook.common.charlm: the char-level LM's data, baselines and runs."""
import pytest

from normbook.common.charlm import (
    causal_lm,
    char_lm_baselines,
    char_lm_data,
    lm_run,
    stream_growth,
)

TINY = dict(steps=4, batch_size=4, lr=1e-3, d_model=8, n_heads=2, n_layers=1)


def test_baselines_order():
    baselines = char_lm_baselines(16)
    assert 3.0 < baselines["unigram"] < 3.5
    assert 2.0 < baselines["bigram"] < baselines["unigram"] - 0.5


def test_char_lm_data_shapes():
    train, test, vocab = char_lm_data(16)
    assert train.shape[1] == test.shape[1] == 17 and len(test) == 512
    assert int(train.max()) < vocab


def test_lm_run_learns():
    history = lm_run(seed=0, **dict(TINY, steps=40, lr=1e-2, d_model=16))
    assert not history["diverged"]
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.5


def test_stream_growth_follows_the_init():
    small = stream_growth(seed=0, n_layers=4, d_model=16, n_heads=2)
    large = stream_growth(seed=0, n_layers=4, d_model=16, n_heads=2,
                          init="fan_in")
    # same embedding, different blocks
    assert len(small) == 5 and small[0] == large[0]
    assert large[-1] - large[0] > 2 * (small[-1] - small[0])


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init"):
        causal_lm(10, 8, seed=0, init="xavier")


def test_stream_sizes_of_a_fresh_model_are_stream_growth():
    from normbook.ch10_norms_in_transformers import trained_probe
    from normbook.common.charlm import stream_growth, stream_sizes
    train, _, vocab = char_lm_data(16)
    model = causal_lm(vocab, 16, 3, n_layers=3, d_model=16, n_heads=2,
                      placement="peri")
    expected = stream_growth(seed=3, n_layers=3, d_model=16, n_heads=2,
                             placement="peri", windows=16)
    assert stream_sizes(model, train[:16]) == pytest.approx(expected, rel=1e-6)
    probe = trained_probe(model, train[:16])
    assert len(probe["attention"]) == 3 and len(probe["curves"]) == 3 * 4 + 1
