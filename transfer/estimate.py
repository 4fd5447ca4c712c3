"""Readout-free transferability estimators on the feature cache: a targets x sources score table per estimator.

    taskonomy --run-dir runs/default estimate [--estimators logme,hscore,rsa,parc,ridge]

Reads the transfer split only (never a test image): every source's features through stage II's chunked feed
(transfer.feed.FeatureFeed, one source at a time), pooled as each block arrives, and the targets' labels in
slices. Higher is better for every estimator:

- `logme`: LogME (You et al. 2021), the evidence per image of Bayesian linear regression from the features to
  one label column, (alpha, beta) at MacKay's fixed point (Numba, _estimate_kernels.py), averaged over columns.
- `hscore`: H-score (Bao et al. 2019), tr(cov(f)^+ cov(E[f | y])) over discrete labels.
- `rsa`: Spearman correlation of the upper triangles of two representational dissimilarity matrices (1 -
  Pearson correlation between images), the source's features against the TARGET's own stage I features on the
  same images (Dwivedi and Roig 2019); a target without features of its own (added from the cache, or not
  trained in stage I) has no RSA cells.
- `parc`: PARC (Bolya et al. 2021), the feature RDM against the label RDM; Pearson correlation here.
- `ridge`: a closed-form ridge probe (unpenalised intercept) fitted on the fit part of the transfer split and
  scored on its validation part (transfer.validation, whole scenes, as stage II holds out): 1 - its squared
  error over that of predicting the fit part's mean (R^2-like).

Settings, fixed before any agreement with AHP was measured (module constants): features average-pooled to a
2 x 2 grid (C x 4 values an image; a pair target reads both views, concatenated), z-scored per value on the
transfer split and clipped at 5 sigma as stage II's readouts; dense labels average-pooled to 4 x 4 (class maps
as one-hot class shares per cell), class labels one-hot, soft labels as stored, then z-scored per column;
H-score's discrete labels are the class (the arg-max of a soft label), and for every other target k-means of
the z-scored labels into 8 clusters; RDMs over at most 1000 evenly spaced images; ridge penalty 10 on the
z-scored features (X^T X + 10 I). `full` is each estimator's score of the target's own stage I features. One
change came after the first measurement, a bug fix: label columns constant on the transfer split are left out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import Config
from taskonomy.runfolder import RunFolder, write_csv, write_json
from taskonomy.runtime import numba_cache_dir
from taskonomy.tasks import Task

# before the module with cache=True kernels is imported: a read-only install caches them in the user's folder
numba_cache_dir(Path(__file__).parent)

from taskonomy.transfer._estimate_kernels import (CLIP_SIGMA, FEATURE_GRID, LABEL_GRID, RIDGE_PENALTY,  # noqa: E402
                                                  hscore, kmeans, label_matrix, parc, pool_features, rdm_upper, ridge,
                                                  rsa, standardise, svd_of, whitening, zscore)

__all__ = ["CLIP_SIGMA", "ESTIMATORS", "FEATURE_GRID", "LABEL_GRID", "RIDGE_PENALTY", "Estimates", "EstimateTable",
           "Features", "compute_estimates", "hscore", "kmeans", "label_matrix", "logme", "one_thread", "parc",
           "parse_estimators", "pool_features", "rdm_upper", "read_estimates", "read_features", "read_target", "ridge",
           "rsa", "run_estimate", "standardise", "svd_of", "whitening", "write_estimates"]

ESTIMATORS = ("logme", "hscore", "rsa", "parc", "ridge")
H_CLUSTERS = 8  # k-means clusters of a label that is not a class, for H-score
RDM_IMAGES = 1000  # images of an RDM at most (evenly spaced over the transfer split)
LABEL_SLICE = 512  # images of labels read at once
LOGME_TOL, LOGME_MAX_ITER = 1e-6, 1000  # relative change of alpha / beta, or of the evidence per image


# ---------------------------------------------------------------------------------------------------------------
# the one dispatch point of the Numba kernel


def logme(x: np.ndarray, y: np.ndarray, backend: str = "numba",
          svd: tuple[np.ndarray, np.ndarray, int] | None = None) -> float:
    """LogME of features x (n, d) for labels y (n, m): the mean over columns of the evidence per image (`svd`:
    svd_of(x), when the caller has it)."""
    u, s2, dim = svd or svd_of(x)
    z = u.T @ y  # (k, m)
    outside = np.maximum((y ** 2).sum(0) - (z ** 2).sum(0), 0.0)
    n = len(x)
    if backend == "numpy":
        from taskonomy.transfer._estimate_kernels import fixed_point

        # the same loop in Python (the kernel's own source, run uncompiled): the reference the tests compare with
        values = [fixed_point.py_func(s2, z[:, j].copy(), outside[j], n, dim, LOGME_TOL, LOGME_MAX_ITER)[0]
                  for j in range(z.shape[1])]
    else:
        from taskonomy.transfer._estimate_kernels import logme_columns

        values = logme_columns(s2, np.ascontiguousarray(z), outside, float(n), float(dim), LOGME_TOL,
                               LOGME_MAX_ITER)
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------------------------
# reading the cache and the labels (transfer split only)


@dataclass
class Features:
    """Pooled, standardised transfer-split features: (source, pair target or None) -> (n, d) float64."""

    x: dict[tuple[str, str | None], np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0  # reading, decoding and pooling
    images: int = 0
    arrays: int = 0  # feature arrays read (a source's view of the transfer split)
    bytes: int = 0  # their stored size, uncompressed


def read_features(root, sources: Sequence[str], pair_targets: Sequence[str] = ()) -> Features:
    """Every source's transfer-split features through stage II's feed, one source (and view) at a time, each
    block pooled as it arrives: memory holds two chunks of one array and the pooled values."""
    from taskonomy.transfer.feed import FeatureFeed

    out, start = Features(), time.perf_counter()
    for source in sources:
        for view in (None, *pair_targets):
            paths = [f"{source}/transfer"] + ([f"{source}/views/{view}/transfer"] if view else [])
            if any(p not in root for p in paths):
                continue  # a source without the second view of a pair task: that target has no cell for it
            feed = FeatureFeed(root, paths)
            parts = [np.concatenate([pool_features(block[p]) for p in paths], 1) for _, _, block in feed.blocks()]
            out.x[(source, view)] = standardise(np.concatenate(parts))
            out.images, out.arrays = feed.n, out.arrays + len(paths)
            out.bytes += sum(int(np.prod(root[p].shape)) * root[p].dtype.itemsize for p in paths)
    out.seconds = time.perf_counter() - start
    return out


def read_target(task: Task, rows: Sequence[np.ndarray] | np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels z-scored per column (n, m), discrete labels for H-score (n,)) from label slices in image order."""
    rows = [rows] if isinstance(rows, np.ndarray) else list(rows)
    y = np.concatenate([label_matrix(task, r) for r in rows])
    if rows[0].ndim == 1 and rows[0].dtype.kind in "iu":
        classes = np.concatenate(rows).astype(np.int64)
    elif task.loss == "soft_ce":
        classes = y.argmax(1)
    else:
        classes = kmeans(standardise(y, None), H_CLUSTERS, seed)
    # a label value that never varies on these images (segment_semantic's unused class 0 in every cell) tells
    # nothing about any source, and LogME's evidence of an all-zero column grows without bound, differently
    # per source: such columns are left out
    varies = y.std(0) > 1e-8
    return standardise(y[:, varies] if varies.any() else y, None), classes


