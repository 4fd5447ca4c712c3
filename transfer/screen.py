"""Screening (`transfer.screen`): stage II trains only the readouts a transferability estimator ranks best.

    taskonomy --run-dir runs/default --set 'transfer.screen={estimator: logme, keep: 8, beam: 2}' transfer

Per target, the estimator (transfer/estimate.py, on the transfer split and with the settings `taskonomy estimate`
uses) scores every first-order source, and readouts are trained for the `keep` best and for the controls (random,
pixels), always. The beam is then built as without screening, from the trained first-order readouts' validation
losses, and of its higher-order sets only the `beam` best by the estimator on the set's concatenated features are
trained. Everything else is screened out: not trained and not in transfers.zarr, so AHP leaves its affinity empty
and the BIP has no such hyperedge (never chosen; a budget no tried transfers can cover is infeasible). Nothing is
silently missing: each target group of transfers.zarr lists its `screened_out` transfers, the root attribute
`screen` holds the settings, and `screen.csv` every candidate with its score, rank and decision.

Screening decides what is trained, never a row's losses: a row's stamp does not include it, so a screened run
then an unscreened one trains only the rows the first left out, and a row screened out is dropped from the store
as a row beyond max_order is (the store holds what the config asks for, whatever was trained before).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.artifacts import transfer_name
from taskonomy.config import Config, ScreenConfig
from taskonomy.runfolder import RunFolder, write_csv
from taskonomy.tasks import Task

__all__ = ["COLUMNS", "CONTROLS", "Screen", "ScreenRow", "open_screen", "write_screen_table"]

CONTROLS = registry.control_names()
COLUMNS = ["target", "transfer", "order", "estimator", "score", "rank", "decision"]
TRIED, CONTROL, SCREENED_OUT = "tried", "control", "screened out"


@dataclass(frozen=True)
class ScreenRow:
    """One candidate transfer of one target: its estimator score (higher = better; NaN: not scorable, ranked
    last), its rank among the candidates of its kind (first order, or the beam's sets; 0 for a control)."""

    target: str
    transfer: str
    order: int
    score: float
    rank: int
    decision: str  # tried, control, screened out


@dataclass
class Screen:
    """The estimator over one run's transfer split: scores transfers (one source or a set) into the targets and
    keeps the best; `rows` records every decision, `seconds` the reading and scoring."""

    settings: ScreenConfig
    features: Any  # transfer.estimate.Features: pooled, standardised features per (source, pair view)
    labels: dict[str, tuple[np.ndarray, np.ndarray]]  # target -> (z-scored label columns, discrete labels)
    views: dict[str, str | None]  # target -> its pair view (None: a single-image target)
    scorer: Any  # transfer.estimate._Scorer
    seconds: float = 0.0
    rows: list[ScreenRow] = field(default_factory=list)

    def score(self, target: str, sources: tuple[str, ...]) -> float:
        """The estimator's score of the transfer `sources` -> `target`: on the sources' features concatenated."""
        view = self.views[target]
        keys = [(s, view) for s in sorted(sources)]
        if any(k not in self.features.x for k in keys):
            return math.nan  # a source without the second view of a pair target
        key = keys[0] if len(keys) == 1 else (transfer_name(sources), view)
        if key not in self.features.x:
            self.features.x[key] = np.concatenate([self.features.x[k] for k in keys], 1)
        own = (target, view) if (target, view) in self.features.x else None
        y, classes = self.labels[target]
        start = time.perf_counter()
        value = self.scorer.score(self.settings.estimator, key, own, target, y, classes)
        self.seconds += time.perf_counter() - start
        return float(value)

    def _scores(self, target: str, candidates: list[tuple[str, ...]]) -> list[float]:
        """Every candidate's score, on one thread as `taskonomy estimate` computes them (transfer.estimate)."""
        from taskonomy.transfer.estimate import one_thread

        with one_thread():
            return [self.score(target, c) for c in candidates]

    def _keep(self, target: str, candidates: list[tuple[str, ...]], keep: int) -> list[tuple[str, ...]]:
        """The `keep` best candidates by score (NaN last, ties in the given order), recorded; in the given order."""
        scores = self._scores(target, candidates)
        order = sorted(range(len(candidates)), key=lambda i: (math.isnan(scores[i]), -np.nan_to_num(scores[i])))
        rank = {i: r + 1 for r, i in enumerate(order)}
        for i, sources in enumerate(candidates):
            self.rows.append(ScreenRow(target, transfer_name(sources), len(sources), scores[i], rank[i],
                                       TRIED if rank[i] <= keep else SCREENED_OUT))
        return [c for i, c in enumerate(candidates) if rank[i] <= keep]

    def first_order(self, target: str, candidates: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        """The first-order transfers to train: the `keep` best sources and the controls, in the given order."""
        controls = [c for c in candidates if c[0] in CONTROLS]
        kept = set(self._keep(target, [c for c in candidates if c[0] not in CONTROLS], self.settings.keep))
        for sources, value in zip(controls, self._scores(target, controls), strict=True):
            self.rows.append(ScreenRow(target, transfer_name(sources), 1, value, 0, CONTROL))
        return [c for c in candidates if c in kept or c in controls]

    def higher(self, target: str, candidates: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        """The beam's higher-order sets to train: the `beam` best, in the given order."""
        return self._keep(target, candidates, self.settings.beam) if candidates else []

    def screened_out(self, target: str) -> list[str]:
        return [r.transfer for r in self.rows if r.target == target and r.decision == SCREENED_OUT]


def open_screen(config: Config, data, root, sources: list[str], tasks: dict[str, Task],
                labels: dict[str, np.ndarray], held: np.ndarray) -> Screen:
    """The estimator of transfer.screen over `tasks` (target -> task; `labels`: an added target's labels, one per
    data.zarr image): every source's transfer-split features read once through stage II's feed, and each target's
    labels. An estimator that cannot score a target (rsa without its own stage I features) is refused in one line."""
    from taskonomy.transfer.estimate import _label_slices, _Scorer, one_thread, read_features, read_target

    settings = config.transfer.screen
    start = time.perf_counter()
    views = {name: name if task.head == "pair" else None for name, task in tasks.items()}
    if settings.estimator == "rsa":
        alone = [name for name, view in views.items() if name not in sources or
                 (view is not None and f"{name}/views/{view}/transfer" not in root)]
        if alone:
            raise TaskonomyError(f"transfer.screen.estimator rsa compares with a target's own stage I features and "
                                 f"{', '.join(alone)} has none; use a label-based estimator (logme, hscore, parc, "
                                 f"ridge)")
    with one_thread():
        features = read_features(root, sources, [n for n, v in views.items() if v is not None])
        index = np.asarray(data["splits/transfer"][:])
        if features.images != len(index):
            raise TaskonomyError(f"features.zarr: {features.images} transfer images, data.zarr has {len(index)}; "
                                 f"run `taskonomy extract --force`")
        target_labels = {name: read_target(task, labels[name][index] if name in labels else
                                           _label_slices(data, name, index), config.seed)
                         for name, task in tasks.items()}
    screen = Screen(settings, features, target_labels, views, _Scorer(features, [settings.estimator], held))
    screen.seconds = time.perf_counter() - start
    return screen


def _read_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="") as handle:
            rows = [r for r in csv.reader(handle) if r]
    except FileNotFoundError:
        return []
    return rows[1:] if rows and rows[0] == COLUMNS else []


def write_screen_table(run_dir: str | Path, screen: Screen | None, targets: list[str], every: list[str]) -> None:
    """screen.csv: every candidate of the screened `targets`, and the earlier rows of the run's other targets
    (`every`: all of them, in order); without screening (`screen` None) the file is removed."""
    path = RunFolder(run_dir).screen
    if screen is None:
        path.unlink(missing_ok=True)
        return
    name = screen.settings.estimator
    rows = {t: [] for t in every}
    for row in _read_rows(path):
        if row[0] in rows and row[0] not in targets:
            rows[row[0]].append(row)
    for r in screen.rows:
        rows[r.target].append([r.target, r.transfer, r.order, name, r.score, r.rank, r.decision])
    write_csv(path, COLUMNS, [row for t in every for row in rows[t]], digits=8)
