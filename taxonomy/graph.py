"""Pictures of stage IV (matplotlib): the taxonomy graph (paper Figures 1 and 8) and evaluation curves (Figure 9).

    taskonomy --config configs/tiny.yaml solve      # -> taxonomy_graph.png
    taskonomy --config configs/tiny.yaml evaluate   # -> evaluation_curves.png, evaluation_taxonomies.png

Functions return figures (`matplotlib.figure.Figure`, built without pyplot, so importing this module leaves
the backend and a notebook's inline plots alone); the stage saves them. Supervised sources sit on the top row,
targets reached by a transfer below; a higher-order transfer is a small junction where its sources' lines meet
before one arrow goes on to the target.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch

from taskonomy.taxonomy.bip import Transfer
from taskonomy.taxonomy.evaluate import SweepPoint
from taskonomy.taxonomy.significance import METRICS, Significance

__all__ = ["draw_taxonomy", "evaluation_figure", "novel_figure", "significance_figure", "similarity_trees_figure",
           "taxonomy_figure", "taxonomy_grid_figure"]

_FULL, _SOURCE, _TARGET = "#1f4e8c", "#8fb4e3", "#e8e8e8"  # supervised and solved fully / supervised source / target
_ORDER_COLOURS = ("#555555", "#d1495b", "#2e933c", "#7b4fb0", "#e08a00")
_TARGET_Y, _SOURCE_Y = 0.0, 1.0


def _order_colour(order: int) -> str:
    return _ORDER_COLOURS[min(order, len(_ORDER_COLOURS)) - 1]


def _spread(n: int, width: float) -> list[float]:
    return [width * (i + 0.5) / n for i in range(n)]


def _layout(supervised: Sequence[str], policy: Mapping[str, Transfer]) -> tuple[dict, dict, float]:
    """x of the supervised nodes (top row) and of the targets reached by a transfer (bottom row), and the width.

    Targets sit in the order of the mean x of their sources, which keeps most arrows from crossing.
    """
    reached = [t for t, tr in policy.items() if tr.name != "full"]
    width = float(max(3, len(reached), 2 * len(supervised)))
    top = dict(zip(supervised, _spread(len(supervised), width)))
    reached.sort(key=lambda t: (float(np.mean([top[s] for s in policy[t].sources])), t))
    return top, dict(zip(reached, _spread(len(reached), width))), width


def _labels_fit(ax: Axes, names: list[str], fontsize: float) -> bool:
    """Whether the supervised names fit side by side in boxes at this axes' size (else they are slanted)."""
    if not names:
        return True
    spacing = ax.get_position().width * ax.figure.get_size_inches()[0] / len(names)  # inches per node
    return max(map(len, names)) * 0.6 * fontsize / 72 + 0.2 < spacing  # a character is ~0.6 em wide


def _slant(ax: Axes, n: int, fontsize: float) -> float:
    """Label angle (degrees) at which `n` slanted labels side by side do not overlap: at least 35, at most 90."""
    spacing = ax.get_position().width * ax.figure.get_size_inches()[0] / max(n, 1)  # inches per node
    ratio = 1.3 * fontsize / 72 / spacing  # line height over spacing = sin(angle) where labels just touch
    return 90.0 if ratio >= 1 else max(35.0, math.degrees(math.asin(ratio)))


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], colour: str, head: bool) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>" if head else "-", mutation_scale=9, color=colour,
                                 lw=1.0, alpha=0.8, zorder=2, shrinkA=0, shrinkB=5 if head else 0))


