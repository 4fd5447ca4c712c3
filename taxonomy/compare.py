"""How far two runs agree: rank correlations of their first-order affinities, the supervised sets their BIPs
choose, and their task-similarity trees.

    taskonomy compare runs/default published          # compare.csv, compare.json, compare.png in runs/default
    taskonomy compare published:1k published:16k --out cmp

A side is a run folder (its affinity.csv) or `published[:1k|16k|all]` (the release's affinities, read from the
shipped pickles; `published` is the 16k set). Per common target, over the first-order sources both sides tried
(`full` left out, the `random` control kept, and in two published sets the release's t__t, column t): Spearman
and Kendall rank correlation (scipy.stats), whether the top source is the same, and the share of the top three
both share. Then the supervised sets chosen at budgets 1..k, max order 1, over the common sources (controls left
out) and targets, and their Jaccard overlap; and each side's task-similarity tree, the paper's agglomerative
clustering of tasks by how they transfer out (average linkage over per-target normalised first-order
affinities), drawn side by side, with the correlation of the two trees' cophenetic distances.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError
from taskonomy import artifacts
from taskonomy import tasks as registry
from taskonomy.runfolder import RunFolder, save_figure, write_csv, write_json

__all__ = ["Agreement", "BudgetAgreement", "Comparison", "Side", "agreement", "common_tasks", "compare",
           "first_order_problem", "mean_spearman", "open_side", "run_compare", "similarity_tree", "similarity_trees"]

PUBLISHED = "published"


@dataclass(frozen=True)
class Side:
    """One side of a comparison: its name and its affinities, target -> column -> value (every order)."""

    name: str
    rows: dict[str, dict[str, float]]
    folder: Path | None = None  # None for the shipped published results

    def first_order(self, target: str) -> dict[str, float]:
        """The single-source columns of `target` (full and scratch left out)."""
        return {c: v for c, v in self.rows.get(target, {}).items() if c not in artifacts.BASELINES and "+" not in c}


def open_side(spec: str) -> Side:
    """A run folder's affinity.csv, or `published[:1k|16k|all]` from the shipped pickles."""
    if spec == PUBLISHED or spec.startswith(f"{PUBLISHED}:"):
        from taskonomy.taxonomy.published import load_published

        images = spec.partition(":")[2] or "16k"
        return Side(f"{PUBLISHED}:{images}", load_published(images).tables["all_affinities"])
    folder = Path(spec)
    if not folder.is_dir():
        raise TaskonomyError(f"{spec!r} is neither a run folder nor published, published:1k, published:16k or "
                             f"published:all")
    table = artifacts.read_affinity(folder)
    return Side(str(folder), {t: table.row(t) for t in table.targets}, folder)


@dataclass(frozen=True)
class Agreement:
    """One common target: rank agreement of its first-order affinities on both sides."""

    target: str
    sources: int  # first-order sources both sides tried into the target
    spearman: float
    kendall: float
    top1_a: str | None
    top1_b: str | None
    top1_agree: bool
    top3_overlap: float  # |top 3 of a & top 3 of b| / 3


