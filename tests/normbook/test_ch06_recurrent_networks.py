"""normbook.ch06_recurrent_networks: the data, the scoring and the
statistics of chapter 6's runs (the runs themselves execute in the
chapter)."""
import pytest
import torch

from normbook.ch06_recurrent_networks import (
    RUNS,
    lm_windows,
    position_losses,
    run,
    sequences_per_step,
    sequential_digits,
    shared_statistics,
    stream_gap,
)
from normbook.common import data
from normbook.common.recurrent import LSTMClassifier, LSTMLanguageModel


def test_sequential_digits_are_the_images_pixel_by_pixel():
    x_train, y_train, x_test, _ = sequential_digits()
    assert x_train.shape[1:] == (64, 1) and len(x_train) == len(y_train)
    permuted = sequential_digits(permuted=True)[0]
    # the same pixels of each image, in another order shared by all images
    assert torch.equal(x_train.sort(dim=1).values,
                       permuted.sort(dim=1).values)
    assert not torch.equal(x_train, permuted)
    assert len(x_test) > 0


def test_sequences_per_step_counts_the_sentences_still_running():
    lengths = torch.tensor([3, 1])
    counts = sequences_per_step(lengths, batch_size=4, batches=50, seed=0)
    assert counts.shape[0] == 50 and counts.shape[1] <= 3
    assert (counts[:, 0] == 4).all()              # every sentence has step 1
    assert (counts[:, 1:] <= 4).all() and counts.diff(dim=1).le(0).all()


def test_shared_statistics_average_every_step_into_one_set():
    torch.manual_seed(0)
    model = LSTMClassifier(1, 4, 3, "bn_step", max_steps=5)
    x = torch.randn(32, 5, 1)
    shared = shared_statistics(model, x, batch_size=16)
    site = shared.lstm.norm_h
    assert site.kind == "bn" and len(site.stats) == 1
    assert int(site.stats[0].num_batches_tracked) == 2 * 5   # batches x steps
    assert not shared.training
    assert len(model.lstm.norm_h.stats) == 5                  # a copy


def test_language_model_streams_as_it_reads_a_whole_window():
    torch.manual_seed(0)
    for norm in ("ln", "bn_step"):
        model = LSTMLanguageModel(7, 4, 6, norm, max_steps=3)
        model(torch.randint(0, 7, (8, 3)))        # sets running statistics
        window = torch.randint(0, 7, (6,))        # longer than max_steps
        assert stream_gap(model, window) < 1e-5
        assert len(position_losses(model, torch.randint(0, 7, (4, 6)))) == 5


def test_test_windows_come_from_text_no_training_window_touches():
    text = data.text_corpus()
    stoi, _ = data.char_vocab(text)
    cut = int(len(text) * 0.9)
    for length in (16, 64):
        train, test, vocab = lm_windows(length)
        assert train.shape[1] == test.shape[1] == length + 1
        assert vocab == len(stoi)
        # training windows end before the cut, test windows start at it
        assert len(train) * length + 1 <= cut
        assert test[0].tolist() == [stoi[ch]
                                    for ch in text[cut:cut + length + 1]]


def test_run_dispatches_and_tags_its_experiment():
    assert set(RUNS) == {"digits", "lm", "mlp"}
    with pytest.raises(KeyError):
        run("nothing")
