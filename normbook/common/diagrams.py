"""The axis diagrams: which numbers one mean and variance are taken over,
for each norm, drawn as a cube of cells (images) or a grid of tokens.

Chapter 1 draws them; any chapter may, in the book's colours.
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import LinearSegmentedColormap, to_rgb
from matplotlib.patches import Polygon, Rectangle

from normbook.common.plot import NORM_COLORS, NORM_LABELS

# A cell is one number; the shaded block is the set of numbers one mean and
# variance are taken over.

_DEPTH = (0.5, 0.36)  # page offset of one step along depth (oblique view)
_CUBE = (4, 4, 6)     # cells along N (across), H*W (up), C (depth)
_CUBE_BLOCKS = {      # shaded block as ((n0, hw0, c0), (n1, hw1, c1)) in cells
    "bn": ((0, 0, 0), (4, 4, 1)), "ln": ((0, 0, 0), (1, 4, 6)),
    "in": ((0, 0, 0), (1, 4, 1)), "gn": ((0, 0, 0), (1, 4, 2)),
    "rms": ((0, 0, 0), (1, 4, 6)),
}
_CUBE_NOTES = {
    "bn": "one per channel\nover N, H, W",
    "ln": "one per sample\nover C, H, W",
    "in": "one per (sample, channel)\nover H, W",
    "gn": "one per (sample, group)\nover C/G, H, W",
    "rms": "LN's block, but only the\nmean square (no mean)",
}
# a (B, T, C) batch seen as (B, C, T): across the words
_SEQ_TITLES = {"in": "InstanceNorm over T"}
_GRID_NOTES = {
    "bn": "one per feature\nover all B·T tokens",
    "ln": "one per token\nover its C features",
    "rms": "one per token, over its\nC features (no mean)",
    "in": "one per (sentence, feature)\nover the T words of a sentence",
}


def _mix(color, amount):
    """`color` mixed with white (amount > 0) or black (amount < 0)."""
    rgb = np.array(to_rgb(color))
    return (tuple(rgb + (1 - rgb) * amount) if amount > 0
            else tuple(rgb * (1 + amount)))


def _faces(lo, hi, outer):
    """The faces of box lo..hi seen from the front-top-right that lie on the
    outer box's surface."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    faces = []
    if z0 == 0:
        faces.append(("front", [(x0, y0, 0), (x1, y0, 0), (x1, y1, 0),
                                (x0, y1, 0)]))
    if y1 == outer[1]:
        faces.append(("top", [(x0, y1, z0), (x1, y1, z0), (x1, y1, z1),
                              (x0, y1, z1)]))
    if x1 == outer[0]:
        faces.append(("right", [(x1, y0, z0), (x1, y0, z1), (x1, y1, z1),
                                (x1, y1, z0)]))
    return faces


def _polygon(ax, corners, origin=(0, 0), **kw):
    ax.add_patch(Polygon([(origin[0] + x + _DEPTH[0] * z,
                           origin[1] + y + _DEPTH[1] * z)
                          for x, y, z in corners], closed=True, **kw))


def _cube_grid_lines(ax, outer, origin=(0, 0)):
    nx, ny, nz = outer
    lines = ([[(i, 0, 0), (i, ny, 0)] for i in range(nx + 1)]
             + [[(0, j, 0), (nx, j, 0)] for j in range(ny + 1)])
    lines += ([[(i, ny, 0), (i, ny, nz)] for i in range(nx + 1)]
              + [[(0, ny, k), (nx, ny, k)] for k in range(nz + 1)])
    lines += ([[(nx, j, 0), (nx, j, nz)] for j in range(ny + 1)]
              + [[(nx, 0, k), (nx, ny, k)] for k in range(nz + 1)])
    page = [[(origin[0] + x + _DEPTH[0] * z, origin[1] + y + _DEPTH[1] * z)
             for x, y, z in line] for line in lines]
    ax.add_collection(LineCollection(page, colors="0.45", linewidths=0.6,
                                     zorder=3))


# light from above: a lit top, a dark side
_SHADE = {"front": 0.0, "top": 0.45, "right": -0.25}