def draw_taxonomy(ax: Axes, supervised: Sequence[str], policy: Mapping[str, Transfer], *,
                  scores: Mapping[str, tuple[float, float]] | None = None, fontsize: float = 8) -> None:
    """Draw one taxonomy into `ax`: supervised boxes on top, target dots below with slanted labels, coloured by
    quality (0 red .. 0.5 and above green) when scores are given."""
    top, bottom, width = _layout(list(supervised), policy)
    full = {t for t, tr in policy.items() if tr.name == "full"}
    cmap = matplotlib.colormaps["RdYlGn"]
    source_y = _SOURCE_Y - 0.06  # lines leave from the bottom edge of the box
    for t, xt in bottom.items():
        tr = policy[t]
        colour = _order_colour(tr.order)
        if tr.order == 1:
            _arrow(ax, (top[tr.sources[0]], source_y), (xt, _TARGET_Y), colour, True)
            continue
        # a small junction where the sources meet, jittered so that junctions rarely coincide
        junction = (0.5 * float(np.mean([top[s] for s in tr.sources])) + 0.5 * xt,
                    0.34 + 0.04 * (zlib.crc32(t.encode()) % 5))
        for s in tr.sources:
            _arrow(ax, (top[s], source_y), junction, colour, False)
        ax.plot(*junction, "o", ms=3.5, color=colour, zorder=3)
        _arrow(ax, junction, (xt, _TARGET_Y), colour, True)
    boxes = _labels_fit(ax, list(top), fontsize)
    for s, x in top.items():
        fill = _FULL if s in full else _SOURCE
        if boxes:
            ax.text(x, _SOURCE_Y, s, ha="center", va="center", fontsize=fontsize, zorder=4,
                    color="white" if s in full else "black",
                    bbox=dict(boxstyle="round,pad=0.3", fc=fill, ec="#333333", lw=0.6))
        else:  # too many to sit side by side: square nodes with slanted labels above them
            ax.plot(x, source_y, "s", ms=fontsize, mfc=fill, mec="#333333", mew=0.6, zorder=4)
            ax.text(x, source_y + 0.09, s, ha="left", va="bottom", rotation=_slant(ax, len(top), fontsize),
                    rotation_mode="anchor", fontsize=fontsize, zorder=4)
    for t, x in bottom.items():
        quality = scores.get(t, (math.nan, math.nan))[1] if scores else math.nan
        colour = _TARGET if math.isnan(quality) else to_hex(cmap(min(quality / 0.5, 1.0)))
        ax.plot(x, _TARGET_Y, "o", ms=fontsize, mfc=colour, mec="#333333", mew=0.6, zorder=4)
        ax.text(x, _TARGET_Y - 0.09, t, ha="right", va="top", rotation=_slant(ax, len(bottom), fontsize),
                rotation_mode="anchor", fontsize=fontsize, zorder=4)
    ax.set_xlim(0, width)
    ax.set_ylim(_TARGET_Y - 0.62, _SOURCE_Y + (0.12 if boxes else 0.55))
    ax.axis("off")


