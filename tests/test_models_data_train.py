"""Shapes, padding and causal plumbing, determinism, batching and a learning run for models, data and train."""
import pytest
import torch

from normlib import nn as ours
from normbook.common.data import (bucket_by_length, char_lm_windows, char_vocab, digits, padded_sequences,
                          random_batches, split, text_corpus)
from normbook.common.models import NORMS, IgnoreMask, TinyCNN, TinyTransformer, make_norm
from normbook.common.train import (accuracy, batch_stat_accuracy, batch_stat_logits, grad_norms_per_layer, lm_loss,
                           set_seed, train_classifier, train_lm)


@pytest.fixture(scope="module")
def digit_data():
    return digits()


@pytest.mark.parametrize("norm", NORMS)
def test_tiny_cnn_shapes_and_only_normlib_norms(norm):
    set_seed(0)
    model = TinyCNN(norm)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    torch_norms = (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)
    assert not any(isinstance(m, torch_norms) for m in model.modules())


@pytest.mark.parametrize("layout,shape", [("image", (4, 16, 3, 3)), ("sequence", (4, 5, 16))])
@pytest.mark.parametrize("kind", NORMS)
def test_make_norm_takes_a_mask_and_keeps_shape(kind, layout, shape):
    norm = make_norm(kind, 16, layout)
    x = torch.randn(shape)
    assert norm(x).shape == x.shape
    if layout == "sequence":
        assert norm(x, pad_mask=torch.zeros(4, 5, dtype=torch.bool)).shape == x.shape


def test_image_ln_and_gn_are_group_norms():
    assert make_norm("ln", 32, "image").norm.num_groups == 1
    assert make_norm("gn", 32, "image").norm.num_groups == 8
    assert make_norm("gn", 12, "image").norm.num_groups == 6
    assert isinstance(make_norm("bn", 8, "sequence"), ours.SequenceBatchNorm)


@pytest.mark.parametrize("norm", ("ln", "rms", "gn", "none"))
def test_padding_does_not_change_non_bn_outputs(norm):
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=2, max_len=10, norm=norm, num_classes=3).eval()
    short = torch.randint(1, 12, (2, 6))
    padded = torch.cat([short, torch.zeros(2, 4, dtype=torch.long)], 1)
    pad_mask = torch.arange(10) >= 6
    torch.testing.assert_close(model(padded, pad_mask.expand(2, 10)), model(short))
    lm = TinyTransformer(12, d_model=16, n_heads=2, n_layers=1, max_len=10, norm=norm).eval()
    torch.testing.assert_close(lm(padded, pad_mask.expand(2, 10))[:, :6], lm(short))


def test_bn_transformer_leaves_pads_out_of_its_statistics():
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=1, max_len=10, norm="bn", num_classes=3)
    short = torch.randint(1, 12, (2, 6))
    padded = torch.cat([short, torch.randint(1, 12, (2, 4))], 1)     # pads hold garbage tokens on purpose
    pad_mask = (torch.arange(10) >= 6).expand(2, 10)
    torch.testing.assert_close(model(padded, pad_mask), model(short))


def _padded_batch():
    """Three sequences of lengths 3, 5, 6 padded to 10 with garbage tokens -> (tokens (3, 10), pad_mask (3, 10))."""
    tokens = torch.randint(1, 12, (3, 10))
    return tokens, torch.arange(10) >= torch.tensor([[3], [5], [6]])


def test_bn_mask_false_is_bn_that_ignores_the_mask():
    tokens, pad_mask = _padded_batch()
    options = dict(d_model=16, n_heads=2, n_layers=2, max_len=10, norm="bn", num_classes=3)
    set_seed(0)
    unmasked = TinyTransformer(12, bn_mask=False, **options)
    set_seed(0)
    wrapped = TinyTransformer(12, **options)                 # the same weights, its BN layers wrapped by hand
    for module in list(wrapped.modules()):
        for name, child in module.named_children():
            if isinstance(child, ours.SequenceBatchNorm):
                setattr(module, name, IgnoreMask(child))
    assert sum(isinstance(m, ours.SequenceBatchNorm) for m in unmasked.modules()) == 5
    assert torch.equal(unmasked(tokens, pad_mask), wrapped(tokens, pad_mask))
    set_seed(0)
    masked = TinyTransformer(12, **options)
    assert not torch.allclose(unmasked(tokens, pad_mask), masked(tokens, pad_mask))   # pads moved the stats
    for name in ("ln", "rms", "gn", "none"):                 # bn_mask changes nothing for the other norms
        set_seed(0)
        a = TinyTransformer(12, **{**options, "norm": name, "bn_mask": False})
        set_seed(0)
        assert torch.equal(a(tokens, pad_mask), TinyTransformer(12, **{**options, "norm": name})(tokens, pad_mask))