@dataclass(frozen=True)
class BudgetAgreement:
    budget: int
    supervised_a: tuple[str, ...]
    supervised_b: tuple[str, ...]
    jaccard: float


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    targets: list[Agreement]
    budgets: list[BudgetAgreement]
    tree_tasks: list[str]
    trees: tuple[np.ndarray, np.ndarray]  # scipy linkage matrices of a and b over tree_tasks
    tree_correlation: float  # Pearson correlation of the two trees' cophenetic distances

    @property
    def mean_spearman(self) -> float:
        return mean_spearman(self.targets)

    def summary(self) -> dict[str, Any]:
        """The JSON summary: means, per-budget sets and overlaps, the trees' agreement."""
        return {"a": self.a, "b": self.b, "targets": len(self.targets), "mean_spearman": _rounded(self.mean_spearman),
                "mean_kendall": _rounded(_nanmean([t.kendall for t in self.targets])),
                "top1_agreement": _rounded(_nanmean([float(t.top1_agree) for t in self.targets])),
                "mean_top3_overlap": _rounded(_nanmean([t.top3_overlap for t in self.targets])),
                "budgets": [{**asdict(b), "supervised_a": list(b.supervised_a), "supervised_b": list(b.supervised_b)}
                            for b in self.budgets],
                "tree_tasks": self.tree_tasks, "tree_correlation": _rounded(self.tree_correlation)}


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def mean_spearman(rows: Sequence[Agreement]) -> float:
    """The mean per-target Spearman of `agreement`'s rows (a target with too few sources left out)."""
    return _nanmean([r.spearman for r in rows])


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def _top(values: dict[str, float], k: int) -> list[str]:
    return [s for s, _ in sorted(values.items(), key=lambda item: (-item[1], item[0]))[:k]]


def agreement(a: Side, b: Side) -> list[Agreement]:
    """Per common target (in a's order): rank correlations and top-k agreement over the sources both tried."""
    from scipy import stats

    rows = []
    for target in [t for t in a.rows if t in b.rows]:
        fa, fb = a.first_order(target), b.first_order(target)
        common = [s for s in fa if s in fb]
        x, y = [fa[s] for s in common], [fb[s] for s in common]
        with warnings.catch_warnings():  # fewer than 3 sources or a constant side: NaN, said by the count
            warnings.simplefilter("ignore")
            rho = float(stats.spearmanr(x, y).statistic) if len(common) > 1 else math.nan
            tau = float(stats.kendalltau(x, y).statistic) if len(common) > 1 else math.nan
        sa, sb = {s: fa[s] for s in common}, {s: fb[s] for s in common}
        top_a, top_b = _top(sa, 1), _top(sb, 1)
        k = min(3, len(common))
        overlap = len(set(_top(sa, 3)) & set(_top(sb, 3))) / k if k else math.nan
        rows.append(Agreement(target, len(common), rho, tau, (top_a or [None])[0], (top_b or [None])[0],
                              bool(top_a) and top_a == top_b, overlap))
    return rows


def common_tasks(a: Side, b: Side) -> tuple[list[str], list[str]]:
    """(sources, targets) both sides have: first-order sources but the controls, and target rows."""
    controls = set(registry.control_names())
    targets = [t for t in a.rows if t in b.rows]

    def sources(side: Side) -> set[str]:
        return {s for t in side.rows for s in side.first_order(t) if s != t} | {
            t for t, row in side.rows.items() if "full" in row}

    found = (sources(a) & sources(b)) - controls
    order = [t.name for t in registry.all_tasks()]
    return sorted(found, key=lambda s: (order.index(s) if s in order else len(order), s)), targets


def first_order_problem(side: Side, sources: Sequence[str], targets: Sequence[str], budget: float):
    """Max order 1 over the common tasks, the hyperedges of `taskonomy solve` (taxonomy.stage.hyperedges)."""
    from taskonomy.taxonomy.bip import Problem, Transfer  # here: the report reads agreement() and solves nothing
    from taskonomy.taxonomy.stage import hyperedges

    edges = hyperedges({target: side.rows[target] for target in targets})
    return Problem(tuple(sources), tuple(targets), tuple(Transfer(s, t, value) for (s, t), (value, _) in edges.items()
                                                         if len(s) == 1 and s[0] in sources), float(budget))


def _supervised(side: Side, sources: list[str], targets: list[str], budget: int) -> tuple[str, ...]:
    from taskonomy.taxonomy.bip import solve

    solution = solve(first_order_problem(side, sources, targets, budget))
    return solution.supervised if solution.status in ("optimal", "feasible") else ()


