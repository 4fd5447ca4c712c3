"""Taxonomy BIP solve times on the full task dictionary, CBC against HiGHS side by side.

    .venv/bin/python benchmarks/bench_bip.py [--budgets 3 8] [--orders 1 2 3 4] [--repeats 3] [--seed 0]

The 25 non-control tasks of the registry (colorization, inpainting and jigsaw source-only) with the
paper's beam-search transfer sets (first order from every source, then k-subsets of the target's top 5
sources). Two kinds of affinities: "random" (gamma-distributed rows) and "ahp" (the reference AHP of
synthetic per-image losses with task structure, as stage III makes them: many near-ties, harder to prove).
Per max order it prints the variables and rows of the paper's program, the variables kept once dominated
hyperedges are pruned, the median wall time of `solve` (model build + solver) with CBC and with HiGHS and
their ratio, then CBC on the paper's program exactly as written (no pruning, per-transfer constraint I) and
its ratio to the default, and whether every run found the same optimum.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[3, 8])
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--affinities", nargs="+", choices=["random", "ahp"], default=["random", "ahp"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from taskonomy import tasks as registry
    from taskonomy.runtime import cap_threads, cpu_name
    from taskonomy.taxonomy._synthetic import problem_from_losses, synthetic_losses, synthetic_problem

    threads = cap_threads(args.threads)
    tasks = [t.name for t in registry.all_tasks() if t.head != "none"]
    source_only = tuple(t.name for t in registry.all_tasks() if t.head != "none" and not t.is_target)
    targets = [t for t in tasks if t not in source_only]
    try:
        import highspy  # noqa: F401
        solvers = ["cbc", "highs"]
    except ImportError:
        solvers = ["cbc"]
        print("note: highspy is not installed; the HiGHS column is skipped (pip install highspy)")
    print(f"device: CPU {cpu_name()}, {threads} threads")
    print(f"dictionary: {len(tasks)} tasks ({len(source_only)} source-only), median of {args.repeats} runs")
    losses = synthetic_losses(tasks, targets, max_order=5, n_test=256, seed=args.seed) if "ahp" in args.affinities \
        else {}
    for kind in args.affinities:
        for budget in args.budgets:
            print(f"\naffinities {kind}, budget {budget:g}")
            make = (lambda k, b=budget: synthetic_problem(tasks, max_order=k, budget=b, seed=args.seed,
                                                          source_only=source_only)) if kind == "random" else (
                lambda k, b=budget: problem_from_losses(losses, tasks, max_order=k, budget=b))
            _table(make, solvers, args)


def _table(make, solvers: list[str], args: argparse.Namespace) -> None:
    from taskonomy.taxonomy.bip import build_model, solve

    header = " ".join(f"{s + ' s':>8}" for s in solvers) + (f" {'cbc/highs':>9}" if len(solvers) == 2 else "")
    print(f"{'order':>5} {'vars':>6} {'rows':>6} {'kept':>5} {header} {'paper s':>8} {'paper/cbc':>9}  "
          f"objective  status")
    for order in args.orders:
        problem = make(order)
        paper_model, _ = build_model(problem, prune=False, linking="paper")
        kept = build_model(problem)[0].numVariables()
        seconds, solutions = [], []
        for solver in solvers:
            s, solution = _median_seconds(lambda: solve(problem, solver=solver, time_limit=args.time_limit),
                                          args.repeats)
            seconds.append(s)
            solutions.append(solution)
        # the paper's program exactly as written: every hyperedge, constraint (I) per transfer
        paper_s, paper_solution = _median_seconds(
            lambda: solve(problem, solver="cbc", time_limit=args.time_limit, prune=False, linking="paper"),
            args.repeats)
        objectives = {round(sol.objective, 9) for sol in [*solutions, paper_solution]}
        agree = "same" if len(objectives) == 1 else "DIFFERENT " + str(sorted(objectives))
        ratio = f" {seconds[0] / seconds[1]:>9.2f}" if len(solvers) == 2 else ""
        print(f"{order:>5} {paper_model.numVariables():>6} {paper_model.numConstraints():>6} {kept:>5} "
              + " ".join(f"{s:>8.3f}" for s in seconds) + ratio
              + f" {paper_s:>8.3f} {paper_s / seconds[0]:>9.2f}  {solutions[0].objective:.6f} ({agree})  "
              + "/".join(sol.status for sol in solutions))


if __name__ == "__main__":
    main()
