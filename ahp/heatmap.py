"""The affinity heatmap in the style of the paper's Figure 7: the raw-loss view beside the AHP view.

    taskonomy --config configs/tiny.yaml ahp      # writes <run>/affinity_heatmap.png

Targets are rows, first-order sources columns, both ordered by hierarchical clustering of the AHP rows
(average linkage, optimal leaf order), and a source that is also a target takes that target's place, so
the self-transfer cells line up on a diagonal where there is one. Figures are built on their own
(`matplotlib.figure.Figure`), never through pyplot, so importing this module leaves the backend alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FormatStrFormatter, NullLocator
from scipy.cluster.hierarchy import leaves_list, linkage

__all__ = ["affinity_distance_figure", "affinity_heatmap_figure", "cluster_order", "plot_affinity_heatmap"]

_ANNOTATE_CELLS = 600  # write the numbers into the cells up to this many cells; past it they are unreadable


def cluster_order(profiles: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage clustering of the rows of `profiles` (NaN counts as 0)."""
    if len(profiles) < 3:
        return np.arange(len(profiles))
    data = np.nan_to_num(np.asarray(profiles, dtype=np.float64))
    return leaves_list(linkage(data, method="average", metric="euclidean", optimal_ordering=True))


def _axes_order(targets: list[str], sources: list[str], affinity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = cluster_order(affinity)
    ordered_targets = [targets[r] for r in rows]
    shared = [sources.index(t) for t in ordered_targets if t in sources]
    rest = [c for c in range(len(sources)) if c not in shared]
    rest = [rest[c] for c in cluster_order(affinity[:, rest].T)] if rest else []
    return rows, np.array(shared + rest, dtype=np.int64)


def _panel(ax, values: np.ndarray, rows: list[str], cols: list[str], title: str, label: str, cmap: str,
           log: bool, fig: Figure, annotate: bool = True) -> None:
    masked = np.ma.masked_invalid(values)
    finite = values[np.isfinite(values)]
    norm = None
    if log and finite.size and finite.min() > 0 and finite.max() > finite.min():
        norm = LogNorm(vmin=finite.min(), vmax=finite.max())
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="#dddddd")  # grey: a transfer that was not tried
    image = ax.imshow(masked, cmap=colormap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("source")
    ax.set_title(title, fontsize=10)
    for r, target in enumerate(rows):  # outline the self-transfer cells
        if target in cols:
            ax.add_patch(Rectangle((cols.index(target) - 0.5, r - 0.5), 1, 1, fill=False, lw=1.2, ec="red"))
    if annotate and values.size <= _ANNOTATE_CELLS and finite.size:
        mid = np.exp(np.log(finite).mean()) if norm is not None else (finite.min() + finite.max()) / 2
        bright_high = cmap == "viridis"
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                light = (v > mid) == bright_high
                ax.text(c, r, f"{v:.3f}" if v < 1 else f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if light else "white")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label(label, fontsize=8)
    if norm is not None:  # plain numbers at even steps of the log scale, not 2 x 10^0
        bar.ax.yaxis.set_minor_locator(NullLocator())
        bar.set_ticks(np.geomspace(norm.vmin, norm.vmax, 5))
        bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))


def affinity_heatmap_figure(targets: list[str], sources: list[str], affinity: np.ndarray, loss_ratio: np.ndarray,
                            title: str = "") -> Figure:
    """The two-panel figure: (targets, sources) arrays, NaN where a transfer was not tried."""
    width = 4 + 0.36 * len(sources)
    # a Figure of its own, not pyplot: no global backend or figure registry, so notebooks keep their plots
    fig = Figure(figsize=(2 * width, 2.2 + 0.3 * len(targets)), layout="constrained")
    left, right = fig.subplots(1, 2)
    if affinity.size == 0:  # no first-order transfer at all: say so rather than fail
        fig.suptitle(f"{title}: no first-order transfers to show")
        return fig
    rows, cols = _axes_order(targets, sources, affinity)
    row_names = [targets[r] for r in rows]
    col_names = [sources[c] for c in cols]
    _panel(left, loss_ratio[np.ix_(rows, cols)], row_names, col_names,
           "Raw losses: mean test loss / fully supervised (lower = better)", "mean loss ÷ full (log scale)",
           "viridis_r", True, fig)
    _panel(right, affinity[np.ix_(rows, cols)], row_names, col_names,
           "AHP affinity (tournament over all transfers; higher = better)", "affinity (each row over all "
           "transfers sums to 1)", "viridis", False, fig)
    left.set_ylabel("target")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def affinity_distance_figure(targets: list[str], sources: list[str], affinity: np.ndarray,
                             beta: float = 20.0) -> Figure:
    """The paper's Figure 7 view of the AHP affinities P (targets, sources): the affinity distance exp(-beta P),
    lower = better transfer, ordered as the heatmap; NaN where a transfer was not tried."""
    fig = Figure(figsize=(4 + 0.36 * len(sources), 2.2 + 0.3 * len(targets)), layout="constrained")
    ax = fig.subplots()
    if affinity.size == 0:
        fig.suptitle("no first-order transfers to show")
        return fig
    rows, cols = _axes_order(targets, sources, affinity)
    _panel(ax, np.exp(-beta * affinity[np.ix_(rows, cols)]), [targets[r] for r in rows],
           [sources[c] for c in cols], f"Affinity distance exp(-{beta:g} P) of the first-order AHP affinities P "
           f"(lower = better)", "exp(-beta P)", "viridis_r", False, fig, annotate=False)  # the heatmap has the numbers
    ax.set_ylabel("target")
    return fig


def plot_affinity_heatmap(path: str | Path, targets: list[str], sources: list[str], affinity: np.ndarray,
                          loss_ratio: np.ndarray, title: str = "") -> Path:
    """Write affinity_heatmap_figure() as a PNG atomically."""
    return _save(affinity_heatmap_figure(targets, sources, affinity, loss_ratio, title), Path(path))


def _save(fig: Figure, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")  # atomic: a killed run never leaves half a PNG
    fig.savefig(tmp, format="png", dpi=130)
    os.replace(tmp, path)
    return path