def _draw_cube(ax, block, color, title, note):
    """One panel: the (N, H*W, C) cube with `block` shaded in `color`, its
    axes named, `title` above and `note` below."""
    for name, corners in _faces((0, 0, 0), _CUBE, _CUBE):
        _polygon(ax, corners, facecolor="white", edgecolor="none", zorder=1)
    for name, corners in _faces(*block, _CUBE):
        _polygon(ax, corners, facecolor=_mix(color, _SHADE[name]),
                 edgecolor="none", zorder=2)
    _cube_grid_lines(ax, _CUBE)
    for name, corners in _faces((0, 0, 0), _CUBE, _CUBE):
        _polygon(ax, corners, fill=False, edgecolor="0.15", lw=1.1,
                 zorder=4)
    nx, ny, nz = _CUBE
    ax.annotate("", xy=(nx, -0.45), xytext=(0, -0.45),
                arrowprops=dict(arrowstyle="->", lw=0.9))
    ax.text(nx / 2, -0.6, "N", ha="center", va="top")
    ax.annotate("", xy=(-0.35, ny), xytext=(-0.35, 0),
                arrowprops=dict(arrowstyle="->", lw=0.9))
    ax.text(-0.5, ny / 2, "H, W", ha="right", va="center", rotation=90)
    x0, y0, dz = nx + 0.3, -0.15, (_DEPTH[0] * nz, _DEPTH[1] * nz)
    ax.annotate("", xy=(x0 + dz[0], y0 + dz[1]), xytext=(x0, y0),
                arrowprops=dict(arrowstyle="->", lw=0.9))
    ax.text(x0 + dz[0] / 2 + 0.25, y0 + dz[1] / 2 - 0.2, "C",
            ha="left", va="top")
    ax.set_title(title, color=color)
    ax.text(nx / 2 + dz[0] / 2, -1.5, note, ha="center", va="top",
            fontsize=8.5)
    ax.set_xlim(-1.3, nx + dz[0] + 0.8)
    ax.set_ylim(-3.0, ny + dz[1] + 0.3)
    ax.set_aspect("equal")
    ax.axis("off")


_CUBE_KEY = ("How to read a panel\n\n"
             "• each cell is one number\n"
             "• the shaded cells are one block:\n"
             "   one mean and one variance\n"
             "• more blocks of the same shape\n   tile the rest of the box\n"
             "• GroupNorm is drawn with\n   2 channels per group")


def draw_norm_cubes(norms=("bn", "ln", "in", "gn", "rms"), ncols=3,
                    axes=None):
    """The (N, C, H*W) cube once per norm, with the block of numbers one
    statistic averages over shaded.
    A spare panel in the last row gets a key to the drawing."""
    if axes is None:
        nrows = -(-len(norms) // ncols)
        _, axes = plt.subplots(nrows, ncols,
                               figsize=(2.4 * ncols, 2.75 * nrows),
                               squeeze=False)
        for ax in axes.ravel()[len(norms):]:
            ax.axis("off")
        axes.ravel()[-1].text(0.02, 0.55, _CUBE_KEY, va="center",
                              fontsize=8.5, linespacing=1.3,
                              transform=axes.ravel()[-1].transAxes)
    for ax, norm in zip(np.ravel(axes), norms):
        _draw_cube(ax, _CUBE_BLOCKS[norm], NORM_COLORS[norm],
                   NORM_LABELS[norm], _CUBE_NOTES[norm])
    return axes


# the three LayerNorms of an image: (title, statistics' block, note,
# cells of gamma along H*W (1: one per channel, all of H*W: one per value),
# note on gamma and beta)
_VISION_LNS = (
    ("LayerNorm2d", ((0, 3, 0), (1, 4, 6)),
     "one per (sample, pixel)\nover its C channels", 1,
     "γ, β: one per channel\n(2·C numbers)"),
    ("GroupNorm(1, C)", ((0, 0, 0), (1, 4, 6)),
     "one per sample\nover C, H, W", 1,
     "γ, β: one per channel\n(2·C numbers)"),
    ("LayerNorm([C, H, W])", ((0, 0, 0), (1, 4, 6)),
     "one per sample\nover C, H, W", 4,
     "γ, β: one per value\n(2·C·H·W numbers)"),
)


def draw_vision_layernorms(axes=None):
    """The three norms called LayerNorm for images, in the cube of
    `draw_norm_cubes` (LayerNorm's colour): the block one statistic
    averages over, and below it, in grey, the shape of the affine weight
    gamma (and beta): a rod of C cells, one per channel, or a slab of
    C x H*W cells, one per value."""
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(7.2, 4.7))
    nz = _CUBE[2]
    for ax, (title, block, note, gamma_hw, gamma_note) in zip(
            np.ravel(axes), _VISION_LNS):
        _draw_cube(ax, block, NORM_COLORS["ln"], title, note)
        gamma = (1, gamma_hw, nz)
        # below the note: the top of gamma's box at y = -3.2
        origin = (1.5, -3.2 - _DEPTH[1] * nz - gamma_hw)
        for name, corners in _faces((0, 0, 0), gamma, gamma):
            _polygon(ax, corners, origin, facecolor=_mix("0.55",
                                                         _SHADE[name]),
                     edgecolor="0.15", lw=1.0, zorder=2)
        _cube_grid_lines(ax, gamma, origin)
        ax.text(origin[0] - 0.3, origin[1] + gamma_hw / 2, "γ", ha="right",
                va="center", fontsize=11)
        ax.text(_CUBE[0] / 2 + _DEPTH[0] * nz / 2, -9.7, gamma_note,
                ha="center", va="top", fontsize=8.5)
        ax.set_ylim(-11.0, _CUBE[1] + _DEPTH[1] * nz + 0.3)
    return axes


