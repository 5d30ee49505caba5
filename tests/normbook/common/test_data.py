"""normbook.common.data: the data sets, their splits and the batchings."""
import torch

from normbook.common.data import (
    bucket_by_length,
    char_lm_windows,
    char_vocab,
    padded_sequences,
    random_batches,
    split,
    text_corpus,
)


def test_data_shapes_and_standardization(digit_data):
    x_train, y_train, x_test, y_test = digit_data
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == torch.float32
    assert len(x_train) + len(x_test) == 1797 and len(y_test) == len(x_test)
    assert abs(x_train.mean().item()) < 1e-5
    assert abs(x_train.std().item() - 1) < 1e-5
    text = text_corpus()
    assert len(text) > 100_000 and text == text_corpus()
    stoi, itos = char_vocab(text[:2000])
    windows = char_lm_windows(text[:2000], 16, stoi)
    assert windows.shape == ((2000 - 1) // 16, 17)
    assert "".join(itos[i] for i in windows[1].tolist()) == text[16:33]
    train, test = split(windows, 0.25, seed=0)
    assert len(train) + len(test) == len(windows)
    assert len(test) == round(0.25 * len(windows))


def test_padded_sequences():
    data = padded_sequences(500, 3, 12, vocab_size=10, seed=1, pad_id=0)
    tokens, pad_mask = data["tokens"], data["pad_mask"]
    lengths, labels = data["lengths"], data["labels"]
    assert tokens.shape == pad_mask.shape == (500, 12)
    assert torch.equal(pad_mask.sum(1), 12 - lengths)
    assert lengths.min() >= 3 and lengths.max() <= 12
    assert (tokens[pad_mask] == 0).all() and (tokens[~pad_mask] != 0).all()
    # real ids 1..9: lower half 1..4, upper half 5..9
    n_upper = ((tokens >= 5) & ~pad_mask).sum(1)
    assert torch.equal(labels, (2 * n_upper > lengths).long())
    assert 0.35 < labels.float().mean() < 0.65
    again = padded_sequences(500, 3, 12, vocab_size=10, seed=1)
    assert torch.equal(again["tokens"], tokens)


def test_batches_cover_every_index_once():
    lengths = torch.randint(1, 30, (103,))
    for batches in (random_batches(103, 8, seed=0),
                    bucket_by_length(lengths, 8, seed=0)):
        assert torch.equal(torch.cat(batches).sort().values,
                           torch.arange(103))
        assert all(len(b) <= 8 for b in batches)
    spread = [lengths[b].max() - lengths[b].min()
              for b in bucket_by_length(lengths, 8, seed=0)]
    assert max(spread) < 10                      # buckets hold similar lengths
