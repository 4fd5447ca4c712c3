"""The taxonomy as a binary integer program (Zamir et al., CVPR 2018, section 3.4): pure, arrays and lists in.

    from taskonomy.taxonomy.bip import Problem, solve
    solution = solve(Problem(sources=..., targets=..., transfers=[(("normal",), "depth_zbuffer", 0.31), ...],
                             budget=3), solver="cbc", time_limit=60)

One binary variable per transfer (hyperedge `({s_1..s_m}, t)`; `({t}, t)` = supervise t fully) and one per
source node. Maximise `sum_i r_target(i) * p_i * x_i` subject to
(I)   `|sources(i)| x_i - sum_{k in sources(i)} y_k <= 0`  (a chosen transfer implies its source nodes; by
      default written in the equivalent, tighter per-target form, see `build_model`),
(II)  `sum_{i: target(i) = t} x_i = 1` for every target t (exactly one incoming transfer),
(III) `sum_k cost_k y_k <= budget` (label cost of the supervised nodes).
Source-only tasks need no incoming transfer; target-only tasks are never supervised (they are not in
`sources`). Imports PuLP and NumPy only.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal, NamedTuple

import pulp

from taskonomy import TaskonomyError

__all__ = [
    "SOLVERS", "Problem", "Solution", "Transfer", "Variables", "all_for_one", "build_model", "explain_infeasible",
    "feasibility_errors", "min_label_cost", "prune_dominated", "solve", "transfer_name",
]

SOLVERS = ("cbc", "highs")
Status = Literal["optimal", "feasible", "infeasible", "unsolved"]
Linking = Literal["target", "paper"]
_EPS = 1e-9  # slack on the budget so that costs summing to it exactly in floating point still fit


def transfer_name(sources: Iterable[str], target: str) -> str:
    """A transfer's name in affinity.csv and transfers.zarr: "full" for ({t}, t), else sorted sources joined by "+"."""
    sources = tuple(sorted(sources))
    return "full" if sources == (target,) else "+".join(sources)


class Transfer(NamedTuple):
    """A hyperedge from a set of source tasks (sorted) to a target, with its AHP affinity."""

    sources: tuple[str, ...]
    target: str
    affinity: float

    @property
    def name(self) -> str:
        return transfer_name(self.sources, self.target)

    @property
    def order(self) -> int:
        return len(self.sources)


@dataclass(frozen=True)
class Problem:
    """One BIP instance. `sources`: tasks that may be supervised; `targets`: tasks that need one transfer in.

    Importance (per target) and label cost (per source) default to 1 for names they leave out. Transfers whose
    target is not a target or whose sources are not all in `sources` are dropped (as the original solver drops
    edges into source-only tasks and from unusable ones).
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    transfers: tuple[Transfer, ...]
    budget: float
    importance: Mapping[str, float] = field(default_factory=dict)
    cost: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "transfers", tuple(
            Transfer(tuple(sorted(s)), t, float(a)) for s, t, a in self.transfers))
        for names, what in ((self.sources, "source"), (self.targets, "target")):
            if len(set(names)) != len(names):
                raise TaskonomyError(f"a {what} is listed twice in {list(names)}")
        if not _non_negative(self.budget):
            raise TaskonomyError(f"the budget must be a finite number >= 0, got {self.budget!r}")
        _check_non_negative("importance", self.importance)
        _check_non_negative("cost", self.cost)
        seen: set[tuple[tuple[str, ...], str]] = set()
        for tr in self.transfers:
            if not tr.sources or not math.isfinite(tr.affinity):
                raise TaskonomyError(f"transfer {tr.name} -> {tr.target}: needs sources and a finite affinity")
            if (tr.sources, tr.target) in seen:
                raise TaskonomyError(f"transfer {tr.name} -> {tr.target} is listed twice")
            seen.add((tr.sources, tr.target))

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every node: the sources, then the targets that are not sources."""
        return self.sources + tuple(t for t in self.targets if t not in self.sources)

    def importance_of(self, target: str) -> float:
        return float(self.importance.get(target, 1.0))

    def cost_of(self, source: str) -> float:
        return float(self.cost.get(source, 1.0))

    def usable_transfers(self) -> list[Transfer]:
        """The hyperedges of the program: into a target, from sources that may all be supervised."""
        sources, targets = set(self.sources), set(self.targets)
        return [tr for tr in self.transfers if tr.target in targets and sources.issuperset(tr.sources)]


