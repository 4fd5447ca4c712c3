"""The one reader and the one writer of each artifact that more than one stage touches.

    from taskonomy.artifacts import read_losses, read_affinity
    table = read_losses("runs/default")           # transfers.zarr: per-image test losses per target
    table["normal"].row("reshading")               # (n_test,) float64
    affinity = read_affinity("runs/default")       # affinity.csv: targets x transfers, rows sum to 1

transfers.zarr (stage II writes, stages III and IV, the report and the Python API read): per target a group
with `losses` [n_transfers, n_test] float64, `validation` [n_transfers, n_validation] float64 (the readouts'
losses on the validation part of the transfer split, NaN for `full` and `scratch`) and attributes `transfers`
(row names), `orders`, `stamps`, `stamp`, `loss`, `complete`; the root's `test_index` and `validation_index`
name the columns' data.zarr images. Row names are "full" (the target's stage I network), "scratch" (the stage I
architecture trained on the transfer split), or the sources of a readout sorted and joined by "+".
affinity.csv (stage III writes, stage IV, the report and the API read): a `target` column, then one column
per transfer, empty where a target did not try it. Readers check what they read and raise one-line
TaskonomyErrors naming the file; a damaged store is named with its array and the command that rebuilds it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError, TaskonomyWarning
from taskonomy import tasks as registry
from taskonomy.runfolder import REBUILD, RunFolder, write_csv, write_json

__all__ = [
    "BASELINES", "AddedTarget", "AffinityTable", "LossTable", "SummaryRow", "TargetLosses", "canonical_transfer",
    "complete_targets",
    "existing_rows", "labels_hash", "read_added_targets", "read_affinity", "read_affinity_ci", "read_losses",
    "read_published", "read_summary", "read_win_rates", "remove_added_target", "transfer_name", "write_added_target",
    "write_affinity", "write_summary",
    "write_target_losses",
]

BASELINES = ("full", "scratch")


def transfer_name(sources: Sequence[str]) -> str:
    """The canonical row name of a transfer: its sources sorted and joined by '+' (names hold no '+')."""
    return "+".join(sorted(sources))


def canonical_transfer(name: str, where: str) -> str:
    """A transfer's canonical name: "full", "scratch", or valid task names sorted and joined by "+"."""
    name = name.strip()
    if name in BASELINES:
        return name
    parts = name.split("+")
    try:
        for part in parts:
            registry.validate_name(part)
    except TaskonomyError as err:
        raise TaskonomyError(f"{where}: transfer {name!r}: {err}") from None
    if len(set(parts)) != len(parts):
        raise TaskonomyError(f"{where}: transfer {name!r} names a source twice")
    return transfer_name(parts)


def order_of(name: str) -> int:
    """Sources read by a transfer: 0 for the baselines."""
    return 0 if name in BASELINES else name.count("+") + 1


# ---------------------------------------------------------------------------------------------------------------
# transfers.zarr


@dataclass(frozen=True)
class TargetLosses:
    """One target's rows of transfers.zarr: per-image test losses (n_transfers, n_test) and, where stored,
    per-image validation losses (n_transfers, n_validation), NaN in the rows that have none (full, scratch)."""

    target: str
    transfers: list[str]
    orders: list[int]
    losses: np.ndarray  # (n_transfers, n_test) float64
    stamps: list[str] = field(default_factory=list)
    validation: np.ndarray | None = None  # (n_transfers, n_validation) float64; None: the store has none
    screened_out: list[str] = field(default_factory=list)  # transfers transfer.screen left untrained (not tried)

    def row(self, name: str) -> np.ndarray:
        """The per-image test losses of transfer `name`."""
        try:
            return self.losses[self.transfers.index(name)]
        except ValueError:
            raise TaskonomyError(f"target {self.target} has no transfer {name!r} in the loss table "
                                 f"(rows: {', '.join(self.transfers)})") from None

    def first_order(self, exclude: Sequence[str] = ()) -> list[str]:
        """The first-order rows (single sources), in table order, but those in `exclude`."""
        return [n for n, o in zip(self.transfers, self.orders, strict=True) if o == 1 and n not in exclude]

    def validation_mean(self, name: str) -> float:
        """Mean loss of transfer `name` on the validation part of the transfer split: what selection ranks on."""
        self.row(name)  # an unknown row is named as such
        values = None if self.validation is None else self.validation[self.transfers.index(name)]
        if values is None or not len(values) or not np.isfinite(values).all():
            raise TaskonomyError(f"target {self.target}: transfer {name!r} has no validation losses in the loss "
                                 f"table (full and scratch never do; else rerun `taskonomy transfer`)")
        return float(values.mean())


