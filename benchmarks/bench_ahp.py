"""Stage III kernels, Numba against the NumPy reference, measured side by side in one process.

    .venv/bin/python benchmarks/bench_ahp.py [--quick] [--threads 2]

Prints, with the device: win-rate time for n transfers x m test images (Numba, its float64 path, and the
vectorised NumPy reference) and their ratio; the measured scaling exponents in n and m; the first-call
compile time against the cached load (each in a fresh process); batched power iteration against a loop
of numpy.linalg.eig; and one target's bootstrap. Losses are float32 values stored as float64, as stage II
writes them; "f64 path" perturbs them off the float32 grid to time the general path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from _timing import best_of

_FIRST_CALL = """
import time, numpy as np
from taskonomy.ahp import kernels
losses = np.random.default_rng(0).random((20, 300))
start = time.perf_counter()
kernels.win_rates(losses.astype(np.float32).astype(np.float64))  # float32 path
kernels.affinities(losses)  # float64 path, power iteration
kernels.bootstrap(losses, 4)
print(time.perf_counter() - start)
"""





def _losses(n: int, m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0.5, 2.0, (n, 1))
    return (rng.gamma(2.0, 1.0, (n, m)) * quality).astype(np.float32).astype(np.float64)


def _slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def bench_compile() -> None:
    """First call compiling into an empty cache, then the same calls loading it, in fresh processes."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [float(subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True, capture_output=True,
                                     text=True).stdout) for _ in range(2)]
    print(f"first calls (win rates f32 + f64, power iteration, bootstrap), fresh process: compiling {runs[0]:.2f} s, "
          f"from the Numba cache {runs[1]:.3f} s ({runs[0] / runs[1]:.0f}x)")


def bench_win_rates(kernels, reference, ns: list[int], ms: list[int], repeats: int) -> dict:
    print(f"\nwin rates W (n transfers x m images); best of {repeats} (NumPy: of 1-{repeats})")
    print(f"{'n':>5} {'m':>7} {'numba ms':>10} {'f64 path ms':>12} {'numpy ms':>10} {'ratio':>7} {'pairs/s':>9}")
    table = {}
    for n in ns:
        for m in ms:
            losses = _losses(n, m)
            off_grid = losses * (1 + 1e-12)  # no longer float32 values: the general float64 path
            kernels.win_rates(losses[:2, :10])
            t_numba = best_of(lambda: kernels.win_rates(losses), repeats)
            t_f64 = best_of(lambda: kernels.win_rates(off_grid), repeats)
            reps = max(1, min(repeats, int(2e8 // (n * n * m))))  # the slow ones once
            t_numpy = best_of(lambda: reference.win_counts(losses), reps)
            table[n, m] = t_numba
            pairs = n * (n - 1) / 2 * m
            print(f"{n:>5} {m:>7} {t_numba * 1e3:>10.2f} {t_f64 * 1e3:>12.2f} {t_numpy * 1e3:>10.1f} "
                  f"{t_numpy / t_numba:>6.1f}x {pairs / t_numba:>9.2e}")
    return table


def bench_goal(kernels, reference, n: int, m: int, repeats: int) -> None:
    """The issue's goal case, also against the plain NumPy form (summing the booleans), for context."""
    losses = _losses(n, m)
    t_numba = best_of(lambda: kernels.win_rates(losses), repeats)
    t_packed = best_of(lambda: reference.win_counts(losses), repeats)
    t_plain = best_of(lambda: [(row < losses).sum(axis=1) for row in losses], repeats)
    print(f"\ngoal case n = {n}, m = {m}: Numba {t_numba * 1e3:.2f} ms; NumPy reference (packbits + popcount) "
          f"{t_packed * 1e3:.1f} ms = {t_packed / t_numba:.1f}x; NumPy summing booleans {t_plain * 1e3:.1f} ms = "
          f"{t_plain / t_numba:.1f}x")


def bench_scaling(table: dict, ns: list[int], ms: list[int]) -> None:
    m_mid, n_mid = ms[len(ms) // 2], ns[len(ns) // 2]
    print(f"\nscaling of the Numba win rates: time ~ n^{_slope(ns, [table[n, m_mid] for n in ns]):.2f} "
          f"(m = {m_mid}), ~ m^{_slope(ms, [table[n_mid, m] for m in ms]):.2f} (n = {n_mid}); "
          f"the work is n^2 m")


def bench_power(kernels, reference, ns: list[int], n_targets: int, repeats: int) -> None:
    print(f"\nAHP eigenvectors for {n_targets} targets: batched power iteration against a numpy.linalg.eig loop")
    print(f"{'n':>5} {'numba ms':>10} {'eig loop ms':>12} {'ratio':>7} {'iterations':>11} {'max |diff|':>11}")
    for n in ns:
        wins = [kernels.win_rates(_losses(n, 300, seed=t)) for t in range(n_targets)]
        kernels.ahp_eigenvectors(wins[:1])
        t_numba = best_of(lambda: kernels.ahp_eigenvectors(wins), repeats)
        t_eig = best_of(lambda: [reference.eig_eigenvectors(w) for w in wins], max(1, repeats // 3))
        result = kernels.ahp_eigenvectors(wins)
        diff = max(np.abs(v - reference.eig_eigenvectors(w)[0]).max() for v, w in zip(result.vectors, wins))
        print(f"{n:>5} {t_numba * 1e3:>10.2f} {t_eig * 1e3:>12.1f} {t_eig / t_numba:>6.1f}x "
              f"{int(result.iterations.max()):>11} {diff:>11.1e}")


def bench_bootstrap(kernels, n: int, m: int, resamples: int) -> None:
    losses = _losses(n, m)
    kernels.bootstrap(losses, 2)
    seconds = best_of(lambda: kernels.bootstrap(losses, resamples), 1)
    print(f"\nbootstrap of one target: {resamples} resamples, n = {n}, m = {m}: {seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from taskonomy.runtime import cap_threads, cpu_name

    threads = cap_threads(args.threads)
    from taskonomy.ahp import _reference as reference
    from taskonomy.ahp import kernels

    print(f"device: CPU: {cpu_name()}, {threads} threads (Numba and BLAS)")
    ns, ms = ([10, 25, 50], [300, 1000, 3000]) if args.quick else ([25, 100, 400], [1000, 10_000, 100_000])
    bench_compile()
    table = bench_win_rates(kernels, reference, ns, ms, 2 if args.quick else args.repeats)
    bench_goal(kernels, reference, 50 if args.quick else 100, 3000 if args.quick else 10_000, args.repeats)
    bench_scaling(table, ns, ms)
    bench_power(kernels, reference, ns, 5 if args.quick else 25, 2 if args.quick else args.repeats)
    bench_bootstrap(kernels, *((10, 300, 20) if args.quick else (40, 1000, 200)))


if __name__ == "__main__":
    main()
