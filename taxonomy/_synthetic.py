"""Synthetic stage II / III outputs for tests and benchmarks: per-image losses with task structure, and BIPs.

    from taskonomy.taxonomy._synthetic import synthetic_losses, synthetic_problem
    losses = synthetic_losses(sources, targets, max_order=2, n_test=64, seed=0)   # {target: (names, losses)}
    problem = synthetic_problem(tasks, max_order=3, budget=5, seed=0)            # random beam-search affinities

Tasks get latent positions (clustered by their registry group when known); a transfer's per-image loss
grows with the distance from its nearest source to the target, higher orders help a little, the fully
supervised network is near-perfect and scratch is poor. Beam search as in the paper: first order from every
source, then the k-subsets of the target's top 5 first-order sources. Pure NumPy.
"""

from __future__ import annotations

import zlib
from itertools import combinations

import numpy as np

from taskonomy.taxonomy.bip import Problem, Transfer, transfer_name

__all__ = ["BEAM", "ahp_affinity", "beam_sets", "problem_from_losses", "synthetic_losses", "synthetic_problem"]

BEAM = 5  # the paper's beam: higher orders combine the target's 5 best first-order sources
_CONTROL_GAP = {"random": 3.5, "pixels": 3.0}  # in task-distance units: worse than any task


def beam_sets(first_order: dict[str, float], max_order: int, beam: int = BEAM) -> list[tuple[str, ...]]:
    """Source sets to try for one target: every single source, then k-subsets of the `beam` best (lower = better)."""
    ranked = sorted(first_order, key=lambda s: (first_order[s], s))
    sets = [(s,) for s in ranked]
    top = sorted(ranked[:beam])
    for k in range(2, min(max_order, beam) + 1):
        sets += list(combinations(top, k))
    return sets


def ahp_affinity(losses: np.ndarray) -> np.ndarray:
    """Reference AHP row (DESIGN.md section 6): tournament win rates -> W / W^T -> principal eigenvector, sum 1."""
    wins = (losses[:, None, :] < losses[None, :, :]).mean(axis=2)  # (n_transfers, n_transfers)
    w = np.clip(wins, 0.001, 0.999)
    ratio = w / w.T
    vector = np.full(len(ratio), 1.0 / len(ratio))
    for _ in range(1000):
        new = ratio @ vector
        new /= new.sum()
        if np.abs(new - vector).max() < 1e-12:
            break
        vector = new
    return new


def _positions(names: list[str], seed: int) -> dict[str, np.ndarray]:
    from taskonomy import tasks as registry  # only for the group of known tasks; unknown ones scatter freely

    rng = np.random.default_rng(seed)
    centres = {group: rng.normal(0, 1.0, 3) for group in registry.GROUPS}
    positions = {}
    for name in names:
        try:
            group = registry.get(name).group
        except registry.TaskonomyError:
            group = "control"
        local = np.random.default_rng([seed, zlib.crc32(name.encode())])
        positions[name] = centres[group] + local.normal(0, 0.5, 3)
    return positions


def synthetic_losses(sources: list[str], targets: list[str], *, max_order: int = 2, n_test: int = 64,
                     seed: int = 0, full: bool | list[str] = True) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per target: transfer names (scratch, full where trained, beam-search sets) and losses (n_transfers, n_test)."""
    rng = np.random.default_rng(seed)
    position = _positions(sorted(set(sources) | set(targets)), seed)
    out = {}
    for t in targets:
        difficulty = rng.lognormal(0.0, 0.5, n_test)  # some test images are hard for every transfer

        def gap(group: tuple[str, ...]) -> float:
            nearest = min(_CONTROL_GAP.get(s, float(np.linalg.norm(position[s] - position[t]))) for s in group)  # noqa: B023 (called in this iteration)
            return 0.35 * nearest * 0.85 ** (len(group) - 1)

        candidates = [s for s in sources if s != t]
        first = {s: gap((s,)) for s in candidates}
        has_full = full is True or (isinstance(full, list) and t in full)
        sets = beam_sets(first, max_order)
        names = ["scratch"] + (["full"] if has_full else []) + [transfer_name(g, t) for g in sets]
        gaps = [1.0] + ([0.02] if has_full else []) + [gap(g) for g in sets]
        noise = rng.normal(0.0, 0.35, (len(names), n_test))
        out[t] = (names, difficulty[None, :] * np.exp(np.asarray(gaps)[:, None] + noise))
    return out


def synthetic_problem(tasks: list[str], *, max_order: int, budget: float, seed: int = 0,
                      source_only: tuple[str, ...] = ()) -> Problem:
    """A BIP over `tasks` with random affinities on the beam-search transfer sets up to `max_order`.

    Affinities are drawn for every order up to the beam (rows sum to 1, as AHP's over all transfers tried) and
    then cut at `max_order`, so the same seed gives the same affinities at every max order.
    """
    rng = np.random.default_rng(seed)
    targets = [t for t in tasks if t not in source_only]
    transfers: list[Transfer] = []
    for t in targets:
        first = {s: float(rng.random()) for s in tasks if s != t}
        sets = [(t,)] + beam_sets(first, BEAM)
        weights = rng.gamma(0.5, 1.0, len(sets))
        weights[0] += 2 * weights.max()  # full supervision is usually, not always, the best transfer
        weights /= weights.sum()
        transfers += [Transfer(tuple(sorted(g)), t, float(w)) for g, w in zip(sets, weights) if len(g) <= max_order]
    return Problem(tuple(tasks), tuple(targets), tuple(transfers), budget)


def problem_from_losses(losses: dict[str, tuple[list[str], np.ndarray]], sources: list[str], *, max_order: int,
                        budget: float) -> Problem:
    """The BIP whose affinities are the reference AHP of synthetic losses (as stage III would make them)."""
    transfers = []
    for target, (names, table) in losses.items():
        for name, affinity in zip(names, ahp_affinity(table)):
            if name == "scratch":
                continue
            group = (target,) if name == "full" else tuple(name.split("+"))
            if len(group) <= max_order:
                transfers.append(Transfer(group, target, float(affinity)))
    return Problem(tuple(sources), tuple(losses), tuple(transfers), budget)