def _label_slices(data, name: str, index: np.ndarray) -> list[np.ndarray]:
    array = data[f"labels/{name}"]
    return [np.asarray(array.get_orthogonal_selection((index[lo:lo + LABEL_SLICE],)))
            for lo in range(0, len(index), LABEL_SLICE)]


# ---------------------------------------------------------------------------------------------------------------
# the stage


def parse_estimators(value: str | Sequence[str] | None) -> list[str]:
    """Estimator names from a comma list (None: all), each known, none twice."""
    names = list(ESTIMATORS) if value is None else \
        [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown or not names:
        raise TaskonomyError(f"unknown estimator {(unknown or [''])[0]!r}; expected a comma list of "
                             f"{', '.join(ESTIMATORS)}")
    return list(dict.fromkeys(names))


@dataclass
class Estimates:
    """Every estimator's scores: (targets, 1 + sources) tables, column 0 `full` (the target's own features)."""

    estimators: list[str]
    targets: list[str]
    sources: list[str]
    scores: dict[str, np.ndarray]
    seconds: dict[str, float]  # per estimator, its own preparation included (SVDs, RDMs, Numba compilation)
    features: Features
    label_seconds: float
    no_own_features: list[str]  # targets without stage I features: no RSA cells, no `full` cells
    notes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return ["full", *self.sources]

    def row(self, estimator: str, target: str) -> dict[str, float]:
        values = self.scores[estimator][self.targets.index(target)]
        return {c: float(v) for c, v in zip(self.columns, values) if not math.isnan(v)}

    def table(self, estimator: str) -> EstimateTable:
        """One estimator's scores as write_estimates writes them (and read_estimates reads them back)."""
        return EstimateTable(estimator, list(self.targets), self.columns, self.scores[estimator].copy())

    def timings(self) -> dict:
        read = self.features.seconds
        pairs = self.features.images * self.features.arrays
        return {"estimators": {e: round(self.seconds[e], 4) for e in self.estimators},
                "total_seconds": round(sum(self.seconds.values()) + read + self.label_seconds, 4),
                "read_seconds": round(read, 4), "label_seconds": round(self.label_seconds, 4),
                "images": self.features.images, "feature_arrays": self.features.arrays,
                "features_per_second": round(pairs / read, 1) if read else None,
                "megabytes_per_second": round(self.features.bytes / 1e6 / read, 2) if read else None,
                "higher_is_better": True, "notes": self.notes}


class _Scorer:
    """The estimators over one run's features; each caches what it computes per source (RDMs) and keeps time."""

    def __init__(self, features: Features, estimators: list[str], held: np.ndarray):
        self.features, self.estimators, self.held = features, estimators, held
        n = features.images
        self.subset = np.unique(np.linspace(0, n - 1, min(n, RDM_IMAGES)).round().astype(int))
        self.cache: dict[tuple[str, tuple], Any] = {}
        self.seconds = dict.fromkeys(estimators, 0.0)

    def _rdm(self, kind: str, key: tuple, x: np.ndarray) -> np.ndarray:
        """The z-scored RDM upper triangle of x on the subset: ranked first for `rsa`, as is for `parc`."""
        if (kind, key) not in self.cache:
            from scipy.stats import rankdata

            d = rdm_upper(x[self.subset])
            self.cache[(kind, key)] = zscore(rankdata(d) if kind == "rsa" else d)
        return self.cache[(kind, key)]

    def score(self, estimator: str, key: tuple, own: tuple | None, target: str, y: np.ndarray,
              classes: np.ndarray) -> float:
        """One cell: `key` the source's features, `own` the target's (None: it has none), y and classes its labels."""
        x = self.features.x[key]
        start = time.perf_counter()
        if estimator == "logme":
            if ("svd", key) not in self.cache:
                self.cache[("svd", key)] = svd_of(x)
            value = logme(x, y, svd=self.cache[("svd", key)])
        elif estimator == "hscore":
            if ("whiten", key) not in self.cache:
                self.cache[("whiten", key)] = whitening(x)
            value = hscore(x, classes, self.cache[("whiten", key)])
        elif estimator == "rsa":
            value = float(np.mean(self._rdm("rsa", key, x) * self._rdm("rsa", own, self.features.x[own]))) \
                if own is not None else math.nan
        elif estimator == "parc":
            value = float(np.mean(self._rdm("parc", key, x) * self._rdm("parc", ("labels of", target), y)))
        else:
            fit = ~self.held
            if self.held.any() and ("gram", key) not in self.cache:
                xc = x[fit] - x[fit].mean(0)
                self.cache[("gram", key)] = np.linalg.eigh(xc.T @ xc)
            value = ridge(x[fit], y[fit], x[self.held], y[self.held], gram=self.cache[("gram", key)]) \
                if self.held.any() else math.nan
        self.seconds[estimator] += time.perf_counter() - start
        return value


@contextmanager
def one_thread():
    """Torch, Numba and BLAS on one thread meanwhile (taskonomy.runtime.cap_threads), then as they were: every
    matrix here is a few hundred images by a few dozen values, smaller than a thread pool's cost to wake (all five
    estimators on the default run took 4 s on one thread, 107 s on two with a training job on both cores)."""
    import torch

    from taskonomy.runtime import cap_threads

    before = torch.get_num_threads()
    cap_threads(1)
    try:
        yield
    finally:
        cap_threads(before)


def compute_estimates(config: Config, run_dir: str | Path, estimators: Sequence[str] | None = None,
                      say=None, only: Sequence[str] | None = None) -> Estimates:
    """Every estimator for every target (the config's and those added from the cache; or the targets `only`) and
    every cached source, on the transfer split, on one thread. Refuses, in one line, a run without data.zarr or a
    complete features.zarr."""
    with one_thread():
        return _compute(config, run_dir, estimators, say, only)


def _compute(config: Config, run_dir: str | Path, estimators: Sequence[str] | None, say,
             only: Sequence[str] | None) -> Estimates:
    from taskonomy.artifacts import read_added_targets
    from taskonomy.extract.features import open_features
    from taskonomy.extract.pipeline import source_names
    from taskonomy.extract.stage1 import validation_mask
    from taskonomy.scenes.dataset import data_hash, open_data
    from taskonomy.transfer.stage import transfer_targets, validation_part

    estimators = parse_estimators(estimators)
    run = RunFolder(run_dir, config.storage)  # the stores in the folder or under storage.url
    data = open_data(run.data, config)
    data_tasks, data_id = list(data.attrs["tasks"]), data_hash(data)
    sources = source_names(config, data_tasks)
    root = open_features(run.features, sources, data_id)
    added = {a.task.name: a for a in read_added_targets(run.path) if a.data_hash == data_id}
    names = [t for t in transfer_targets(config, data_tasks) if t not in added] + list(added)
    for name in only or []:
        if name not in names:
            raise TaskonomyError(f"{name!r} is not a target of {run.path}")
    names = [n for n in names if only is None or n in only]
    tasks = {n: added[n].task if n in added else registry.get(n) for n in names}
    # stage II's validation part; with max order 1 an empty one is allowed (ridge then scores nothing)
    held = validation_part(data, config) if config.transfer.max_order > 1 else \
        validation_mask(data, config.transfer.validation, config.seed, "transfer")
    pairs = [n for n in names if tasks[n].head == "pair"]
    features = read_features(root, sources, pairs)
    index = np.asarray(data["splits/transfer"][:])
    if features.images != len(index):
        raise TaskonomyError(f"{run.features}: {features.images} transfer images, data.zarr has {len(index)}; "
                             f"run `taskonomy extract --force`")
    scorer = _Scorer(features, estimators, held)
    scores = {e: np.full((len(names), 1 + len(sources)), math.nan) for e in estimators}
    no_own, label_seconds = [], 0.0
    for i, name in enumerate(names):
        task, view = tasks[name], name if tasks[name].head == "pair" else None
        start = time.perf_counter()
        rows = added[name].labels(run.path)[index] if name in added else _label_slices(data, name, index)
        y, classes = read_target(task, rows, config.seed)
        label_seconds += time.perf_counter() - start
        own = (name, view) if (name, view) in features.x else None
        if own is None:
            no_own.append(name)
        for j, column in enumerate(["full", *sources]):
            key = own if column == "full" else (column, view)
            if column == name or key is None or key not in features.x:
                continue
            for estimator in estimators:
                scores[estimator][i, j] = scorer.score(estimator, key, own, name, y, classes)
        if say:
            say(f"estimate: {name:<18} {len(sources)} sources, {y.shape[1]} label values")
    notes = []
    if no_own and "rsa" in estimators:
        notes.append(f"no stage I features of {', '.join(no_own)}: rsa cells and full left empty "
                     f"(label-based estimators only)")
    if "ridge" in estimators and not held.any():
        notes.append("transfer.validation holds out no scene: ridge has nothing to score on, its cells are empty")
    return Estimates(estimators, names, sources, scores, scorer.seconds, features, label_seconds, no_own, notes)


# ---------------------------------------------------------------------------------------------------------------
# estimates/<estimator>.csv: the one writer and reader


@dataclass(frozen=True)
class EstimateTable:
    """estimates/<estimator>.csv: targets x (full, sources), NaN where not scored; higher is better."""

    estimator: str
    targets: list[str]
    columns: list[str]
    values: np.ndarray

    def row(self, target: str) -> dict[str, float]:
        values = self.values[self.targets.index(target)]
        return {c: float(v) for c, v in zip(self.columns, values) if not math.isnan(v)}


def write_estimates(run_dir: str | Path, estimates: Estimates) -> list[Path]:
    """estimates/<estimator>.csv per estimator and estimates/timings.json."""
    run = RunFolder(run_dir)
    try:
        run.estimates.mkdir(exist_ok=True)
    except OSError as err:
        raise TaskonomyError(f"cannot write {run.estimates}: {err.strerror or err}") from None
    paths = [write_csv(run.estimate_table(e), ["target", *estimates.columns],
                       [[t, *row] for t, row in zip(estimates.targets, estimates.scores[e].tolist())], digits=10)
             for e in estimates.estimators]
    return paths + [write_json(run.estimate_timings, estimates.timings())]


def read_estimates(run_dir: str | Path, estimator: str) -> EstimateTable:
    """One estimator's table, as write_estimates wrote it."""
    import csv

    path = RunFolder(run_dir).estimate_table(estimator)
    try:
        with path.open(newline="") as handle:
            rows = [r for r in csv.reader(handle) if r]
    except FileNotFoundError:
        raise TaskonomyError(f"{path} does not exist; run `taskonomy estimate` first") from None
    if not rows or rows[0][:1] != ["target"]:
        raise TaskonomyError(f"{path}: expected a header whose first column is 'target'")
    try:
        values = np.array([[float(c) if c else math.nan for c in r[1:]] for r in rows[1:]], np.float64)
    except ValueError:
        raise TaskonomyError(f"{path}: a cell is not a number") from None
    return EstimateTable(estimator, [r[0] for r in rows[1:]], rows[0][1:], values.reshape(len(rows) - 1, -1))


def run_estimate(config: Config, run_dir: str | Path, estimators: Sequence[str] | None = None,
                 say=None) -> tuple[Estimates, list[Path]]:
    """compute_estimates, then its tables and timings into the run folder (nothing is written on a refusal)."""
    estimates = compute_estimates(config, run_dir, estimators, say)
    return estimates, write_estimates(run_dir, estimates)