@pytest.mark.parametrize("norm", NORMS)
def test_trim_padding_keeps_logits_where_pads_are_masked(norm):
    tokens, pad_mask = _padded_batch()
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=2, max_len=10, norm=norm, num_classes=3)
    full = model(tokens, pad_mask)
    model.trim_padding = True
    torch.testing.assert_close(model(tokens, pad_mask), full)    # masked BN too: pads are out of its stats


def test_trim_padding_changes_unmasked_bn_and_cuts_lm_logits():
    tokens, pad_mask = _padded_batch()
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=1, max_len=10, norm="bn", bn_mask=False,
                            num_classes=3, trim_padding=True)
    trimmed = model(tokens, pad_mask)
    torch.testing.assert_close(trimmed, model(tokens[:, :6], pad_mask[:, :6]))   # longest sequence: 6 tokens
    model.trim_padding = False
    assert not torch.allclose(trimmed, model(tokens, pad_mask))  # 4 more pad columns enter BN's statistics
    lm = TinyTransformer(12, d_model=16, n_heads=2, n_layers=1, max_len=10, trim_padding=True)
    assert lm(tokens, pad_mask).shape == (3, 6, 12)


@pytest.mark.parametrize("norm", ("ln", "rms", "none"))
def test_causal_lm_does_not_see_the_future(norm):
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=2, max_len=8, norm=norm, causal=True)
    tokens = torch.randint(0, 12, (3, 8))
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 12
    out, out_changed = model(tokens), model(changed)
    torch.testing.assert_close(out[:, :5], out_changed[:, :5])
    assert not torch.allclose(out[:, 5:], out_changed[:, 5:])


@pytest.mark.parametrize("pre_ln", (True, False))
def test_transformer_shapes(pre_ln):
    model = TinyTransformer(20, d_model=16, n_heads=4, n_layers=1, max_len=12, pre_ln=pre_ln)
    assert model(torch.randint(0, 20, (3, 12))).shape == (3, 12, 20)
    assert (model.norm_f is None) != pre_ln


