"""How far each transferability estimator agrees with the run's AHP affinities, and with the published ones.

    taskonomy --run-dir runs/default estimate      # then, where the run has affinity.csv:
                                                   # estimate_agreement.csv, .json, .png

Per estimator and target, over the first-order sources both tried (the target itself left out, the controls
random and pixels kept): Spearman and Kendall rank correlation with the AHP first-order affinities, whether
the top source is the same, and the share of the top three both share (taxonomy.compare.agreement, as
`taskonomy compare` measures two runs). Then the taxonomy: the BIP at budgets 1..5, max order 1 (the
estimators score single sources), over the tasks both sides have (controls left out), solved once on AHP's
affinities and once on the estimator's scores normalised per target as AHP's are (rows of positive values
summing to 1: min-max over the target's row, `full` included, then divided by the row's sum; `full` is the
estimator's score of the target's own features); compared by the supervised set and by the share of targets
given the same transfer. A second normalisation, added after the first measurement (and reported beside it,
never instead): AHP itself run on the estimator's ranking, a tournament of one "image" in which each column beats
the columns it outscores (ahp.kernels.affinities), which puts most of a row's weight on its top as AHP's rows do.
The same rank agreement against the published 16k affinities, where the run shares tasks with them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError
from taskonomy.runfolder import RunFolder, save_figure, write_csv, write_json
from taskonomy.taxonomy.compare import Agreement, Side, agreement, common_tasks, first_order_problem, open_side

__all__ = ["AgreementOutputs", "BudgetMatch", "EstimatorAgreement", "estimator_side", "measure", "normalise",
           "prepare_agreement", "readout_reference", "run_agreement", "taxonomy_at", "tournament",
           "write_agreement"]

PUBLISHED = "published:16k"
BUDGETS = 5
COLUMNS = ["estimator", "reference", "target", "sources", "spearman", "kendall", "top1_reference",
           "top1_estimator", "top1_agree", "top3_overlap"]


@dataclass(frozen=True)
class BudgetMatch:
    """The BIP at one budget (max order 1) on AHP's affinities and on the estimator's normalised scores."""

    budget: int
    supervised_ahp: tuple[str, ...]
    supervised_estimator: tuple[str, ...]
    same_set: bool
    jaccard: float
    same_transfer: float  # share of the targets given the same transfer (the same source, or both `full`)


@dataclass(frozen=True)
class EstimatorAgreement:
    """One estimator against AHP (per target, per budget) and against the published affinities (per target)."""

    estimator: str
    ahp: list[Agreement]
    published: list[Agreement]
    budgets: list[BudgetMatch]
    solve_seconds: float
    budgets_tournament: list[BudgetMatch] = field(default_factory=list)  # the BIP on tournament-normalised rows

    def summary(self) -> dict[str, Any]:
        def mean(values) -> float | None:
            kept = [v for v in values if not math.isnan(v)]
            return round(float(np.mean(kept)), 4) if kept else None

        return {"estimator": self.estimator, "targets": len(self.ahp),
                "mean_spearman": mean([r.spearman for r in self.ahp]),
                "mean_kendall": mean([r.kendall for r in self.ahp]),
                "top1_agreement": mean([float(r.top1_agree) for r in self.ahp]),
                "mean_top3_overlap": mean([r.top3_overlap for r in self.ahp]),
                "published_targets": len(self.published),
                "published_mean_spearman": mean([r.spearman for r in self.published]),
                "budgets_same_set": sum(b.same_set for b in self.budgets),
                "budgets": [_listed(b) for b in self.budgets],
                "budgets_same_set_tournament": sum(b.same_set for b in self.budgets_tournament),
                "budgets_tournament": [_listed(b) for b in self.budgets_tournament],
                "solve_seconds": round(self.solve_seconds, 3)}


def _listed(match: BudgetMatch) -> dict[str, Any]:
    return {**asdict(match), "supervised_ahp": list(match.supervised_ahp),
            "supervised_estimator": list(match.supervised_estimator)}


def tournament(row: Mapping[str, float]) -> dict[str, float]:
    """One target's scores as AHP affinities of a one-image tournament: column i beats j where it scores higher
    (ties: neither), W clipped and made reciprocal, its principal eigenvector (sums to 1, same order)."""
    from taskonomy.ahp.kernels import affinities

    if not row:
        return {}
    losses = -np.array(list(row.values()), np.float64)[:, None]  # (columns, 1 image): lower loss = higher score
    return dict(zip(row, affinities([losses]).vectors[0].tolist()))


def normalise(row: Mapping[str, float]) -> dict[str, float]:
    """One target's scores as positive values summing to 1, in the same order: min-max to [0, 1] over the row,
    then divided by the row's sum (a constant row: uniform)."""
    values = np.array(list(row.values()), np.float64)
    if not len(values):
        return {}
    span = values.max() - values.min()
    scaled = (values - values.min()) / span if span > 0 else np.ones_like(values)
    return dict(zip(row, (scaled / scaled.sum()).tolist()))


