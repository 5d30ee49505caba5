"""One plot style for the whole book: the same colour and label for the same
norm in every chapter."""
import matplotlib.pyplot as plt

NORM_COLORS = {
    "bn": "#1f77b4",    # blue
    "ln": "#d62728",    # red
    "gn": "#2ca02c",    # green
    "in": "#9467bd",    # purple
    "rms": "#ff7f0e",   # orange
    "none": "#7f7f7f",  # grey
}
NORM_LABELS = {
    "bn": "BatchNorm", "ln": "LayerNorm", "gn": "GroupNorm",
    "in": "InstanceNorm", "rms": "RMSNorm", "none": "no norm",
}


def use_style():
    """Apply the book's matplotlib style (call once per notebook)."""
    plt.rcParams.update({
        "figure.figsize": (6.4, 3.6), "figure.dpi": 110, "axes.grid": True,
        "grid.alpha": 0.3, "axes.spines.top": False,
        "axes.spines.right": False, "axes.titlesize": 11,
        "axes.titleweight": "bold", "legend.frameon": False, "font.size": 10,
    })