@dataclass(frozen=True)
class LossTable:
    """transfers.zarr as read: its root attributes and every complete target asked for, in store order."""

    path: Path
    attrs: dict[str, Any]
    targets: dict[str, TargetLosses]

    def __getitem__(self, target: str) -> TargetLosses:
        try:
            return self.targets[target]
        except KeyError:
            raise TaskonomyError(f"{self.path} has no complete target {target!r} "
                                 f"(targets: {', '.join(self.targets)})") from None

    @property
    def test_index(self) -> list[int]:
        """data.zarr image indices of the test images, the columns of every loss table."""
        return [int(i) for i in self.attrs.get("test_index", [])]

    @property
    def validation_index(self) -> list[int]:
        """data.zarr image indices of the validation part of the transfer split, the columns of `validation`."""
        return [int(i) for i in self.attrs.get("validation_index", [])]

    @property
    def sources(self) -> list[str]:
        return [str(s) for s in self.attrs.get("sources", [])]


@contextmanager
def _damage_named(path: Path, rebuild: str) -> Iterator[None]:
    """A failed read of a store becomes the one-line error the CLI prints: the damaged array, chunk and
    the command that rebuilds the store (Zarr's own exceptions never reach the user)."""
    try:
        yield
    except TaskonomyError:
        raise
    except Exception as err:
        from taskonomy.store import find_damage

        problem = find_damage(path) or f"cannot be read ({type(err).__name__}: {str(err)[:120]})"
        raise TaskonomyError(f"{path}: {problem}; rebuild it with `{rebuild} --force`") from None


def _check_rows(where: str, names: list[str], orders: list[int], n_rows: int) -> list[str]:
    if len(names) != n_rows or len(orders) != n_rows:
        raise TaskonomyError(f"{where}: {len(names)} transfer names and {len(orders)} orders for {n_rows} rows")
    names = [canonical_transfer(str(n), where) for n in names]
    if len(set(names)) != len(names):
        raise TaskonomyError(f"{where}: a transfer is listed twice")
    for name, order in zip(names, orders, strict=True):
        if order != order_of(name):
            raise TaskonomyError(f"{where}: transfer {name} has order {order}, expected {order_of(name)}")
    return names


def _complete(group: Any) -> bool:
    """A target's group of transfers.zarr that stage II finished (None: the target is not there)."""
    return group is not None and "losses" in group and bool(group.attrs.get("complete", False))


def complete_targets(run_dir: str | os.PathLike) -> list[str]:
    """The targets of a complete transfers.zarr that stage II finished, in store order; no losses are read."""
    from taskonomy.store import open_complete

    path = RunFolder(run_dir).transfers
    with _damage_named(path, REBUILD["transfers"]):
        root = open_complete(path, REBUILD["transfers"])
        return [t for t in root.attrs.get("targets", []) if _complete(root.get(t))]


