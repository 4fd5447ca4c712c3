"""Brute-force reference for the taxonomy BIP, for tests on small instances (up to ~15 source nodes).

    from taskonomy.taxonomy._brute import brute_force
    objective, supervised, policy = brute_force(problem)

Exact optimum of the same program: the constraints couple targets only through the supervised set, so for
each affordable set of source nodes every target independently takes its best transfer whose sources are all
in the set (constraint I), exactly one each (II), and the set's label cost is within the budget (III).
"""

from __future__ import annotations

from itertools import combinations

from taskonomy.taxonomy.bip import _EPS, Problem, Transfer

__all__ = ["brute_force"]


def brute_force(problem: Problem) -> tuple[float | None, tuple[str, ...], dict[str, Transfer]]:
    """(objective, supervised, policy) of the best policy by enumeration; objective None when infeasible."""
    transfers = problem.usable_transfers()
    nodes = [s for s in problem.sources if any(s in tr.sources for tr in transfers)]
    by_target = {t: [tr for tr in transfers if tr.target == t] for t in problem.targets}
    best: tuple[float | None, tuple[str, ...], dict[str, Transfer]] = (None, (), {})
    for k in range(len(nodes) + 1):
        for chosen in combinations(nodes, k):
            if sum(problem.cost_of(s) for s in chosen) > problem.budget + _EPS:
                continue
            supervised = set(chosen)
            policy: dict[str, Transfer] = {}
            for t, routes in by_target.items():
                reachable = [tr for tr in routes if supervised.issuperset(tr.sources)]
                if not reachable:
                    break
                policy[t] = max(reachable, key=lambda tr: tr.affinity)
            else:
                total = sum(problem.importance_of(t) * tr.affinity for t, tr in policy.items())
                if best[0] is None or total > best[0]:
                    best = (total, chosen, policy)
    return best