def similarity_tree(side: Side, tasks: list[str], targets: list[str]) -> np.ndarray:
    """The task-similarity tree: average-linkage clustering of `tasks` by their first-order affinities into
    `targets`, each target's affinities divided by their sum over `tasks` (a task's own cell: the row's mean)."""
    from scipy.cluster.hierarchy import linkage

    matrix = np.full((len(targets), len(tasks)), np.nan)  # (n_targets, n_tasks)
    for i, target in enumerate(targets):
        row = side.first_order(target)
        for j, task in enumerate(tasks):
            if task != target and task in row:
                matrix[i, j] = row[task]
    totals = np.nansum(matrix, axis=1, keepdims=True)
    matrix = np.divide(matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
    means = np.nanmean(np.where(np.isnan(matrix).all(axis=1, keepdims=True), 0.0, matrix), axis=1, keepdims=True)
    matrix = np.where(np.isnan(matrix), means, matrix)
    return linkage(matrix.T, method="average", metric="euclidean")


def compare(a: Side, b: Side, max_budget: int = 5) -> Comparison:
    """Everything `taskonomy compare` reports about two sides."""
    sources, targets = common_tasks(a, b)
    if not targets:
        raise TaskonomyError(f"{a.name} and {b.name} have no target in common")
    budgets = []
    for budget in range(1, min(max_budget, len(sources)) + 1):
        sa, sb = (_supervised(side, sources, targets, budget) for side in (a, b))
        union = set(sa) | set(sb)
        budgets.append(BudgetAgreement(budget, sa, sb, len(set(sa) & set(sb)) / len(union) if union else math.nan))
    tasks, trees, correlation = similarity_trees(a, b)
    return Comparison(a.name, b.name, agreement(a, b), budgets, tasks, trees, correlation)


def similarity_trees(a: Side, b: Side) -> tuple[list[str], tuple[np.ndarray, np.ndarray], float]:
    """Both sides' task-similarity trees over the tasks they share (no BIP): (tasks, the two linkage matrices,
    empty below 3 tasks, and the Pearson correlation of their cophenetic distances, NaN when undefined)."""
    from scipy.cluster.hierarchy import cophenet

    sources, targets = common_tasks(a, b)
    tasks = [s for s in sources if sum(1 for t in targets if t != s) > 0]
    trees = (np.zeros((0, 4)), np.zeros((0, 4)))
    correlation = math.nan
    if len(tasks) >= 3:
        trees = (similarity_tree(a, tasks, targets), similarity_tree(b, tasks, targets))
        da, db = cophenet(trees[0]), cophenet(trees[1])
        if np.std(da) > 0 and np.std(db) > 0:
            correlation = float(np.corrcoef(da, db)[0, 1])
    return tasks, trees, correlation


COLUMNS = ["target", "sources", "spearman", "kendall", "top1_a", "top1_b", "top1_agree", "top3_overlap"]


def default_out(a: Side) -> Path:
    """Where compare writes without --out: A's run folder, or the current folder when A is published."""
    return a.folder if a.folder is not None else Path.cwd()


def run_compare(a_spec: str, b_spec: str, out: str | os.PathLike | None = None,
                max_budget: int = 5) -> tuple[Comparison, list[Path]]:
    """Compare two sides; write compare.csv, compare.json and compare.png to `out` (default: default_out)."""
    from taskonomy.taxonomy.graph import similarity_trees_figure

    a, b = open_side(a_spec), open_side(b_spec)
    result = compare(a, b, max_budget)
    folder = Path(out) if out is not None else default_out(a)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TaskonomyError(f"cannot write {folder}: {err.strerror or err}") from None
    run = RunFolder(folder)
    rows = [[getattr(t, c) for c in COLUMNS] for t in result.targets]
    figure = similarity_trees_figure(result.trees, result.tree_tasks, (a.name, b.name), result.tree_correlation)
    return result, [write_csv(run.compare_csv, COLUMNS, rows, digits=6),
                    write_json(run.compare_json, result.summary()),
                    save_figure(run.compare_figure, figure)]