def read_losses(run_dir: str | os.PathLike, targets: Sequence[str] | None = None,
                purpose: str = "the results", store_path: str | os.PathLike | None = None) -> LossTable:
    """Per-image test losses of `targets` (default: every target of the store) from a complete transfers.zarr
    (or the loss store at `store_path`, e.g. a second readout seed's).

    A target not complete there is left out with a TaskonomyWarning (`purpose` says from what).
    """
    from taskonomy.store import locate, open_complete

    path = RunFolder(run_dir).transfers if store_path is None else locate(store_path)
    rebuild = REBUILD["transfers"]
    with _damage_named(path, rebuild):
        root = open_complete(path, rebuild)
        attrs = dict(root.attrs)
        n_test = len(attrs.get("test_index", [])) or None
        found: dict[str, TargetLosses] = {}
        for target in (list(attrs.get("targets", [])) if targets is None else list(targets)):
            group = root.get(target)
            if not _complete(group):
                state = "is missing from" if group is None else "is not complete in"
                warnings.warn(f"target {target} {state} {path}; it is left out of {purpose}", TaskonomyWarning,
                              stacklevel=2)
                continue
            where = f"{path}/{target}"
            losses = np.asarray(group["losses"][...], dtype=np.float64)
            if losses.ndim != 2 or (n_test is not None and losses.shape[1] != n_test):
                raise TaskonomyError(f"{where}: losses of shape {losses.shape}, expected "
                                     f"(n_transfers, {n_test or 'n_test'})")
            names = _check_rows(where, list(group.attrs.get("transfers", [])),
                                [int(o) for o in group.attrs.get("orders", [])], losses.shape[0])
            bad = ~np.isfinite(losses)
            if bad.any():
                row = int(np.flatnonzero(bad.any(axis=1))[0])
                raise TaskonomyError(f"{path}: target {target}: transfer {names[row]} has NaN/inf test losses "
                                     f"({int(bad[row].sum())} of {bad.shape[1]} images); rebuild it with "
                                     f"`{rebuild} --force`")
            validation = None
            if "validation" in group:
                validation = np.asarray(group["validation"][...], dtype=np.float64)
                n_val = len(attrs.get("validation_index", []))
                if validation.shape != (losses.shape[0], n_val):
                    raise TaskonomyError(f"{where}: validation losses of shape {validation.shape}, expected "
                                         f"({losses.shape[0]}, {n_val}); rebuild it with `{rebuild} --force`")
            found[target] = TargetLosses(target, names, [order_of(n) for n in names], losses,
                                         [str(s) for s in group.attrs.get("stamps", [])], validation,
                                         [str(s) for s in group.attrs.get("screened_out", [])])
    if len({t.losses.shape[1] for t in found.values()}) > 1:
        raise TaskonomyError(f"{path}: targets were tested on different numbers of images")
    return LossTable(path, attrs, found)


def existing_rows(store: Any, target: str) -> dict[str, tuple[str, np.ndarray, np.ndarray | None]]:
    """Rows of an earlier run of `target` that were fully written (first order at least): name -> (stamp,
    test losses, validation losses or None where the store has none). Missing, half-written or garbled groups
    give nothing to reuse."""
    try:
        group = store[target]
        names, stamps = group.attrs["transfers"], group.attrs["stamps"]
        if not group.attrs.get("rows_written"):
            return {}
        losses = np.asarray(group["losses"][:])
        validation = np.asarray(group["validation"][:]) if "validation" in group else None
        if validation is not None and len(validation) != len(losses):
            validation = None
    except Exception:
        return {}
    return {n: (s, losses[i], None if validation is None else validation[i])
            for i, (n, s) in enumerate(zip(names, stamps, strict=True))}


def write_target_losses(store: Any, target: str, rows: list[tuple[str, str, np.ndarray, np.ndarray]], stamp: str,
                        loss: str, complete: bool, screened_out: Sequence[str] = ()) -> None:
    """(Re)write /<target> whole from rows (name, stamp, per-image test losses, per-image validation losses,
    NaN where a row has none) in their order; `complete` last. `screened_out`: the transfers transfer.screen
    left untrained (an attribute only where there are any, so an unscreened store is as before)."""
    from taskonomy.store import codecs

    group = store.create_group(target, overwrite=True)
    for name, column in (("losses", 2), ("validation", 3)):
        values = np.stack([r[column] for r in rows]).astype(np.float64)
        array = group.create_array(name, shape=values.shape, dtype="float64",
                                   chunks=tuple(max(1, n) for n in values.shape), **codecs())
        array[...] = values
    group.attrs.update({"transfers": [r[0] for r in rows], "orders": [order_of(r[0]) for r in rows],
                        "stamps": [r[1] for r in rows], "stamp": stamp, "loss": loss, "rows_written": True,
                        **({"screened_out": list(screened_out)} if screened_out else {}), "complete": complete})


