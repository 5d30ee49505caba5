"""normbook.common.models: shapes, norms, padding masks."""
import pytest
import torch

from normbook.common.models import (
    NORMS,
    TinyCNN,
    TinyMLP,
    make_norm,
)
from normbook.common.train import set_seed
from normlib import nn as ours


@pytest.mark.parametrize("norm", NORMS)
def test_tiny_cnn_shapes_and_only_normlib_norms(norm):
    set_seed(0)
    model = TinyCNN(norm)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    torch_norms = (torch.nn.BatchNorm2d, torch.nn.LayerNorm,
                   torch.nn.GroupNorm, torch.nn.RMSNorm)
    assert not any(isinstance(m, torch_norms) for m in model.modules())


def test_tiny_mlp_and_vector_norms():
    x = torch.randn(5, 1, 8, 8)
    for norm in ("bn", "ln", "gn", "rms", "none"):
        assert TinyMLP(norm)(x).shape == (5, 10)
    with pytest.raises(ValueError, match="layout"):
        make_norm("bn", 4, "volume")


@pytest.mark.parametrize("layout,shape",
                         [("image", (4, 16, 3, 3)), ("sequence", (4, 5, 16))])
@pytest.mark.parametrize("kind", NORMS)
def test_make_norm_takes_a_mask_and_keeps_shape(kind, layout, shape):
    norm = make_norm(kind, 16, layout)
    x = torch.randn(shape)
    assert norm(x).shape == x.shape
    if layout == "sequence":
        pad_mask = torch.zeros(4, 5, dtype=torch.bool)
        assert norm(x, pad_mask=pad_mask).shape == x.shape


def test_image_ln_and_gn_are_group_norms():
    assert make_norm("ln", 32, "image").norm.num_groups == 1
    assert make_norm("gn", 32, "image").norm.num_groups == 8
    assert make_norm("gn", 12, "image").norm.num_groups == 6
    assert isinstance(make_norm("bn", 8, "sequence"), ours.SequenceBatchNorm)


def test_dyt_is_a_sequence_norm_that_ignores_the_mask():
    norm, x = make_norm("dyt", 8, "sequence"), torch.randn(2, 3, 8)
    torch.testing.assert_close(norm(x, torch.ones(2, 3, dtype=torch.bool)),
                               norm(x))
    with pytest.raises(ValueError, match="kind"):
        make_norm("dyt", 8, "image")


def test_image_ln2d_normalizes_each_pixel_over_its_channels():
    norm = make_norm("ln2d", 6, "image")
    assert isinstance(norm.norm, ours.LayerNorm2d)
    y = norm(torch.randn(3, 6, 4, 5) * 5 + 2)
    torch.testing.assert_close(y.mean(1), torch.zeros(3, 4, 5),
                               atol=1e-5, rtol=0)
    assert TinyCNN("ln2d")(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    for layout in ("vector", "sequence"):
        with pytest.raises(ValueError, match="kind"):
            make_norm("ln2d", 6, layout)


def test_brn_is_batch_renorm_for_images_and_vectors_only():
    assert isinstance(make_norm("brn", 8, "image").norm, ours.BatchRenorm2d)
    assert isinstance(make_norm("brn", 8, "vector").norm, ours.BatchRenorm1d)
    with pytest.raises(ValueError, match="kind"):
        make_norm("brn", 8, "sequence")
    set_seed(0)
    x = torch.randn(4, 1, 8, 8)
    assert TinyCNN("brn")(x).shape == TinyMLP("brn")(x).shape == (4, 10)


def test_weights_options_keep_the_plain_initialization():
    x = torch.randn(3, 1, 8, 8)
    for make, options in ((TinyCNN, ("ws", "wn")), (TinyMLP, ("wn",))):
        set_seed(0)
        plain = make("gn")
        for weights in options:
            set_seed(0)
            other = make("gn", weights=weights)
            first = other.conv1 if make is TinyCNN else other.fc1
            # the same draws: ws standardizes them, wn writes them as g, v
            torch.testing.assert_close(
                first.parametrizations.weight.original1 if weights == "wn"
                else first.weight,
                (plain.conv1 if make is TinyCNN else plain.fc1).weight)
            assert other(x).shape == (3, 10)
    set_seed(0)
    wn = TinyMLP("none", weights="wn")
    set_seed(0)
    torch.testing.assert_close(wn(x), TinyMLP("none")(x))  # same function
    assert isinstance(TinyCNN("gn", weights="ws").conv2, ours.WSConv2d)
    with pytest.raises(ValueError, match="weights"):
        TinyMLP("gn", weights="ws")        # WSConv2d is for convolutions
