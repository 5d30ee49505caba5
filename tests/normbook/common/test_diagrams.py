"""normbook.common.diagrams: the drawings put the blocks where the norms'
statistics are, and chapter 15's panel draws gamma in the shape of each
layer's weight."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.patches import Polygon

from normbook.common.diagrams import (
    draw_norm_cubes,
    draw_vision_layernorms,
)
from normbook.common.plot import NORM_COLORS
from normlib.nn import GroupNorm, LayerNorm, LayerNorm2d


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def filled(ax, colour):
    """The polygons of `ax` filled with exactly `colour`."""
    rgb = np.array(to_rgb(colour))
    return [p for p in ax.patches if isinstance(p, Polygon) and p.get_fill()
            and np.allclose(p.get_facecolor()[:3], rgb)]


def test_norm_cubes_shade_each_norm_in_its_colour():
    axes = draw_norm_cubes(["bn", "ln"])
    for ax, norm in zip(axes.ravel(), ["bn", "ln"]):
        # the block's front face is drawn unshaded, in the norm's colour
        assert len(filled(ax, NORM_COLORS[norm])) == 1


def test_vision_layernorms_draw_three_panels_titled_by_layer():
    axes = draw_vision_layernorms()
    titles = [ax.get_title() for ax in np.ravel(axes)]
    assert titles == ["LayerNorm2d", "GroupNorm(1, C)",
                      "LayerNorm([C, H, W])"]
    for ax in np.ravel(axes):
        assert filled(ax, NORM_COLORS["ln"]), "the statistic's block"


def gamma_height(ax):
    """Page height of the grey gamma box: its front face's extent in y."""
    grey = np.array(to_rgb("0.55"))
    faces = [p for p in ax.patches if isinstance(p, Polygon)
             and np.allclose(p.get_facecolor()[:3], grey)]
    assert len(faces) == 1, "one front face of gamma, in plain grey"
    ys = faces[0].get_xy()[:, 1]
    return ys.max() - ys.min()


def test_gamma_is_a_rod_per_channel_or_a_slab_per_value():
    axes = np.ravel(draw_vision_layernorms())
    heights = [gamma_height(ax) for ax in axes]
    # the layers' own weights: C values for the first two, C*H*W for the last
    c, h, w = 6, 2, 2
    sizes = [LayerNorm2d(c).weight.numel(), GroupNorm(1, c).weight.numel(),
             LayerNorm([c, h, w]).weight.numel()]
    assert sizes == [c, c, c * h * w]
    assert heights[0] == heights[1] < heights[2]