# ---------------------------------------------------------------------------------------------------------------
# affinity.csv and its companions


@dataclass(frozen=True)
class AffinityTable:
    """affinity.csv: targets (rows) x transfers (columns, canonical names), NaN where not tried."""

    path: Path
    targets: list[str]
    transfers: list[str]
    values: np.ndarray  # (n_targets, n_transfers)

    def row(self, target: str) -> dict[str, float]:
        """The transfers tried into `target` and their affinities."""
        values = self.values[self.targets.index(target)]
        return {t: float(v) for t, v in zip(self.transfers, values, strict=True) if not math.isnan(v)}


_ROW_SUM_TOLERANCE = 1e-3  # AHP rows sum to 1; the CSV's rounding may leave a little


def _read_rows(path: Path, what: str) -> list[list[str]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.reader(handle))
    except FileNotFoundError:
        raise TaskonomyError(f"{path} does not exist; {what}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TaskonomyError(f"cannot read {path}: {err}") from None


def _number(cell: str, where: str, column: str) -> float:
    try:
        return float(cell) if cell.strip() else math.nan
    except ValueError:
        raise TaskonomyError(f"{where}, column {column}: expected a number or nothing, got {cell!r}") from None


def read_affinity(run_dir: str | os.PathLike) -> AffinityTable:
    """Parse and check affinity.csv: a 'target' column, one column per transfer, values in [0, 1], rows sum to 1.

    A column naming the target itself (t into t) is refused, except in a folder of the published results
    (published.json), where it is the release's `t__t`: a readout on the target's own encoder.
    """
    run = RunFolder(run_dir)
    return _read_table(run.affinity, "compute the affinities (stage III, `taskonomy ahp`) first",
                       sums_to_one=True, own_allowed=run.published.is_file())


def read_win_rates(run_dir: str | os.PathLike, kind: str) -> AffinityTable:
    """A published win-rate table (kind "wins_vs_task" or "wins_vs_pixels"), affinity.csv's layout."""
    return _read_table(getattr(RunFolder(run_dir), kind), "`taskonomy published` writes it", sums_to_one=False,
                       own_allowed=True)


def _read_table(path: Path, what: str, *, sums_to_one: bool, own_allowed: bool) -> AffinityTable:
    rows = _read_rows(path, what)
    noun = "an affinity" if sums_to_one else "a win rate"
    if not rows or not rows[0] or rows[0][0].strip() != "target":
        raise TaskonomyError(f"{path}: expected a header whose first column is 'target'")
    columns = [canonical_transfer(c, str(path)) for c in rows[0][1:]]
    if len(set(columns)) != len(columns):
        raise TaskonomyError(f"{path}: a transfer column appears twice")
    targets, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {line}"
        if len(row) != len(rows[0]):
            raise TaskonomyError(f"{where}: expected {len(rows[0])} cells, got {len(row)}")
        target = row[0].strip()
        try:
            registry.validate_name(target)
        except TaskonomyError as err:
            raise TaskonomyError(f"{where}: {err}") from None
        if target in targets:
            raise TaskonomyError(f"{where}: target {target} has a second row")
        cells = [_number(cell, where, column) for column, cell in zip(columns, row[1:], strict=True)]
        for column, value, cell in zip(columns, cells, row[1:], strict=True):
            if not (math.isnan(value) or 0 <= value <= 1):
                raise TaskonomyError(f"{where}, column {column}: {noun} lies in [0, 1], got {cell.strip()}")
            if column not in BASELINES and target in column.split("+") and not math.isnan(value) and not (
                    own_allowed and column == target):
                raise TaskonomyError(f"{where}: transfer {column} into {target} reads the target itself; use 'full'")
        total = float(np.nansum(cells))
        if sums_to_one and abs(total - 1) > _ROW_SUM_TOLERANCE:
            raise TaskonomyError(f"{where}: the affinities of target {target} sum to {total:.4f}, expected 1")
        targets.append(target)
        values.append(cells)
    if not targets:
        raise TaskonomyError(f"{path}: no target rows")
    return AffinityTable(path, targets, columns, np.array(values, dtype=np.float64).reshape(len(targets), -1))


def write_affinity(path: Path, targets: list[str], transfers: list[str], values: np.ndarray,
                   digits: int = 12) -> Path:
    """affinity.csv (or a view of it: affinity_first_order.csv, a win-rate table), NaN as empty cells; 17
    significant digits write a float64 exactly."""
    return write_csv(path, ["target", *transfers], [[t, *row] for t, row in zip(targets, values.tolist(),
                                                                                 strict=True)], digits=digits)


def read_published(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """published.json of a folder `taskonomy published` made (what it imported, from where); None elsewhere."""
    path = RunFolder(run_dir).published
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or "images" not in doc:
            raise ValueError("not an object with 'images'")
        return doc
    except (OSError, ValueError) as err:
        raise TaskonomyError(f"{path} is unreadable ({err}); make the folder again with `taskonomy published "
                             f"--run-dir {Path(run_dir)}`") from None


def read_affinity_ci(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """affinity_ci.csv: per target and transfer, its order, affinity and bootstrap interval (NaN: none)."""
    path = RunFolder(run_dir).affinity_ci
    rows = _read_rows(path, "`taskonomy ahp` writes it")
    header = [h.strip() for h in rows[0]] if rows else []
    expected = ["target", "transfer", "order", "affinity", "low", "high"]
    if header != expected:
        raise TaskonomyError(f"{path}: expected the columns {', '.join(expected)}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(expected):
            raise TaskonomyError(f"{path} line {line}: expected {len(expected)} cells, got {len(row)}")
        where = f"{path} line {line}"
        out.append({"target": row[0], "transfer": row[1], "order": int(_number(row[2], where, "order")),
                    **{k: _number(v, where, k) for k, v in zip(expected[3:], row[3:], strict=True)}})
    return out


@dataclass(frozen=True)
class SummaryRow:
    """ahp_summary.csv, one target: AHP's consistency, the power iteration, and the top first-order source."""

    target: str
    transfers: int
    images: int
    lambda_max: float
    consistency_ratio: float
    iterations: int
    converged: bool
    top_source: str | None
    top_source_affinity: float  # NaN without a first-order transfer
    top_source_stability: float  # share of bootstrap resamples where it stays on top; NaN without bootstrap


_SUMMARY = [f for f in SummaryRow.__dataclass_fields__]


def write_summary(path: Path, rows: list[SummaryRow]) -> Path:
    return write_csv(path, _SUMMARY, [[getattr(r, f) for f in _SUMMARY] for r in rows])


def read_summary(run_dir: str | os.PathLike) -> list[SummaryRow]:
    path = RunFolder(run_dir).ahp_summary
    rows = _read_rows(path, "`taskonomy ahp` writes it")
    if not rows or [h.strip() for h in rows[0]] != _SUMMARY:
        raise TaskonomyError(f"{path}: expected the columns {', '.join(_SUMMARY)}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        where = f"{path} line {line}"
        if len(row) != len(_SUMMARY):
            raise TaskonomyError(f"{where}: expected {len(_SUMMARY)} cells, got {len(row)}")
        cell = dict(zip(_SUMMARY, row, strict=True))
        try:
            out.append(SummaryRow(cell["target"], int(cell["transfers"]), int(cell["images"]),
                                  _number(cell["lambda_max"], where, "lambda_max"),
                                  _number(cell["consistency_ratio"], where, "consistency_ratio"),
                                  int(cell["iterations"]), cell["converged"] == "True", cell["top_source"] or None,
                                  _number(cell["top_source_affinity"], where, "top_source_affinity"),
                                  _number(cell["top_source_stability"], where, "top_source_stability")))
        except ValueError as err:
            raise TaskonomyError(f"{where}: {err}") from None
    return out


# ---------------------------------------------------------------------------------------------------------------
# targets added from the feature cache: added_targets.json (their dictionary entries) and their labels


@dataclass(frozen=True)
class AddedTarget:
    """A target added to a run from the cache: its dictionary entry, where its labels came from, the hash of
    those labels and of the data.zarr they are aligned with (one label per image, every split)."""

    task: Any  # taskonomy.tasks.Task
    labels_hash: str
    data_hash: str
    origin: str

    def labels(self, run_dir: str | os.PathLike) -> np.ndarray:
        """The labels kept in the run folder, checked against their recorded hash."""
        path = RunFolder(run_dir).added_labels_file(self.task.name)
        try:
            labels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise TaskonomyError(f"{path}: the labels of added target {self.task.name} are unreadable "
                                 f"({type(err).__name__}); add it again with `taskonomy add-target "
                                 f"{self.task.name} --labels FILE --loss {self.task.loss} --force`") from None
        if labels_hash(labels) != self.labels_hash:
            raise TaskonomyError(f"{path}: the labels of added target {self.task.name} changed since it was added; "
                                 f"add it again with `taskonomy add-target {self.task.name} --labels FILE --loss "
                                 f"{self.task.loss} --force`")
        return labels


_TASK_FIELDS = ("name", "group", "modality", "head", "channels", "loss", "label", "label_dtype", "num_classes", "role")


def labels_hash(labels: np.ndarray) -> str:
    """Identity of a label array: its bytes, shape and dtype."""
    import hashlib

    labels = np.ascontiguousarray(labels)
    digest = hashlib.sha256(labels.tobytes())
    digest.update(f"{labels.shape}{labels.dtype.str}".encode())
    return digest.hexdigest()[:16]


def read_added_targets(run_dir: str | os.PathLike) -> list[AddedTarget]:
    """The targets added to this run folder, in the order they were added ([] when none)."""
    from taskonomy.tasks import Task

    path = RunFolder(run_dir).added_targets
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
        return [AddedTarget(Task(**{k: e["task"][k] for k in _TASK_FIELDS}), str(e["labels_hash"]),
                            str(e["data_hash"]), str(e["origin"])) for e in entries]
    except TaskonomyError as err:
        raise TaskonomyError(f"{path}: {err}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise TaskonomyError(f"{path} is unreadable ({type(err).__name__}); remove it and add the targets again "
                             f"with `taskonomy add-target`") from None


def write_added_target(run_dir: str | os.PathLike, added: AddedTarget, labels: np.ndarray) -> None:
    """Keep `labels` in the run folder and add (or replace) the target's entry; labels first, entry last."""
    run = RunFolder(run_dir)
    folder = run.added_labels
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{added.task.name}.npy.tmp"
        with tmp.open("wb") as handle:
            np.save(handle, labels)
        os.replace(tmp, run.added_labels_file(added.task.name))
    except OSError as err:
        raise TaskonomyError(f"cannot write {folder}: {err.strerror or err}") from None
    _write_entries(run, [a for a in read_added_targets(run.path) if a.task.name != added.task.name] + [added])


def _write_entries(run: RunFolder, entries: list[AddedTarget]) -> None:
    write_json(run.added_targets, [{"task": {k: getattr(a.task, k) for k in _TASK_FIELDS},
                                    "labels_hash": a.labels_hash, "data_hash": a.data_hash, "origin": a.origin}
                                   for a in entries])


def remove_added_target(run_dir: str | os.PathLike, name: str) -> None:
    """Undo write_added_target (an add-target that failed before its rows were written)."""
    run = RunFolder(run_dir)
    entries = [a for a in read_added_targets(run.path) if a.task.name != name]
    if entries:
        _write_entries(run, entries)
    else:
        run.added_targets.unlink(missing_ok=True)
    run.added_labels_file(name).unlink(missing_ok=True)
    if run.added_labels.is_dir() and not any(run.added_labels.iterdir()):
        run.added_labels.rmdir()
