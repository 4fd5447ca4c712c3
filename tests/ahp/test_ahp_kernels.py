"""Stage III kernels: Numba against the NumPy reference and numpy.linalg.eig, adversarial cases, properties."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import ROOT
from taskonomy import TaskonomyError
from taskonomy.ahp import _kernels, _reference
from taskonomy.ahp import kernels as ahp

BACKENDS = ["numba", "numpy"]


def brute_win_rates(losses: np.ndarray) -> np.ndarray:
    """The definition, image by image: the oracle of the oracle."""
    n, m = losses.shape
    win = np.zeros((n, n))
    for k in range(m):
        win += losses[:, k][:, None] < losses[:, k][None, :]
    return win / m


def random_losses(n: int, m: int, seed: int = 12345, float32: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    losses = rng.gamma(2.0, 1.0, (n, m)) * rng.uniform(0.5, 2.0, (n, 1))  # transfers of different quality
    return losses.astype(np.float32).astype(np.float64) if float32 else losses


# small integers make ties common; the transforms below are exactly strictly increasing on them
loss_matrices = hnp.arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 40)),
                           elements=st.integers(0, 6).map(float))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m,float32", [(1, 7, False), (2, 3, True), (9, 50, True), (9, 50, False),
                                         (33, 5000, True), (12, 4500, False)])
def test_win_rates_match_the_definition(backend, n, m, float32):
    losses = random_losses(n, m, seed=n * m, float32=float32)
    losses[:, : m // 3] = np.round(losses[:, : m // 3])  # ties on a third of the images
    np.testing.assert_array_equal(ahp.win_rates(losses, backend=backend), brute_win_rates(losses))


@pytest.mark.parametrize("float32", [True, False])
def test_win_counts_over_many_blocks_and_chunks(float32):
    losses = random_losses(11, 1000, float32=float32)
    losses[:, ::7] = 1.0  # ties
    keys = ahp._keys(losses)
    expected = _reference.win_counts(losses)
    for block, chunk in [(64, 192), (100, 100), (1000, 1000), (4096, 8192)]:
        zero = np.int32(0) if float32 else np.int64(0)
        np.testing.assert_array_equal(_kernels.win_counts(keys, block, chunk, zero), expected)


def test_float32_fast_path_is_taken_only_when_exact():
    exact = random_losses(4, 10, float32=True)
    assert ahp._keys(exact).dtype == np.float32
    inexact = exact.copy()
    inexact[2, 3] = np.nextafter(inexact[2, 3], np.inf)  # one loss between two float32 values
    assert ahp._keys(inexact).dtype == np.float64


@pytest.mark.parametrize("backend", BACKENDS)
def test_affinities_match_numpy_eig(backend):
    losses = [random_losses(n, m, seed=n) for n, m in [(5, 40), (17, 200), (40, 30), (3, 1000)]]
    result = ahp.affinities(losses, backend=backend)
    assert result.converged.all()
    for vector, lam, target in zip(result.vectors, result.lambda_max, losses):
        expected, expected_lam = _reference.eig_eigenvectors(brute_win_rates(target))
        np.testing.assert_allclose(vector, expected, rtol=0, atol=1e-9)
        assert lam == pytest.approx(expected_lam, rel=1e-9)
        assert vector.sum() == pytest.approx(1.0, abs=1e-12) and (vector > 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["all ties", "one better everywhere", "n=1", "n=2", "identical rows",
                                  "total order", "cycle", "two images"])
def test_adversarial_cases_match_eig(backend, case):
    rng = np.random.default_rng(7)
    losses = {
        "all ties": np.ones((6, 20)),
        "one better everywhere": np.vstack([np.zeros((1, 30)), rng.random((7, 30)) + 1]),
        "n=1": rng.random((1, 10)),
        "n=2": rng.random((2, 10)),
        "identical rows": np.vstack([rng.random((4, 25))] * 2),
        "total order": np.arange(15.0)[:, None] * np.ones((1, 8)),
        "cycle": np.stack([np.roll(np.arange(7.0), k) for k in range(70)], axis=1),
        "two images": rng.random((30, 2)),
    }[case]
    result = ahp.affinities(losses, backend=backend)
    vector = result.vectors[0]
    expected, _ = _reference.eig_eigenvectors(brute_win_rates(losses))
    assert result.converged[0]
    np.testing.assert_allclose(vector, expected, rtol=0, atol=1e-9)
    n = len(losses)
    if case in ("all ties", "cycle"):  # no transfer is better than another
        np.testing.assert_allclose(vector, np.full(n, 1 / n), atol=1e-12)
    if case == "one better everywhere":
        assert np.argmax(vector) == 0
    if case == "n=1":
        assert vector.tolist() == [1.0] and result.consistency_ratio[0] == 0
    if case == "n=2":  # W' = [[1, r], [1/r, 1]] has the eigenvector (r, 1) / (1 + r)
        win = np.clip(brute_win_rates(losses), 0.001, 0.999)
        r = win[0, 1] / win[1, 0]
        np.testing.assert_allclose(vector, [r / (1 + r), 1 / (1 + r)], atol=1e-12)
        assert result.consistency_ratio[0] == 0
    if case == "identical rows":
        np.testing.assert_allclose(vector[:4], vector[4:], atol=1e-12)


def test_backends_agree_on_iterations_and_non_convergence_is_reported():
    win = ahp.win_rates(random_losses(12, 60))
    for backend in BACKENDS:
        full = ahp.ahp_eigenvectors(win, backend=backend)
        capped = ahp.ahp_eigenvectors(win, max_iter=2, backend=backend)
        assert full.converged[0] and full.iterations[0] > 2
        assert not capped.converged[0] and capped.iterations[0] == 2
    numba_run = ahp.ahp_eigenvectors(win)
    numpy_run = ahp.ahp_eigenvectors(win, backend="numpy")
    assert numba_run.iterations[0] == numpy_run.iterations[0]
    np.testing.assert_allclose(numba_run.vectors[0], numpy_run.vectors[0], atol=1e-13)


def test_batched_equals_one_by_one():
    losses = [random_losses(n, 50, seed=n) for n in (3, 11, 7)]
    batch = ahp.affinities(losses)
    for target, vector in zip(losses, batch.vectors):
        np.testing.assert_array_equal(ahp.affinities(target).vectors[0], vector)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_naming_target_and_transfer(bad):
    losses = random_losses(3, 10)
    losses[1, 4] = bad
    with pytest.raises(TaskonomyError, match=r"target normal: transfer depth_zbuffer has NaN/inf test losses"):
        ahp.check_losses(losses, "normal", ["scratch", "depth_zbuffer", "full"])
    with pytest.raises(TaskonomyError, match=r"target #0: transfer #1"):
        ahp.win_rates([losses])


def test_bad_shapes_are_refused():
    with pytest.raises(TaskonomyError, match="expected losses of shape"):
        ahp.win_rates(np.zeros((3, 0)))
    with pytest.raises(TaskonomyError, match="square"):
        ahp.ahp_eigenvectors(np.zeros((2, 3)))
    with pytest.raises(TaskonomyError, match=r"\[0, 1\]"):
        ahp.ahp_eigenvectors(np.full((2, 2), 2.0))


def test_consistency_ratio():
    assert [ahp.random_index(n) for n in (1, 2, 3, 10, 15)] == [0, 0, 0.58, 1.49, 1.59]
    assert ahp.random_index(16) == pytest.approx(1.598, abs=1e-3)
    assert ahp.consistency_ratio(5.0, 2) == 0
    assert ahp.consistency_ratio(4.0, 4) == 0  # lambda_max = n: perfectly consistent
    assert ahp.consistency_ratio(4.27, 4) == pytest.approx(0.09 / 0.90)


@given(loss_matrices, st.randoms(use_true_random=False))
def test_permuting_transfers_permutes_the_result(losses, random):
    order = list(range(len(losses)))
    random.shuffle(order)
    win = ahp.win_rates(losses)
    np.testing.assert_array_equal(ahp.win_rates(losses[order]), win[np.ix_(order, order)])
    vector = ahp.affinities(losses).vectors[0]
    np.testing.assert_allclose(ahp.affinities(losses[order]).vectors[0], vector[order], atol=1e-12)


@given(loss_matrices, st.sampled_from(["affine", "cube", "exp", "negative shift"]))
def test_strictly_increasing_transforms_change_nothing(losses, transform):
    moved = {"affine": lambda x: 3 * x + 0.5, "cube": lambda x: x**3, "exp": np.exp,
             "negative shift": lambda x: x - 100}[transform](losses)
    np.testing.assert_array_equal(ahp.win_rates(moved), ahp.win_rates(losses))
    np.testing.assert_array_equal(ahp.affinities(moved).vectors[0], ahp.affinities(losses).vectors[0])


@given(loss_matrices)
def test_rows_sum_to_one_and_numba_matches_numpy(losses):
    result = ahp.affinities(losses)
    reference = ahp.affinities(losses, backend="numpy")
    assert result.vectors[0].sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(result.vectors[0], reference.vectors[0], atol=1e-12)


@pytest.mark.parametrize("float32", [True, False])
def test_weighted_counts_match_the_reference(float32):
    losses = random_losses(9, 300, float32=float32)
    losses[:, :50] = np.round(losses[:, :50])
    weights = ahp.resample_weights(300, 5, seed=3)
    assert weights.shape == (5, 300) and (weights.sum(axis=1) == 300).all()
    keys = ahp._keys(losses)
    got = _kernels.weighted_win_counts(keys, weights.astype(keys.dtype), 64)
    np.testing.assert_array_equal(got, _reference.weighted_win_counts(losses, weights))
    ones = _kernels.weighted_win_counts(keys, np.ones((1, 300), keys.dtype), 64)[0]
    np.testing.assert_array_equal(ones, _reference.win_counts(losses))


def test_bootstrap_intervals_and_a_dominant_transfer_stays_on_top():
    losses = random_losses(6, 200)
    losses[4] *= 0.2  # transfer 4 beats the others on nearly every image
    result = ahp.bootstrap(losses, resamples=100, seed=1)
    point = ahp.affinities(losses).vectors[0]
    assert result.samples.shape == (100, 6) and result.unconverged == 0
    np.testing.assert_allclose(result.samples.sum(axis=1), 1.0, atol=1e-12)
    assert (result.low <= point + 1e-12).all() and (point <= result.high + 1e-12).all()
    assert (result.low < result.high).all()
    assert result.top == 4 and result.top_stability >= 0.99
    same = ahp.bootstrap(losses, resamples=100, seed=1, backend="numpy")
    np.testing.assert_allclose(same.samples, result.samples, atol=1e-12)
    masked = ahp.bootstrap(losses, resamples=20, seed=1, candidates=np.arange(6) != 4)
    assert masked.top != 4


def test_bootstrap_on_close_transfers_is_unstable():
    rng = np.random.default_rng(0)
    losses = rng.random((5, 60))  # five transfers of the same quality: the top changes from resample to resample
    assert ahp.bootstrap(losses, resamples=200, seed=2).top_stability < 0.8


_CACHE_PROBE = """
import os, numpy as np
from taskonomy.ahp import _kernels
_kernels._ratios(np.full((2, 2), 0.5))  # the smallest cached kernel: a second of compiling, not ten
stats = _kernels._ratios.stats
print(os.environ.get("NUMBA_CACHE_DIR"), sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_numba_cache_falls_back_to_the_user_folder_when_the_package_is_read_only(tmp_path):
    """A copy of the package, read-only (and with a file where __pycache__ would go, which stops root too)."""
    import shutil
    import stat
    import subprocess
    import sys

    site = tmp_path / "site"
    shutil.copytree(ROOT / "taskonomy", site / "taskonomy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "ahp", site / "taskonomy" / "ahp", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "taskonomy" / "ahp" / "__pycache__").write_text("not a folder")
    for path in site.rglob("*"):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1")
    try:
        runs = [subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True,
                               cwd=tmp_path) for _ in range(2)]
    finally:
        for path in site.rglob("*"):
            path.chmod(path.stat().st_mode | stat.S_IWUSR)  # so that pytest can clean up
    for run in runs:
        assert run.returncode == 0, run.stderr
    folder, hits, misses = runs[0].stdout.split()
    assert folder == str(tmp_path / "cache" / "taskonomy" / "numba") and (int(hits), int(misses)) == (0, 1)
    assert list(Path(folder).rglob("*.nbi")), "nothing was cached"
    _, hits, misses = runs[1].stdout.split()
    assert (int(hits), int(misses)) == (1, 0), "the second process compiled again instead of loading the cache"


def test_numba_cache_stays_beside_a_writable_package(tmp_path, monkeypatch):
    from taskonomy.runtime import numba_cache_dir

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert numba_cache_dir(tmp_path) is None and (tmp_path / "__pycache__").is_dir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert numba_cache_dir(tmp_path / "elsewhere") == tmp_path / "mine"  # the user's choice wins
