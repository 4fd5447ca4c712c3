"""The taxonomy BIP against brute-force enumeration, and its handling of roles, budgets and importance."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from taskonomy import TaskonomyError
from taskonomy.taxonomy._brute import brute_force
from taskonomy.taxonomy.bip import (Problem, Transfer, build_model, explain_infeasible, feasibility_errors,
                                    prune_dominated, solve)

ROLES = ("both", "source", "target")


def random_problem(rng: np.random.Generator) -> Problem:
    """Up to 6 tasks of random roles, transfers of order 1 and 2, random importance, cost and budget."""
    n = int(rng.integers(2, 7))
    names = [f"t{i}" for i in range(n)]
    roles = list(rng.choice(ROLES, size=n, p=[0.6, 0.2, 0.2]))
    roles[0] = "both"  # at least one source and one target
    sources = [t for t, r in zip(names, roles) if r != "target"]
    targets = [t for t, r in zip(names, roles) if r != "source"]
    coarse = rng.random() < 0.3  # coarse affinities make ties, and so several optima
    affinity = (lambda: round(float(rng.random()), 1)) if coarse else (lambda: float(rng.random()))
    transfers = []
    for t in targets:
        if t in sources and rng.random() < 0.9:
            transfers.append(((t,), t, affinity()))
        others = [s for s in names if s != t]  # may include target-only tasks: those edges must be dropped
        for k in (1, 2):
            transfers += [(c, t, affinity()) for c in combinations(others, k) if rng.random() < 0.6]
    importance = {t: float(rng.choice([0.0, 0.5, 1.0, 2.0, 3.0])) for t in targets if rng.random() < 0.5}
    cost = {s: float(rng.choice([0.0, 0.5, 1.0, 2.0])) for s in sources if rng.random() < 0.5}
    budget = float(rng.choice([0, 0.5, 1, 1.5, 2, 3, 4, 6]))
    return Problem(tuple(sources), tuple(targets), tuple(transfers), budget, importance, cost)


@pytest.mark.parametrize("solver,prune,linking,n_instances", [
    ("cbc", True, "target", 200), ("highs", True, "target", 200), ("cbc", False, "paper", 200),
    ("highs", False, "paper", 100)])
def test_bip_matches_brute_force_on_random_instances(solver, prune, linking, n_instances):
    rng = np.random.default_rng(20180618)
    statuses = {"optimal": 0, "infeasible": 0}
    for i in range(n_instances):
        problem = random_problem(rng)
        best, _, _ = brute_force(problem)
        solution = solve(problem, solver=solver, time_limit=20, prune=prune, linking=linking)
        assert solution.status in statuses, (i, solution.status)
        statuses[solution.status] += 1
        if best is None:
            assert solution.status == "infeasible", (i, problem)
            continue
        assert solution.status == "optimal", (i, problem)
        assert solution.objective == pytest.approx(best, abs=1e-6), (i, problem)
        assert feasibility_errors(problem, solution.supervised, solution.policy) == [], i
    # the generator must exercise both outcomes, or the test proves little
    assert statuses["optimal"] > n_instances // 4 and statuses["infeasible"] > n_instances // 20, statuses


def _chain() -> Problem:
    """a is source-only, b both, c target-only: c can be reached from a, b or both."""
    transfers = [(("b",), "b", 0.5), (("a",), "b", 0.3), (("a",), "c", 0.2), (("b",), "c", 0.4),
                 (("a", "b"), "c", 0.6), (("c",), "b", 0.9)]
    return Problem(("a", "b"), ("b", "c"), tuple(transfers), budget=2)


def test_roles_source_only_and_target_only():
    problem = _chain()
    assert problem.tasks == ("a", "b", "c")
    # (c,) -> b starts at a target-only task, which can never be supervised: it is not a hyperedge of the program
    assert all("c" not in tr.sources for tr in problem.usable_transfers())
    solution = solve(problem)
    assert solution.status == "optimal" and solution.supervised == ("a", "b")
    assert solution.policy["b"].name == "full" and solution.policy["c"].name == "a+b"
    assert "a" not in solution.policy  # a source-only task needs no transfer in
    assert solution.objective == pytest.approx(1.1)


def test_budget_trades_order_for_labels():
    solution = solve(Problem(("a", "b"), ("b", "c"), _chain().transfers, budget=1))
    # one label: supervise b (b full 0.5 + b -> c 0.4 = 0.9) beats a (a -> b 0.3 + a -> c 0.2)
    assert solution.supervised == ("b",) and solution.objective == pytest.approx(0.9)
    assert solution.label_cost == 1


def test_importance_weights_change_the_choice():
    # Two targets competing for one label: x prefers source p, y prefers source q.
    transfers = [(("p",), "x", 0.9), (("q",), "x", 0.1), (("p",), "y", 0.1), (("q",), "y", 0.5)]
    base = Problem(("p", "q"), ("x", "y"), tuple(transfers), budget=1)
    assert solve(base).supervised == ("p",)
    weighted = Problem(("p", "q"), ("x", "y"), tuple(transfers), budget=1, importance={"y": 3.0})
    solution = solve(weighted)
    assert solution.supervised == ("q",)
    assert solution.objective == pytest.approx(0.1 + 3 * 0.5)


def test_infeasible_budget_is_detected_and_explained():
    problem = Problem(("a", "b"), ("b", "c"), _chain().transfers, budget=0.5)
    assert solve(problem).status == "infeasible"
    assert "target b needs labels costing at least 1" in explain_infeasible(problem)
    # each target alone fits in 1 label, but together they need 2
    split = Problem(("p", "q"), ("x", "y"), ((("p",), "x", 0.5), (("q",), "y", 0.5)), budget=1.5)
    assert solve(split, solver="highs").status == "infeasible"
    assert "together need labels costing at least 2" in explain_infeasible(split)
    lonely = Problem(("p",), ("x", "z"), ((("p",), "x", 0.5),), budget=3)
    assert solve(lonely).status == "infeasible"
    assert explain_infeasible(lonely).startswith("target z has no transfer")


def test_free_sources_fit_a_zero_budget():
    problem = Problem(("random", "a"), ("a",), ((("random",), "a", 0.2), (("a",), "a", 0.8)), budget=0,
                      cost={"random": 0})
    solution = solve(problem)
    assert solution.supervised == ("random",) and solution.policy["a"].name == "random"


def test_dominated_hyperedges_are_pruned():
    transfers = [Transfer(("a",), "t", 0.4), Transfer(("b",), "t", 0.2), Transfer(("a", "b"), "t", 0.3),
                 Transfer(("b", "c"), "t", 0.5), Transfer(("a", "b", "c"), "t", 0.5), Transfer(("c",), "u", 0.1)]
    kept = {tr.name for tr in prune_dominated(transfers)}
    # a+b loses to a alone; a+b+c only ties b+c, which needs fewer labels
    assert kept == {"a", "b", "b+c", "c"}


def test_model_has_the_papers_rows():
    model, var = build_model(_chain(), prune=False, linking="paper")
    assert len(var.x) == 5 and set(var.y) == {"a", "b"}
    names = {c.name for c in model.constraints()}
    assert names == {f"I_{i}" for i in range(5)} | {"II_0", "II_1", "III"}
    # (I) for the order-2 transfer a+b -> c: 2 x - y_a - y_b <= 0
    row = model.get_constraint_by_name(f"I_{[tr.name for tr in var.transfers].index('a+b')}")
    assert sorted(row.values()) == [-1, -1, 2]
    # per target and source instead: (b, b), (b, a), (c, a), (c, b); e.g. x_{a->c} + x_{a+b->c} - y_a <= 0
    tight, var = build_model(_chain(), prune=False)
    rows = [c for c in tight.constraints() if c.name.startswith("I_")]
    assert len(rows) == 4 and sorted(len(c) for c in rows) == [2, 2, 3, 3]


@pytest.mark.parametrize("bad,message", [
    (dict(budget=-1), "the budget must be a finite number >= 0, got -1"),
    (dict(importance={"b": -2}), "importance of 'b'"),
    (dict(cost={"a": float("nan")}), "cost of 'a'"),
    (dict(transfers=((("a",), "b", 0.3), (("a",), "b", 0.4))), "listed twice"),
])
def test_bad_problems_are_refused(bad, message):
    fields = dict(sources=("a", "b"), targets=("b",), transfers=((("a",), "b", 0.3),), budget=1) | bad
    with pytest.raises(TaskonomyError, match=message):
        Problem(**fields)


def test_unknown_solver_is_one_line():
    with pytest.raises(TaskonomyError, match="unknown solver 'glpk'"):
        solve(_chain(), solver="glpk")


@pytest.mark.parametrize("sol_status,expected", [
    ("LpSolutionIntegerFeasible", "feasible"), ("LpSolutionNoSolutionFound", "unsolved")])
def test_time_limit_statuses(monkeypatch, sol_status, expected):
    """A solver stopped by its time limit: an incumbent is "feasible" (not proved), none is "unsolved"."""
    import pulp

    real = pulp.LpProblem.solve

    def stopped(self, solver=None, **kwargs):
        status = real(self, solver, **kwargs)
        self.sol_status = getattr(pulp, sol_status)
        return status

    monkeypatch.setattr(pulp.LpProblem, "solve", stopped)
    solution = solve(_chain(), time_limit=1)
    assert solution.status == expected
    assert (solution.objective is not None) == (expected == "feasible")