def test_data_shapes_and_standardization(digit_data):
    x_train, y_train, x_test, y_test = digit_data
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == torch.float32
    assert len(x_train) + len(x_test) == 1797 and len(y_test) == len(x_test)
    assert abs(x_train.mean().item()) < 1e-5 and abs(x_train.std().item() - 1) < 1e-5
    text = text_corpus()
    assert len(text) > 100_000 and text == text_corpus()
    stoi, itos = char_vocab(text[:2000])
    windows = char_lm_windows(text[:2000], 16, stoi)
    assert windows.shape == ((2000 - 1) // 16, 17)
    assert "".join(itos[i] for i in windows[1].tolist()) == text[16:33]
    train, test = split(windows, 0.25, seed=0)
    assert len(train) + len(test) == len(windows) and len(test) == round(0.25 * len(windows))


def test_padded_sequences():
    data = padded_sequences(500, 3, 12, vocab_size=10, seed=1, pad_id=0)
    tokens, pad_mask, lengths, labels = data["tokens"], data["pad_mask"], data["lengths"], data["labels"]
    assert tokens.shape == pad_mask.shape == (500, 12)
    assert torch.equal(pad_mask.sum(1), 12 - lengths) and lengths.min() >= 3 and lengths.max() <= 12
    assert (tokens[pad_mask] == 0).all() and (tokens[~pad_mask] != 0).all()
    n_upper = ((tokens >= 5) & ~pad_mask).sum(1)         # real ids 1..9: lower half 1..4, upper half 5..9
    assert torch.equal(labels, (2 * n_upper > lengths).long())
    assert 0.35 < labels.float().mean() < 0.65
    assert torch.equal(padded_sequences(500, 3, 12, vocab_size=10, seed=1)["tokens"], tokens)


def test_batches_cover_every_index_once():
    lengths = torch.randint(1, 30, (103,))
    for batches in (random_batches(103, 8, seed=0), bucket_by_length(lengths, 8, seed=0)):
        assert torch.equal(torch.cat(batches).sort().values, torch.arange(103))
        assert all(len(b) <= 8 for b in batches)
    spread = [lengths[b].max() - lengths[b].min() for b in bucket_by_length(lengths, 8, seed=0)]
    assert max(spread) < 10                               # buckets hold similar lengths


def test_training_is_deterministic_and_learns(digit_data):
    x_train, y_train, x_test, y_test = digit_data
    runs = []
    for _ in range(2):
        set_seed(0)
        model = TinyCNN("bn")
        runs.append(train_classifier(model, x_train, y_train, steps=60, batch_size=32, lr=3e-3, seed=0,
                                     x_test=x_test, y_test=y_test, eval_every=30))
    assert runs[0]["train_loss"] == runs[1]["train_loss"] and runs[0]["test_acc"] == runs[1]["test_acc"]
    history = runs[0]
    assert len(history["train_loss"]) == len(history["grad_norm"]) == 60 and history["eval_step"] == [29, 59]
    assert sum(history["train_loss"][-10:]) < 0.5 * sum(history["train_loss"][:10])
    assert history["test_acc"] > 0.8 and history["test_acc"] == accuracy(model, x_test, y_test)
    running_mean = model.norm1.norm.running_mean.clone()
    model.eval()
    index, logits = batch_stat_logits(model, x_test, batch_size=16)
    assert len(index) == len(logits) == len(x_test) // 16 * 16 and len(index.unique()) == len(index)
    assert torch.equal(model.norm1.norm.running_mean, running_mean) and not model.training
    assert 0.5 < batch_stat_accuracy(model, x_test, y_test, batch_size=16) <= 1
    assert grad_norms_per_layer(model)["head.weight"] > 0


def test_batch_stat_logits_with_pad_mask_are_per_batch_train_mode_logits():
    data = padded_sequences(70, 2, 10, seed=0)
    tokens, pad_mask, labels = data["tokens"], data["pad_mask"], data["labels"]
    set_seed(0)
    model = TinyTransformer(16, d_model=16, n_heads=2, n_layers=1, max_len=10, norm="bn", num_classes=2).eval()
    index, logits = batch_stat_logits(model, tokens, 16, seed=3, pad_mask=pad_mask)
    assert torch.equal(index, torch.cat(random_batches(70, 16, seed=3)[:4]))     # the 4 full batches
    twin = TinyTransformer(16, d_model=16, n_heads=2, n_layers=1, max_len=10, norm="bn", num_classes=2)
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = torch.cat([twin.train()(tokens[idx], pad_mask[idx]) for idx in index.split(16)])
    assert torch.equal(logits, expected) and not model.training
    assert torch.equal(model.blocks[0].norm1.running_mean, torch.zeros(16))   # the copy ran, not the model
    accuracy_ = (expected.argmax(-1) == labels[index]).float().mean().item()
    assert batch_stat_accuracy(model, tokens, labels, 16, seed=3, pad_mask=pad_mask) == accuracy_
    assert not torch.equal(logits, batch_stat_logits(model, tokens, 16, seed=3)[1])   # pads now in BN's stats


def test_transformer_classifier_and_lm_learn():
    data = padded_sequences(256, 2, 10, seed=0)
    set_seed(0)
    model = TinyTransformer(16, d_model=16, n_heads=2, n_layers=1, max_len=10, num_classes=2)
    history = train_classifier(model, data["tokens"], data["labels"], pad_mask=data["pad_mask"], steps=40,
                               batch_size=16, lr=3e-3, seed=0, batches=bucket_by_length(data["lengths"], 16, 0),
                               warmup_steps=5)
    assert sum(history["train_loss"][-10:]) < sum(history["train_loss"][:10])
    text = text_corpus()[:20_000]
    stoi, itos = char_vocab(text)
    windows = char_lm_windows(text, 16, stoi)
    set_seed(0)
    lm = TinyTransformer(len(itos), d_model=16, n_heads=2, n_layers=1, max_len=16, causal=True)
    before = lm_loss(lm, windows[:64])
    history = train_lm(lm, windows, steps=40, batch_size=16, lr=3e-3, seed=0, windows_test=windows[:64], clip=1.0)
    assert history["test_loss"] < before and history["test_loss"] == lm_loss(lm, windows[:64])
