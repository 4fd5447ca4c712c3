"""The run folder, defined once: the name of every file in it, its format version and atomic writes.

    from taskonomy.runfolder import RunFolder
    run = RunFolder("runs/default")
    run.affinity            # runs/default/affinity.csv
    run.checkpoint("normal")  # runs/default/models/normal.pt

With `storage.url` set (the config's `storage` section), the three stores are `StoreURL`s under it instead
(`run.data` is s3://bucket/prefix/data.zarr); every other file stays in the folder. A RunFolder made with the
config's storage uses it; one made with the folder alone uses the storage of the command holding the folder
(`bind_storage`, taken with the lock), else its config.yaml's:

    RunFolder("runs/a", config.storage).features   # s3://bucket/prefix/features.zarr, or runs/a/features.zarr

Every stage and the application build paths here and nowhere else; the shared artifacts (the per-image
loss table of transfers.zarr, the affinity tables, stage stamps) have their one reader and one writer
in `taskonomy.artifacts`. Every file is written to a temporary name beside it and renamed, so a killed
command leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskonomy import TaskonomyError
from taskonomy.storage import StoreURL, storage_of

__all__ = [
    "FILES", "FORMAT_VERSION", "STORES", "RunFolder", "bind_storage", "check_format", "format_version", "save_figure",
    "unbind_storage", "write_csv", "write_format", "write_json", "write_text",
]

FORMAT_VERSION = 1  # 1: format file, chunk inventories, added targets with full and scratch rows

# Every name a run folder holds (the per-target files are built by RunFolder's methods from these stems).
FILES = {
    "config": "config.yaml",  # the resolved config the folder was made with
    "format": "run.json",  # {"format": FORMAT_VERSION}
    "lock": ".lock",  # the run lock (taskonomy.lock)
    "data": "data.zarr",
    "contact_sheet": "contact_sheet.png",
    "models": "models",  # stage I checkpoints models/<task>.pt
    "stage1_quality": "stage1_quality.csv",
    "features": "features.zarr",
    "transfers": "transfers.zarr",
    "added_targets": "added_targets.json",  # targets added from the cache: their dictionary entries
    "added_labels": "added_targets",  # ... and their labels, added_targets/<name>.npy
    "affinity": "affinity.csv",
    "affinity_first_order": "affinity_first_order.csv",
    "affinity_ci": "affinity_ci.csv",
    "ahp_summary": "ahp_summary.csv",
    "ahp_stamp": "ahp.json",
    "heatmap": "affinity_heatmap.png",
    "taxonomy": "taxonomy.json",
    "taxonomy_graph": "taxonomy_graph.png",
    "evaluation": "evaluation.csv",
    "supervision_saved_csv": "supervision_saved.csv",
    "supervision_saved_json": "supervision_saved.json",
    "evaluation_curves": "evaluation_curves.png",
    "evaluation_taxonomies": "evaluation_taxonomies.png",
    "budget_taxonomies": "budget_taxonomies.json",  # the taxonomies `evaluate` draws at a few budgets
    "run_timings": "run_timings.json",
    "published": "published.json",  # `taskonomy published`: what it imported from the release, from which files
    "published_skipped": "published_skipped.csv",  # ... every key it did not import, with the reason
    "wins_vs_task": "wins_vs_task.csv",  # published win rates against the task-specific network
    "wins_vs_pixels": "wins_vs_pixels.csv",  # ... and against the network trained from pixels
    "compare_csv": "compare.csv",  # `taskonomy compare`: per-target agreement of two runs
    "compare_json": "compare.json",
    "compare_figure": "compare.png",
    "science_csv": "science.csv",  # `taskonomy science`: the science goals measured, one row per check
    "science_json": "science.json",
    "estimates": "estimates",  # `taskonomy estimate`: estimates/<estimator>.csv, targets x sources, higher = better
    "estimate_timings": "estimates/timings.json",  # ... seconds per estimator, features read per second
    "estimate_agreement_csv": "estimate_agreement.csv",  # ... each estimator against AHP and the published set
    "estimate_agreement_json": "estimate_agreement.json",
    "estimate_agreement_figure": "estimate_agreement.png",
    "screen": "screen.csv",  # stage II with transfer.screen: every candidate transfer, its score, tried or screened out
    "significance_csv": "significance.csv",  # `taskonomy significance`: the taxonomy against random policies
    "significance_figure": "significance.png",
    "stability_csv": "stability.csv",  # `taskonomy stability`: the taxonomy over bootstrap resamples, per target
    "stability_json": "stability.json",  # ... per budget: how often the supervised set stays the same
    "novel_csv": "novel.csv",  # `taskonomy novel`: each task left out in turn, reached by all-for-one
    "novel_figure": "novel.png",
    "task_tree": "task_tree.png",  # in report/: the task-similarity tree beside the published one
    "affinity_distance": "affinity_distance.png",  # in report/: the affinities as exp(-20 P), the paper's Figure 7
    "report": "report",
}
# Which command rebuilds each store (for one-line errors).
REBUILD = {"data": "taskonomy data", "features": "taskonomy extract", "transfers": "taskonomy transfer"}
STORES = tuple(REBUILD)  # the files that move to storage.url when it is set

# resolved run folder -> (url, options) of the command holding it (taskonomy.lock binds it with the lock)
_bound: dict[Path, tuple[str | None, dict[str, Any]]] = {}
_read: dict[Path, tuple[tuple[int, int], tuple[str | None, dict[str, Any]]]] = {}  # config.yaml -> (stat, storage)


def bind_storage(run_dir: str | os.PathLike, storage: Any) -> None:
    """While a command holds `run_dir`, a RunFolder made without storage uses `storage` (its config's): the
    first command of a folder has no config.yaml yet."""
    _bound[Path(run_dir).resolve()] = storage_of(storage)


def unbind_storage(run_dir: str | os.PathLike) -> None:
    _bound.pop(Path(run_dir).resolve(), None)


def _configured(config_file: Path) -> tuple[str | None, dict[str, Any]]:
    """The `storage` section of a run folder's config.yaml as (url, options); (None, {}) without one. Read once
    per version of the file."""
    import yaml

    try:
        stat = config_file.stat()
    except OSError:
        return None, {}
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _read.get(config_file)
    if cached is None or cached[0] != stamp:
        try:
            doc = yaml.safe_load(config_file.read_text()) or {}
            found = storage_of(doc.get("storage") if isinstance(doc, dict) else None)
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            found = (None, {})  # a garbled config.yaml is refused where the config is loaded
        cached = _read[config_file] = (stamp, found)
    return cached[1]


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder (and URLs of its stores under storage.url); nothing is created by making one.

    `storage`: a StorageConfig (or its dict); None: the storage of the command holding the folder, else the
    folder's config.yaml's (read only when a store's location is asked for).
    """

    path: Path
    storage: Any = field(default=None, compare=False)  # equal and hashed by its path, as before

    def __init__(self, path: str | os.PathLike, storage: Any = None) -> None:
        object.__setattr__(self, "path", Path(path))
        object.__setattr__(self, "storage", storage)

    def __getattr__(self, key: str) -> Path:
        if key not in FILES:  # also while unpickling, before `path` exists
            raise AttributeError(key)
        try:
            path = self.__dict__["path"]
        except KeyError:
            raise AttributeError(key) from None
        if key in STORES:
            url, options = self.storage_url()
            if url:
                return StoreURL(f"{url}/{FILES[key]}", options)  # type: ignore[return-value]  # Path-like enough
        return path / FILES[key]

    def storage_url(self) -> tuple[str | None, dict[str, Any]]:
        """(storage.url, storage.options) of the folder's stores; (None, {}) when they are in the folder."""
        if self.__dict__.get("storage") is not None:
            return storage_of(self.storage)
        bound = _bound.get(self.path.resolve())
        return bound if bound is not None else _configured(self.path / FILES["config"])

    def __fspath__(self) -> str:
        return str(self.path)

    def checkpoint(self, task: str) -> Path:
        """models/<task>.pt: the stage I network of `task` (or of a target added from the cache)."""
        return self.path / FILES["models"] / f"{task}.pt"

    def added_labels_file(self, target: str) -> Path:
        return self.path / FILES["added_labels"] / f"{target}.npy"

    def all_for_one(self, target: str, suffix: str) -> Path:
        """all_for_one_<target>.json / .png: the best transfer into `target` from the supervised sources."""
        return self.path / f"all_for_one_{target}.{suffix}"

    def estimate_table(self, estimator: str) -> Path:
        """estimates/<estimator>.csv: one transferability estimator's scores, targets x sources."""
        return self.path / FILES["estimates"] / f"{estimator}.csv"

    def budget_taxonomy(self, budget: int | float) -> Path:
        """taxonomy_budget_<b>.png: the taxonomy `evaluate` draws at budget b."""
        return self.path / f"taxonomy_budget_{budget:g}.png"

    def seed_transfers(self, seed: int) -> Path:
        """transfers.seed<s>.zarr: stage II's losses under another readout seed, beside the run's own (stability);
        under storage.url when the stores are there."""
        url, options = self.storage_url()
        name = f"transfers.seed{int(seed)}.zarr"
        return StoreURL(f"{url}/{name}", options) if url else self.path / name  # type: ignore[return-value]


def format_version(run_dir: str | os.PathLike) -> int | None:
    """The folder's format version; 0 for a folder an older version made (config but no format file);
    None where there is no run folder yet."""
    run = RunFolder(run_dir)
    try:
        return int(json.loads(run.format.read_text())["format"])
    except FileNotFoundError:
        return 0 if run.config.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        raise TaskonomyError(f"{run.format} is unreadable; rebuild the run folder with "
                             f"`taskonomy --run-dir {run_dir} run --force`") from None


def check_format(run_dir: str | os.PathLike) -> None:
    """Refuse a folder of another format version, naming the command that upgrades or rebuilds it."""
    found = format_version(run_dir)
    if found is None or found == FORMAT_VERSION:
        return
    if found < FORMAT_VERSION:
        raise TaskonomyError(f"run folder {run_dir} has format {found}, this version reads format {FORMAT_VERSION}; "
                             f"upgrade it with `taskonomy --run-dir {run_dir} upgrade`")
    raise TaskonomyError(f"run folder {run_dir} has format {found}, newer than this version's {FORMAT_VERSION}; "
                         f"use a newer taskonomy-engine")


def write_format(run_dir: str | os.PathLike) -> None:
    write_json(RunFolder(run_dir).format, {"format": FORMAT_VERSION})


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TaskonomyError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def write_text(path: Path, text: str) -> Path:
    """`text` into `path` atomically."""
    return _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, doc: Any) -> Path:
    return write_text(path, json.dumps(doc, indent=2) + "\n")


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float) or type(value).__module__ == "numpy" and hasattr(value, "dtype") and \
            value.dtype.kind == "f":
        value = float(value)
        return "" if math.isnan(value) else f"{value:.{digits}g}"
    return "" if value is None else str(value)


def write_csv(path: Path, header: list[str], rows: list[list[Any]], digits: int = 12) -> Path:
    """A CSV table (floats to `digits` significant digits, NaN and None as empty cells), atomically."""
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(header)
    out.writerows([[_cell(v, digits) for v in row] for row in rows])
    return write_text(path, text.getvalue())


def save_figure(path: Path, figure: Any, dpi: int = 130) -> Path:
    """A matplotlib Figure as PNG, atomically."""
    return _atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