def estimator_side(table, how=normalise) -> Side:
    """An estimator's table (transfer.estimate.EstimateTable) as a comparison side, rows normalised per target by
    `how` (normalise, or tournament)."""
    return Side(table.estimator, {t: how(table.row(t)) for t in table.targets if table.row(t)})


def taxonomy_at(side: Side, sources: Sequence[str], targets: Sequence[str], budget: float):
    """The BIP's solution at max order 1 over `side`'s rows (taxonomy.stage.hyperedges, as `taskonomy solve`)."""
    from taskonomy.taxonomy.bip import solve

    return solve(first_order_problem(side, sources, targets, budget))


def _budget_matches(ahp: Side, estimator: Side, budgets: int) -> list[BudgetMatch]:
    sources, targets = common_tasks(ahp, estimator)
    targets = [t for t in targets if estimator.rows[t]]
    if not targets:  # an estimator that scored nothing (ridge without a validation part): no taxonomy to compare
        return []
    out = []
    for budget in range(1, min(budgets, len(sources)) + 1):
        a, b = taxonomy_at(ahp, sources, targets, budget), taxonomy_at(estimator, sources, targets, budget)
        union = set(a.supervised) | set(b.supervised)
        same = [t for t in targets if t in a.policy and t in b.policy and a.policy[t].sources == b.policy[t].sources]
        out.append(BudgetMatch(budget, a.supervised, b.supervised, set(a.supervised) == set(b.supervised),
                               len(set(a.supervised) & set(b.supervised)) / len(union) if union else math.nan,
                               len(same) / len(targets) if targets else math.nan))
    return out


def measure(run_dir: str | Path, estimators: Sequence[Any], budgets: int = BUDGETS,
            published: bool = True) -> list[EstimatorAgreement]:
    """Every estimator's agreement with the run's affinity.csv (and the published 16k set); an estimator is a name
    (its table is read from estimates/) or a transfer.estimate.EstimateTable."""
    from taskonomy.transfer.estimate import read_estimates

    ahp = open_side(str(run_dir))
    reference = open_side(PUBLISHED) if published else None
    out = []
    for table in estimators:
        table = read_estimates(run_dir, table) if isinstance(table, str) else table
        name, side = table.estimator, estimator_side(table)
        start = time.perf_counter()
        matches = _budget_matches(ahp, side, budgets)
        seconds = time.perf_counter() - start
        out.append(EstimatorAgreement(name, agreement(ahp, side), agreement(reference, side) if reference else [],
                                      matches, seconds, _budget_matches(ahp, estimator_side(table, tournament),
                                                                        budgets)))
    return out


def figure(results: Sequence[EstimatorAgreement]):
    """Estimators x targets heatmap of the Spearman correlation with AHP, with each estimator's mean."""
    from matplotlib.figure import Figure

    targets = list(dict.fromkeys(r.target for e in results for r in e.ahp))
    grid = np.full((len(results), len(targets) + 1), np.nan)
    for i, e in enumerate(results):
        for r in e.ahp:
            grid[i, targets.index(r.target)] = r.spearman
        values = grid[i, :-1][~np.isnan(grid[i, :-1])]
        grid[i, -1] = values.mean() if len(values) else np.nan
    fig = Figure(figsize=(1.0 + 0.5 * (len(targets) + 1), 1.6 + 0.45 * len(results)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(targets) + 1), [*targets, "mean"], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(results)), [e.estimator for e in results], fontsize=9)
    ax.axvline(len(targets) - 0.5, color="black", linewidth=1)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if abs(value) > 0.6 else "black", fontweight="bold" if j == len(targets) else None)
    ax.set_title("Spearman correlation of each estimator's scores with the run's AHP first-order affinities",
                 fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="Spearman")
    return fig