def draw_token_grids(norms=("bn", "ln", "in"), batch=3, seq_len=4,
                     features=6, axes=None):
    """The (B, T, C) activations of a Transformer as a tokens x features
    grid, once per norm, with the numbers one statistic averages over shaded
    ("in" = statistics over the T words of one sentence)."""
    if axes is None:
        _, axes = plt.subplots(1, len(norms), figsize=(2.2 * len(norms), 3.5),
                               layout="constrained")
    gap = 0.35                                  # space between sentences
    row_y = [b * (seq_len + gap) + t
             for b in range(batch) for t in range(seq_len)]
    height = row_y[-1] + 1
    for ax, norm in zip(np.atleast_1d(axes), norms):
        # the default, for ln and rms: one token's row
        shaded = {"bn": lambda b, t, c: c == 0,
                  "in": lambda b, t, c: c == 0 and b == 0}.get(
                      norm, lambda b, t, c: b == 0 and t == 0)
        for b in range(batch):
            for t in range(seq_len):
                for c in range(features):
                    face = NORM_COLORS[norm] if shaded(b, t, c) else "white"
                    ax.add_patch(Rectangle(
                        (c, height - 1 - row_y[b * seq_len + t]), 1, 1,
                        facecolor=face, edgecolor="0.45", lw=0.6))
            ax.text(-0.25, height - row_y[b * seq_len] - seq_len / 2,
                    f"sentence {b + 1}", rotation=90, ha="right",
                    va="center", fontsize=8.5)
        ax.annotate("", xy=(features, height + 0.35),
                    xytext=(0, height + 0.35),
                    arrowprops=dict(arrowstyle="->", lw=0.9))
        ax.text(features / 2, height + 0.5, "C (features)", ha="center",
                va="bottom", fontsize=9)
        ax.annotate("", xy=(features + 0.35, height - seq_len),
                    xytext=(features + 0.35, height),
                    arrowprops=dict(arrowstyle="->", lw=0.9))
        ax.text(features + 0.5, height - seq_len / 2, "T", ha="left",
                va="center", fontsize=9)
        ax.text(features / 2, -0.4, _GRID_NOTES[norm], ha="center",
                va="top", fontsize=8.5)
        ax.set_title(_SEQ_TITLES.get(norm, NORM_LABELS[norm]),
                     color=NORM_COLORS[norm], pad=16)
        ax.set_xlim(-1.4, features + 1.1)
        ax.set_ylim(-2.2, height + 1.4)
        ax.set_aspect("equal")
        ax.axis("off")
    return axes


def plot_token_changes(changes, words, changed, axes=None):
    """One panel per norm: how far each token's output moved (max |change|
    over its features) after one token of the input was edited. changes:
    norm -> (B, T) array; words: B lists of T words; changed: the (sentence,
    position) that was edited, outlined in black."""
    norms = list(changes)
    if axes is None:
        _, axes = plt.subplots(len(norms), 1,
                               figsize=(6.4, 1.5 * len(norms) + 0.6),
                               squeeze=False, sharex=True,
                               layout="constrained")
    # one colour scale for every panel
    largest = max(np.max(m) for m in changes.values())
    for ax, norm in zip(np.ravel(axes), norms):
        moved = np.asarray(changes[norm])
        cmap = LinearSegmentedColormap.from_list(
            norm, ["white", NORM_COLORS[norm]])
        ax.imshow(np.where(moved > 0, 0.2 + 0.8 * moved / largest, 0),
                  cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (b, t), value in np.ndenumerate(moved):
            label = "unchanged" if value == 0 else f"{value:.2g}"
            ax.text(t, b, f"{words[b][t]}\n{label}", ha="center",
                    va="center", fontsize=8,
                    color="0.55" if value == 0 else "black")
        ax.add_patch(Rectangle((changed[1] - 0.5, changed[0] - 0.5), 1, 1,
                               fill=False, lw=2, edgecolor="black"))
        ax.set_xticks(range(moved.shape[1]),
                      [f"position {t}" for t in range(moved.shape[1])])
        ax.set_yticks(range(moved.shape[0]),
                      [f"sentence {b + 1}" for b in range(moved.shape[0])])
        ax.set_title(_SEQ_TITLES.get(norm, NORM_LABELS[norm]),
                     color=NORM_COLORS[norm], loc="left")
        ax.grid(False)
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
    return axes
