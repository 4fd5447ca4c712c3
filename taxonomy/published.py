"""The original Taskonomy release's published affinities and win rates, read into a run folder of ours.

    taskonomy published --images 16k --run-dir runs/published_16k     # affinity.csv, win rates, published.json
    taskonomy --run-dir runs/published_16k solve --budget 4 --max-order 2

The release (StanfordVL/taskonomy, MIT licence) published `results/affinities/all_affinities{,_1k,_16k}.pkl` and
`results/winrates/wins_vs_{task,pixels}{,_1k,_16k}.pkl`; copies ship in `taskonomy/published_data/`, so nothing
is downloaded. Each is a pickled dict `"s1__s2__t" -> float64`; the files are read by a restricted unpickler that
admits only the two numpy globals a float64 scalar needs. Keys become our names (`taskonomy.tasks.resolve_alias`):
`self__t` -> column `full` of target t, `random` -> our `random` control, `s1__s2__t` -> column `s1+s2` (sources
sorted by our names: the release's key order is not kept, and no two keys of a file collide), `t__t` (a readout
on t's own encoder) -> column `t` of target t, allowed in a published folder only. `class_selected`, which our
dictionary lacks, keeps its name. Values are written with 17 significant digits: never renormalised, equal to
the pickles' to the last bit.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.artifacts import BASELINES, order_of, read_published, transfer_name, write_affinity
from taskonomy.runfolder import FILES, RunFolder, write_csv, write_json

__all__ = ["EXTRA_TASKS", "IMAGES", "KINDS", "Published", "column_of", "data_folder", "load_pickle",
           "load_published", "write_published"]

IMAGES = {"16k": "_16k", "1k": "_1k", "all": ""}  # --images -> file suffix; "all": the release's first set
KINDS = ("all_affinities", "wins_vs_task", "wins_vs_pixels")
TABLES = {"all_affinities": "affinity", "wins_vs_task": "wins_vs_task", "wins_vs_pixels": "wins_vs_pixels"}
# Release tasks our dictionary has no entry for: kept under their own names (class_selected: a selection of
# ImageNet classes; a source in the 1k and 16k files, a target too in the first set)
EXTRA_TASKS = ("class_selected",)
SOURCE = "StanfordVL/taskonomy on GitHub, results/affinities and results/winrates (MIT licence)"
DIGITS = 17  # significant digits that write any float64 exactly

try:  # numpy 2 moved the module that pickles made by numpy 1 name as numpy.core.multiarray
    from numpy._core.multiarray import scalar as _scalar
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import scalar as _scalar

_SAFE = {("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
         ("numpy", "dtype"): np.dtype}


class _Refused(Exception):
    pass


class _Unpickler(pickle.Unpickler):
    """A pickle that may build dicts, strings and numpy float scalars, and nothing else."""

    def find_class(self, module: str, name: str):
        try:
            return _SAFE[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused("a persistent id")


def data_folder() -> Path:
    """The folder of the shipped copies (package data of `taskonomy`)."""
    return Path(str(importlib.resources.files("taskonomy") / "published_data"))


def load_pickle(path: str | os.PathLike) -> dict[str, float]:
    """One published file: a dict of str -> float, read without running anything the file names."""
    path = Path(path)
    try:
        doc = _Unpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except _Refused as err:
        raise TaskonomyError(f"{path}: refused: the pickle calls {err}, which a published results file never "
                             f"needs (only dicts of floats are read)") from None
    except OSError as err:
        raise TaskonomyError(f"cannot read {path}: {err.strerror or err}") from None
    except Exception as err:  # a truncated or garbled pickle raises anything from EOFError to KeyError
        raise TaskonomyError(f"{path} is not a readable pickle ({type(err).__name__})") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, float | np.floating)
                                            for k, v in doc.items()):
        raise TaskonomyError(f"{path}: expected a dict of 'sources__target' -> float, got {type(doc).__name__}")
    return {k: float(v) for k, v in doc.items()}


def _our_name(name: str) -> str:
    """Our name of a release task; ValueError (the skip reason) for a name that is not a task of either."""
    if name in EXTRA_TASKS:
        return name
    ours = registry.resolve_alias(name)
    try:
        registry.get(ours)
    except TaskonomyError:
        raise ValueError(f"unknown task {name!r}") from None
    return ours


def column_of(key: str) -> tuple[str, str]:
    """(target, column) of a release key in our names; ValueError saying why a key has no place in our tables."""
    parts = key.split("__")
    if len(parts) < 2:
        raise ValueError("not of the form sources__target")
    *sources, target = parts
    if target in ("self", "random", "pixels"):
        raise ValueError(f"{target!r} is not a target")
    target = _our_name(target)
    if sources == ["self"]:
        return target, "full"  # the task-specific network: the target supervised itself
    if "self" in sources:
        raise ValueError("'self' together with other sources")
    ours = [_our_name(s) for s in sources]
    if len(set(ours)) != len(ours):
        raise ValueError("a source is named twice")
    if ours == [target]:
        return target, target  # t__t: a readout on the target's own encoder
    if target in ours:
        raise ValueError("the target is one of several sources")
    return target, transfer_name(ours)


@dataclass
class Published:
    """One release set in our names: per kind, target -> column -> value; the keys not taken, with reasons."""

    images: str
    tables: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # kind -> target -> column
    keys: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)  # kind -> (target, column) -> key
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (file, key, reason)
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> name, sha256

    def table(self, kind: str) -> tuple[list[str], list[str], np.ndarray]:
        """(targets, columns, values (n_targets, n_columns), NaN where the release lists no such transfer)."""
        rows = self.tables[kind]
        targets = _task_order(set(rows))
        columns = sorted({c for row in rows.values() for c in row},
                         key=lambda c: (c not in BASELINES, order_of(c), _rank(c), c))
        values = np.full((len(targets), len(columns)), np.nan)
        for i, target in enumerate(targets):
            for column, value in rows[target].items():
                values[i, columns.index(column)] = value
        return targets, columns, values


def _rank(column: str) -> tuple[int, ...]:
    order = {t.name: i for i, t in enumerate(registry.all_tasks())}
    return tuple(order.get(s, len(order)) for s in column.split("+"))


def _task_order(names: set[str]) -> list[str]:
    known = [t.name for t in registry.all_tasks() if t.name in names]
    return known + sorted(names - set(known))


def load_published(images: str = "16k", folder: str | os.PathLike | None = None) -> Published:
    """The release's affinities and win rates of one image count (1k, 16k or all), in our names."""
    if images not in IMAGES:
        raise TaskonomyError(f"unknown published set {images!r}; expected one of {', '.join(IMAGES)}")
    folder = Path(folder) if folder is not None else data_folder()
    result = Published(images)
    for kind in KINDS:
        path = folder / f"{kind}{IMAGES[images]}.pkl"
        raw = load_pickle(path)
        result.files[kind] = {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        rows: dict[str, dict[str, float]] = {}
        keys: dict[tuple[str, str], str] = {}
        for key, value in raw.items():
            try:
                target, column = column_of(key)
                if (target, column) in keys:
                    raise ValueError(f"the same transfer as {keys[(target, column)]!r}")
            except ValueError as err:
                result.skipped.append((path.name, key, str(err)))
                continue
            keys[(target, column)] = key
            rows.setdefault(target, {})[column] = value
        result.tables[kind], result.keys[kind] = rows, keys
    return result


def write_published(published: Published, run_dir: str | os.PathLike) -> list[Path]:
    """affinity.csv, affinity_first_order.csv, the two win-rate tables, the skipped keys and published.json."""
    run = RunFolder(run_dir)
    _refuse_a_run(run)
    paths = []
    for kind in KINDS:
        targets, columns, values = published.table(kind)
        paths.append(write_affinity(getattr(run, TABLES[kind]), targets, columns, values, digits=DIGITS))
        if kind == "all_affinities":
            first = [i for i, c in enumerate(columns) if c not in BASELINES and "+" not in c]
            paths.append(write_affinity(run.affinity_first_order, targets, [columns[i] for i in first],
                                        values[:, first], digits=DIGITS))
    paths.append(write_csv(run.published_skipped, ["file", "key", "reason"], [list(s) for s in published.skipped]))
    imported = {published.files[k]["name"]: len(published.keys[k]) for k in KINDS}
    paths.append(write_json(run.published, {
        "source": SOURCE, "images": published.images, "files": published.files, "imported": imported,
        "skipped": len(published.skipped),
        "columns": "full = self__t (the task-specific network); t in target t's row = t__t (a readout on t's own "
                   "encoder); s1+s2 = s1__s2__t; both full and t need t's labels: the BIP's ({t}, t) hyperedge "
                   "takes the larger of the two",
        "scores": "evaluate: gain = wins_vs_pixels, quality = wins_vs_task of the chosen transfer"}))
    return paths


def _refuse_a_run(run: RunFolder) -> None:
    """A folder with a run's own results is never overwritten with the release's."""
    if read_published(run.path) is not None:
        return
    for name in ("data", "models", "features", "transfers", "affinity"):
        if (run.path / FILES[name]).exists():
            raise TaskonomyError(f"{run.path} holds a run's {FILES[name]}; write the published results to a "
                                 f"new folder (--run-dir)")