def _non_negative(value: object) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0


def _check_non_negative(what: str, values: Mapping[str, float]) -> None:
    for name, value in values.items():
        if not _non_negative(value):
            raise TaskonomyError(f"{what} of {name!r} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Solution:
    """The chosen policy: supervised source nodes and one transfer per target (empty unless a solution exists)."""

    status: Status
    objective: float | None
    supervised: tuple[str, ...]
    policy: dict[str, Transfer]
    label_cost: float
    solver: str
    seconds: float


@dataclass
class Variables:
    """The model's variables: x per usable transfer (same order), y per source node that a transfer uses."""

    transfers: list[Transfer]
    x: list[pulp.LpVariable]
    y: dict[str, pulp.LpVariable]


def prune_dominated(transfers: Iterable[Transfer]) -> list[Transfer]:
    """Drop each transfer that a transfer into the same target from a proper subset of its sources matches or beats.

    Exact: any policy using a dropped transfer can switch to its dominator, which needs no extra node and loses
    no affinity. On the full dictionary it removes 20-40% of the variables at orders 3-4; with the per-target
    constraint (I) that saves CBC up to 1.4x, with the paper's per-transfer rows 2-3x.
    """
    transfers = list(transfers)
    best = {(tr.sources, tr.target): tr.affinity for tr in transfers}
    kept = []
    for tr in transfers:
        subsets = (c for k in range(1, tr.order) for c in combinations(tr.sources, k))
        if not any(best.get((c, tr.target), -math.inf) >= tr.affinity for c in subsets):
            kept.append(tr)
    return kept


def build_model(problem: Problem, *, objective: Literal["affinity", "cost"] = "affinity", prune: bool = True,
                linking: Linking = "target") -> tuple[pulp.LpProblem, Variables]:
    """The paper's program for `problem` (with `prune`, minus dominated hyperedges: same optimum, fewer variables).

    Constraint (I) is written per transfer as in the paper (linking="paper": `|S_i| x_i - sum_k y_k <= 0`) or,
    by default, per target and source node (linking="target": `sum_{i into t, k in S_i} x_i - y_k <= 0`). Given
    (II) at most one x_i into t is 1, so both admit exactly the same binary solutions; the second is the
    facility-location form, whose LP relaxation is far tighter: on the full dictionary with AHP-like affinities
    the LP bound drops from 24% to 4% above the optimum, and with pruning CBC solves orders 2-4 3-21x faster
    than on the paper's rows (benchmarks/bench_bip.py). objective="cost" instead minimises the label cost
    under (I) and (II) without the budget: the least budget that gives every target a transfer.
    """
    transfers = problem.usable_transfers()
    if prune and objective == "affinity":
        transfers = prune_dominated(transfers)
    nodes = [s for s in problem.sources if any(s in tr.sources for tr in transfers)]
    model = pulp.LpProblem(f"taxonomy_{objective}", pulp.LpMaximize if objective == "affinity" else pulp.LpMinimize)
    x = [model.add_variable(f"x{i}", cat=pulp.LpBinary) for i in range(len(transfers))]
    y = {s: model.add_variable(f"y{k}", cat=pulp.LpBinary) for k, s in enumerate(nodes)}
    label_cost = pulp.lpSum(problem.cost_of(s) * y[s] for s in nodes)
    if objective == "affinity":
        model += pulp.lpSum(problem.importance_of(tr.target) * tr.affinity * xi for tr, xi in zip(transfers, x))
    else:
        model += label_cost
    _link(model, transfers, x, y, linking)
    incoming: dict[str, list[pulp.LpVariable]] = {t: [] for t in problem.targets}
    for tr, xi in zip(transfers, x):
        incoming[tr.target].append(xi)
    for j, t in enumerate(problem.targets):  # (II); a target with no usable transfer makes it 0 == 1
        model += pulp.lpSum(incoming[t]) == 1, f"II_{j}"
    if objective == "affinity":  # (III)
        model += label_cost <= problem.budget + _EPS, "III"
    return model, Variables(transfers, x, y)


def _link(model: pulp.LpProblem, transfers: list[Transfer], x: list[pulp.LpVariable],
          y: dict[str, pulp.LpVariable], linking: Linking) -> None:
    """Constraint (I): a chosen transfer implies its source nodes."""
    if linking == "paper":
        for i, (tr, xi) in enumerate(zip(transfers, x)):
            model += len(tr.sources) * xi - pulp.lpSum(y[s] for s in tr.sources) <= 0, f"I_{i}"
        return
    if linking != "target":
        raise TaskonomyError(f"unknown linking {linking!r}; expected 'target' or 'paper'")
    uses: dict[tuple[str, str], list[pulp.LpVariable]] = {}
    for tr, xi in zip(transfers, x):
        for s in tr.sources:
            uses.setdefault((tr.target, s), []).append(xi)
    for j, ((_, s), xs) in enumerate(uses.items()):
        model += pulp.lpSum(xs) - y[s] <= 0, f"I_{j}"


def _solver(name: str, time_limit: float) -> pulp.LpSolver:
    # Exact optima: no relative gap, an absolute gap far below any affinity difference that matters.
    if name == "cbc":
        with warnings.catch_warnings():
            # PuLP 3.3 marks its bundled CBC deprecated for 4.0; pyproject pins pulp<4, where it is the default.
            warnings.simplefilter("ignore", DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit, gapRel=0.0, gapAbs=1e-10)
    if name == "highs":
        solver = pulp.HiGHS(msg=False, timeLimit=time_limit, gapRel=0.0, gapAbs=1e-10)
        if not solver.available():
            raise TaskonomyError("solver 'highs' needs the highspy package: pip install highspy")
        _silence_highs_banner()
        return solver
    raise TaskonomyError(f"unknown solver {name!r}; expected one of {', '.join(SOLVERS)}")


@functools.cache
def _silence_highs_banner() -> None:
    # HiGHS prints its banner from C++ to file descriptor 1 when the first Highs object of a process is made,
    # before PuLP can switch its output off; make that first object with fd 1 pointed at /dev/null.
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _run(model: pulp.LpProblem, solver: str, time_limit: float) -> Status:
    backend = _solver(solver, time_limit)
    if not model.numConstraints() or not model.variables():
        return "unsolved"
    try:
        model.solve(backend)
    except pulp.PulpSolverError as err:
        raise TaskonomyError(f"solver {solver} failed: {str(err).splitlines()[0]}") from None
    # sol_status tells a proven optimum from an incumbent left by the time limit.
    return {pulp.LpSolutionOptimal: "optimal", pulp.LpSolutionIntegerFeasible: "feasible",
            pulp.LpSolutionInfeasible: "infeasible", pulp.LpSolutionUnbounded: "infeasible"}.get(
        model.sol_status, "infeasible" if model.status == pulp.LpStatusInfeasible else "unsolved")


def solve(problem: Problem, solver: str = "cbc", time_limit: float = 60.0, *, prune: bool = True,
          linking: Linking = "target") -> Solution:
    """Solve the BIP; status "optimal", "feasible" (time limit hit, not proved), "infeasible" or "unsolved"."""
    start = time.perf_counter()
    if not problem.targets:
        raise TaskonomyError("the taxonomy needs at least one target")
    model, var = build_model(problem, prune=prune, linking=linking)
    if any(not any(tr.target == t for tr in var.transfers) for t in problem.targets):
        status: Status = "infeasible"  # a target with no usable transfer; no need to ask a solver
    else:
        status = _run(model, solver, time_limit)
    if status not in ("optimal", "feasible"):
        return Solution(status, None, (), {}, 0.0, solver, time.perf_counter() - start)
    chosen = [tr for tr, xi in zip(var.transfers, var.x) if (xi.value() or 0.0) > 0.5]
    policy = {tr.target: tr for tr in chosen}
    used = {s for tr in chosen for s in tr.sources}
    # Report only the nodes the policy uses: a node the solver switched on for nothing adds no affinity.
    supervised = tuple(s for s in problem.sources if s in used)
    objective = sum(problem.importance_of(t) * tr.affinity for t, tr in policy.items())
    label_cost = sum(problem.cost_of(s) for s in supervised)
    solution = Solution(status, objective, supervised, policy, label_cost, solver, time.perf_counter() - start)
    errors = feasibility_errors(problem, solution.supervised, solution.policy)
    if len(chosen) != len(policy) or errors:
        raise TaskonomyError(f"solver {solver} returned an invalid policy: {(errors or ['two transfers in'])[0]}")
    return solution


def feasibility_errors(problem: Problem, supervised: Iterable[str], policy: Mapping[str, Transfer]) -> list[str]:
    """Why a policy breaks the program's constraints (empty when it is feasible)."""
    supervised = set(supervised)
    usable = set(problem.usable_transfers())
    errors = [f"target {t} has no transfer in" for t in problem.targets if t not in policy]
    for t, tr in policy.items():
        if tr not in usable or tr.target != t:
            errors.append(f"{tr.name} -> {t} is not a usable transfer")
        elif not supervised.issuperset(tr.sources):
            errors.append(f"{tr.name} -> {t} uses a source that is not supervised")
    cost = sum(problem.cost_of(s) for s in supervised)
    if cost > problem.budget + _EPS:
        errors.append(f"label cost {cost:g} exceeds the budget {problem.budget:g}")
    return errors


def min_label_cost(problem: Problem, solver: str = "cbc", time_limit: float = 60.0) -> float | None:
    """The least label cost that gives every target a transfer (None when no budget does)."""
    model, var = build_model(problem, objective="cost")
    if any(not any(tr.target == t for tr in var.transfers) for t in problem.targets):
        return None
    if _run(model, solver, time_limit) not in ("optimal", "feasible"):
        return None
    return float(sum(problem.cost_of(s) for s, v in var.y.items() if (v.value() or 0.0) > 0.5))


def explain_infeasible(problem: Problem, solver: str = "cbc", time_limit: float = 60.0) -> str:
    """One line saying why no policy fits: a target without a route, one too dear alone, or all of them together."""
    usable = problem.usable_transfers()
    for t in problem.targets:
        routes = [tr for tr in usable if tr.target == t]
        if not routes:
            return f"target {t} has no transfer from the allowed sources (is it target-only with no transfers?)"
        cheapest = min(routes, key=lambda tr: sum(problem.cost_of(s) for s in tr.sources))
        need = sum(problem.cost_of(s) for s in cheapest.sources)
        if need > problem.budget + _EPS:
            return (f"budget {problem.budget:g} is too small: target {t} needs labels costing at least {need:g} "
                    f"(cheapest route: {cheapest.name})")
    need = min_label_cost(problem, solver, time_limit)
    if need is None:
        return f"no policy gives every target a transfer within the time limit of {time_limit:g} s"
    return f"budget {problem.budget:g} is too small: the targets together need labels costing at least {need:g}"


def all_for_one(transfers: Iterable[Transfer], target: str, supervised: Iterable[str],
                max_order: int) -> Transfer | None:
    """The paper's all-for-one policy (Figure 10): the best transfer into `target` of order <= `max_order` whose
    sources are all supervised; None when there is none. ({t}, t) counts only if t itself is supervised."""
    supervised = set(supervised)
    routes = [tr for tr in transfers
              if tr.target == target and tr.order <= max_order and supervised.issuperset(tr.sources)]
    # ties go to the lower order, then the name, so that the answer does not depend on the file's column order
    return max(routes, key=lambda tr: (tr.affinity, -tr.order, tr.name), default=None)