def readout_reference(run_dir: str | Path, ahp: Side) -> float | None:
    """For scale: the mean per-target Spearman of AHP's first-order affinities against the trained readouts' own
    mean validation losses (stage II's selection signal, lower = better); None where the run has none."""
    import warnings

    from scipy import stats

    from taskonomy import artifacts

    try:
        with warnings.catch_warnings():  # an incomplete target is simply left out here
            warnings.simplefilter("ignore")
            tables = artifacts.read_losses(run_dir, purpose="the readouts' reference").targets
        rhos = []
        for target, table in tables.items():
            first = ahp.first_order(target)
            names = [n for n in table.first_order() if n in first]
            if len(names) > 2:
                rhos.append(stats.spearmanr([-table.validation_mean(n) for n in names],
                                            [first[n] for n in names]).statistic)
    except TaskonomyError:  # no transfers.zarr, or no validation losses (a run made before the validation split)
        return None
    kept = [r for r in rhos if not math.isnan(r)]
    return round(float(np.mean(kept)), 4) if kept else None


@dataclass
class AgreementOutputs:
    """What run_agreement writes, computed and not yet written."""

    results: list[EstimatorAgreement]
    rows: list[list[Any]]
    doc: dict[str, Any]
    figure: Any


def prepare_agreement(run_dir: str | Path, estimators: Sequence[Any], timings: Mapping[str, Any] | None = None,
                      budgets: int = BUDGETS) -> AgreementOutputs:
    """measure(), with the rows of estimate_agreement.csv, the JSON document and the heatmap; nothing written."""
    run = RunFolder(run_dir)
    if not run.affinity.is_file():
        raise TaskonomyError(f"{run.affinity} does not exist: the agreement needs the AHP affinities "
                             f"(`taskonomy ahp`)")
    results = measure(run_dir, estimators, budgets)
    rows = [[e.estimator, reference, r.target, r.sources, r.spearman, r.kendall, r.top1_a, r.top1_b, r.top1_agree,
             r.top3_overlap] for e in results for reference, found in (("ahp", e.ahp), (PUBLISHED, e.published))
            for r in found]
    ahp_published = agreement(open_side(PUBLISHED), open_side(str(run_dir)))
    kept = [r.spearman for r in ahp_published if not math.isnan(r.spearman)]
    doc = {"estimators": [e.summary() for e in results], "budgets": budgets, "max_order": 1,
           "published": PUBLISHED,
           "ahp_vs_published_mean_spearman": round(float(np.mean(kept)), 4) if kept else None,
           "readouts_validation_mean_spearman": readout_reference(run_dir, open_side(str(run_dir))),
           "seconds": dict(timings.get("estimators", {})) if timings else {},
           "normalisation": "per target: min-max over the row (full included), divided by the row's sum",
           "normalisation_tournament": "per target: AHP of a one-image tournament on the scores (added after the "
                                       "first measurement, reported beside it)"}
    return AgreementOutputs(results, rows, doc, figure(results))


def write_agreement(run_dir: str | Path, outputs: AgreementOutputs) -> list[Path]:
    """estimate_agreement.csv (per estimator, reference and target), .json (summaries and the taxonomies per
    budget) and .png (the heatmap)."""
    run = RunFolder(run_dir)
    return [write_csv(run.estimate_agreement_csv, COLUMNS, outputs.rows, digits=6),
            write_json(run.estimate_agreement_json, outputs.doc),
            save_figure(run.estimate_agreement_figure, outputs.figure)]


def run_agreement(run_dir: str | Path, estimators: Sequence[Any], timings: Mapping[str, Any] | None = None,
                  budgets: int = BUDGETS) -> tuple[list[EstimatorAgreement], list[Path]]:
    """prepare_agreement, then write_agreement."""
    outputs = prepare_agreement(run_dir, estimators, timings, budgets)
    return outputs.results, write_agreement(run_dir, outputs)