def taxonomy_figure(supervised: Sequence[str], policy: Mapping[str, Transfer], title: str,
                    scores: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """The taxonomy of one solve, with a legend of node kinds and transfer orders."""
    _, bottom, width = _layout(list(supervised), policy)
    fig = Figure(figsize=(max(7.5, 0.62 * width + 1), 4.3))
    ax = fig.subplots()
    draw_taxonomy(ax, supervised, policy, scores=scores)
    orders = sorted({tr.order for tr in policy.values() if tr.name != "full"})
    handles = [Patch(fc=_FULL, ec="#333333", label="supervised, solved fully"),
               Patch(fc=_SOURCE, ec="#333333", label="supervised source only"),
               Line2D([], [], ls="", marker="o", mfc=_TARGET, mec="#333333",
                      label="target by transfer" + (" (colour: quality)" if scores else ""))]
    handles += [Line2D([], [], color=_order_colour(k), label=f"order {k} transfer") for k in orders]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def taxonomy_grid_figure(points: Sequence[SweepPoint], budgets: Sequence[float], orders: Sequence[int]) -> Figure:
    """Figure 8 of the paper: taxonomies for a few budgets (columns) and max orders (rows)."""
    by_key = {(p.budget, p.max_order): p for p in points}
    fig = Figure(figsize=(5.0 * len(budgets), 2.8 * len(orders)))
    axes = fig.subplots(len(orders), len(budgets), squeeze=False)
    for r, order in enumerate(orders):
        for c, budget in enumerate(budgets):
            ax, point = axes[r][c], by_key.get((budget, order))
            if point is None or not point.policy:
                ax.text(0.5, 0.5, "infeasible", ha="center", va="center", color="#999999")
                ax.axis("off")
            else:
                draw_taxonomy(ax, point.supervised, point.policy, scores=point.scores, fontsize=5)
            ax.set_title(f"budget {budget:g}, max order {order}", fontsize=8)
    fig.suptitle("Taxonomies by supervision budget (columns) and max transfer order (rows); targets coloured by "
                 "quality", fontsize=9)
    fig.tight_layout()
    return fig


def evaluation_figure(points: Sequence[SweepPoint], targets: Sequence[str]) -> Figure:
    """Mean gain and quality against the budget per max order (top row), then per-target gain and quality
    against the budget at max order 1 and at the largest max order (the paper's Figure 9)."""
    orders = sorted({p.max_order for p in points})
    budgets = sorted({p.budget for p in points})
    shown = sorted({orders[0], orders[-1]})
    height = max(2.0, 0.2 * len(targets) + 0.8)
    fig = Figure(figsize=(12, 3.8 + height * len(shown)))
    axes = fig.subplots(1 + len(shown), 2, squeeze=False, height_ratios=[3.6] + [height] * len(shown))
    for ax, metric in zip(axes[0], ("gain", "quality")):
        for order in orders:
            line = [(p.budget, p.mean_gain if metric == "gain" else p.mean_quality)
                    for p in points if p.max_order == order and p.policy]
            if line:
                ax.plot(*zip(*line), "o-", ms=3, color=_order_colour(order), label=f"max order {order}")
        ax.axhline(0.5, color="#999999", lw=0.8, ls="--")
        against = "scratch" if metric == "gain" else "full supervision"
        ax.set(xlabel="supervision budget", ylabel=f"mean {metric} (win rate)", ylim=(0, 1.02),
               title=f"{metric.capitalize()}: win rate against {against}")
        ax.legend(fontsize=8)
    for row, order in zip(axes[1:], shown):
        for ax, k, metric in zip(row, (0, 1), ("gain", "quality")):
            _heatmap(fig, ax, points, targets, budgets, order, k)
            ax.set_title(f"{metric.capitalize()} per target, max order {order}", fontsize=10)
    fig.tight_layout()
    return fig


def _heatmap(fig: Figure, ax: Axes, points: Sequence[SweepPoint], targets: Sequence[str],
             budgets: Sequence[float], order: int, k: int) -> None:
    grid = np.full((len(targets), len(budgets)), np.nan)  # (targets, budgets); NaN: infeasible or unscored
    for p in points:
        if p.max_order == order:
            for t, values in p.scores.items():
                if t in targets:
                    grid[targets.index(t), budgets.index(p.budget)] = values[k]
    image = ax.imshow(grid, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(targets)), targets, fontsize=7)
    step = max(1, len(budgets) // 12)
    ax.set_xticks(range(0, len(budgets), step), [f"{b:g}" for b in budgets[::step]], fontsize=7)
    ax.set_xlabel("supervision budget", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04)


def similarity_trees_figure(trees: Sequence[np.ndarray], tasks: Sequence[str], names: Sequence[str],
                            correlation: float) -> Figure:
    """Two task-similarity trees (scipy linkage matrices over the same tasks) facing each other, as the paper's
    task tree: the left one's leaves on its right, the right one's on its left."""
    from scipy.cluster.hierarchy import dendrogram

    fig = Figure(figsize=(11, max(3.5, 0.28 * len(tasks) + 1.5)))
    axes = fig.subplots(1, 2)
    for ax, tree, name, side in zip(axes, trees, names, ("left", "right")):
        if len(tree):
            dendrogram(tree, labels=list(tasks), orientation=side, ax=ax, color_threshold=0,
                       above_threshold_color="#1f4e8c", leaf_font_size=8)
        else:
            ax.text(0.5, 0.5, "fewer than 3 common tasks", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelsize=7)
        for spine in ("top", "left", "right"):
            ax.spines[spine].set_visible(False)
    shown = "n/a" if math.isnan(correlation) else f"{correlation:.2f}"
    fig.suptitle(f"Task-similarity trees (average linkage of first-order affinities); cophenetic correlation "
                 f"{shown}", fontsize=10)
    fig.tight_layout()
    return fig


def significance_figure(results: Sequence[Significance]) -> Figure:
    """The paper's Figure 11: per max order (rows), the taxonomy's mean gain and quality (columns) against the
    budget over the band of random feasible policies (5th to 95th percentile, median dashed); in the last row, the
    share of random policies it beats."""
    from matplotlib.ticker import MaxNLocator

    orders = sorted({s.max_order for s in results})
    n = max((len(s.random) for s in results), default=0)
    fig = Figure(figsize=(12, 2.7 * len(orders) + 3.0))
    axes = fig.subplots(len(orders) + 1, 2, squeeze=False, height_ratios=[2.7] * len(orders) + [3.0])
    for k, metric in enumerate(METRICS):
        bottom = axes[-1][k]
        for row, order in enumerate(orders):
            ax, colour = axes[row][k], _order_colour(order)
            line = sorted((s for s in results if s.max_order == order and len(s.random)), key=lambda s: s.budget)
            budgets = [s.budget for s in line]
            ax.fill_between(budgets, [s.band(metric, 0.05) for s in line], [s.band(metric, 0.95) for s in line],
                            color="#999999", alpha=0.3, lw=0, label=f"{n} random policies: 5-95%")
            ax.plot(budgets, [s.band(metric, 0.5) for s in line], "--", color="#555555", lw=0.9,
                    label="random policies: median")
            ax.plot(budgets, [s.taxonomy[k] for s in line], "o-", ms=3, color=colour, label="taxonomy")
            bottom.plot(budgets, [s.beaten(metric) for s in line], "o-", ms=3, color=colour,
                        label=f"max order {order}")
            ax.set(ylabel=f"mean {metric}", ylim=(0, 1.02))
            ax.set_title(f"{metric.capitalize()} (win rate against {'scratch' if k == 0 else 'full supervision'}), "
                         f"max order {order}", fontsize=10)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if row == 0:
                ax.legend(fontsize=7, loc="lower right")
        bottom.axhline(0.95, color="#999999", lw=0.8, ls="--")
        bottom.set(xlabel="supervision budget", ylabel="share beaten", ylim=(-0.02, 1.02))
        bottom.set_title(f"Share of random policies beaten on {metric} (ties count half; dashed: 95%)", fontsize=10)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def novel_figure(results: Sequence, budget: float, max_order: int) -> Figure:
    """The paper's Figure 10: per left-out task, the gain and quality of all-for-one from the others' taxonomy
    beside its best single source, random and pixels (results: taxonomy.novel.Novel)."""
    policies = ("all_for_one", "best_source", "random", "pixels")
    colours = ("#1f4e8c", "#8fb4e3", "#999999", "#d1495b")
    tasks = [r.task for r in results]
    fig = Figure(figsize=(max(8.0, 0.55 * len(tasks) + 2), 7.0))
    axes = fig.subplots(2, 1, sharex=True)
    width = 0.8 / len(policies)
    for k, (ax, metric) in enumerate(zip(axes, ("gain", "quality"))):
        for j, (policy, colour) in enumerate(zip(policies, colours)):
            values = [r.scores[policy][k] for r in results]
            ax.bar(np.arange(len(tasks)) + (j - 1.5) * width, values, width, color=colour,
                   label=policy.replace("_", " ").replace("all for one", "all-for-one"))
        ax.axhline(0.5, color="#555555", lw=0.8, ls="--")
        ax.set(ylabel=f"{metric} (win rate)", ylim=(0, 1.02))
        ax.set_title(f"{metric.capitalize()} against {'scratch' if k == 0 else 'full supervision'}", fontsize=10)
    axes[0].legend(fontsize=8, ncol=4, loc="upper right")
    axes[1].set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=8)
    fig.suptitle(f"Each task left out in turn, reached by all-for-one from the others' taxonomy (budget {budget:g}, "
                 f"max order {max_order})", fontsize=10)
    fig.tight_layout()
    return fig
