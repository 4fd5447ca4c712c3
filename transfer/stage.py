"""Stage II as the CLI runs it: every transfer to every target, per-image test losses into transfers.zarr.

    taskonomy --config configs/tiny.yaml transfer [--scheduler tcp://host:8786]

Per target, the rows of /<target>/losses [n_transfers, n_test] are, in order: `full` (the target's stage I
network, its per-image test losses saved at training time), every first-order source except the target
itself (controls and loaded Taskonomy encoders included), the higher orders of the paper's beam search
(for order k <= beam, every k-subset of the target's `beam` best first-order sources by mean test loss;
for larger k the top k only), and `scratch` (the stage I architecture trained from scratch on the
transfer split). Row names are the sources joined by "+", sorted (see transfer_name).

Every row carries a stamp of what determines it (code version, data, readout config, seed, label
scaler, its sources' encoder hashes). A row whose stamp is unchanged is kept, so adding a source or an
order later trains only what is new. A target is written whole and marked complete last; a run killed
midway keeps the finished targets, and the first-order rows of the others, and redoes the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import Config, content_hash
from taskonomy.store import codecs, mark_complete
from taskonomy.transfer.train import ReadoutJob, TrainReport, train_readouts

__all__ = ["STORE", "TRANSFER_VERSION", "beam_transfers", "open_transfers", "run_transfer", "transfer_name",
           "transfer_targets"]

TRANSFER_VERSION = "2"  # 2: dense readouts decode with upsampling convs
STORE = "transfers.zarr"


def transfer_name(sources: tuple[str, ...] | list[str]) -> str:
    """The canonical row name of a transfer: its sources sorted and joined by '+' (names hold no '+')."""
    return "+".join(sorted(sources))


def beam_transfers(ranked: list[str], max_order: int, beam: int = 5) -> list[tuple[str, ...]]:
    """Higher-order transfers (order 2..max_order) from first-order sources ranked best first."""
    out = []
    for k in range(2, min(max_order, len(ranked)) + 1):
        out += [tuple(sorted(c)) for c in itertools.combinations(ranked[:beam], k)] if k <= beam else \
            [tuple(sorted(ranked[:k]))]
    return out


def transfer_targets(config: Config, data_tasks: list[str]) -> list[str]:
    """The targets of stage II: transfer.targets, or every data task that can be a target."""
    if config.transfer.targets == "all":
        return [t for t in data_tasks if registry.get(t).is_target]
    wanted = [registry.get(t).name for t in config.transfer.targets]
    missing = [t for t in wanted if t not in data_tasks]
    if missing:
        raise TaskonomyError(f"transfer.targets: {', '.join(missing)} not in data.zarr; add them to data.tasks")
    return wanted


@dataclass
class _Target:
    name: str
    job: ReadoutJob
    base: str  # stamp of everything but the sources
    kept: dict[str, tuple[str, np.ndarray]]  # row name -> (stamp, losses) reusable from an earlier run
    rows: dict[str, tuple[str, int, np.ndarray]]  # row name -> (stamp, order, losses) of this run


def _target_seed(seed: int, target: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"transfer/{target}".encode())) % 2**31


def _split_labels(data: zarr.Group, target: str, split: str) -> np.ndarray:
    return np.asarray(data[f"labels/{target}"].get_orthogonal_selection((data[f"splits/{split}"][:],)))


def _existing_rows(store: zarr.Group | None, target: str) -> dict[str, tuple[str, np.ndarray]]:
    """Rows of an earlier run of `target` that were fully written (first order at least), by name."""
    try:
        group = store[target]
        names, stamps = group.attrs["transfers"], group.attrs["stamps"]
        if not group.attrs.get("rows_written"):
            return {}
        losses = np.asarray(group["losses"][:])
    except Exception:  # missing, half-written or garbled: nothing to reuse
        return {}
    return {n: (s, losses[i]) for i, (n, s) in enumerate(zip(names, stamps))}


def _row_stamp(base: str, sources: tuple[str, ...], encoders: dict[str, str]) -> str:
    return content_hash(base, [(s, encoders[s]) for s in sorted(sources)])


def _write_target(store: zarr.Group, target: _Target, complete: bool, loss: str) -> None:
    """(Re)write /<target> whole; `complete` only once every order is in."""
    order = sorted(target.rows.items(), key=lambda kv: (kv[0] == "scratch", kv[1][1] if kv[0] != "full" else -1))
    losses = np.stack([r[2] for _, r in order]).astype(np.float64)
    group = store.create_group(target.name, overwrite=True)
    array = group.create_array("losses", shape=losses.shape, dtype="float64", chunks=losses.shape, **codecs())
    array[...] = losses
    group.attrs.update({"transfers": [n for n, _ in order], "orders": [r[1] for _, r in order],
                        "stamps": [r[0] for _, r in order], "stamp": target.base, "loss": loss,
                        "rows_written": True, "complete": complete})


def _run_jobs(features: Path, jobs: list[ReadoutJob], config: Config, size: int, block: int,
              progress: bool) -> tuple[dict[str, np.ndarray], TrainReport]:
    """Train jobs in this process, or one job per target on a dask.distributed cluster."""
    if not jobs:
        return {}, TrainReport()
    root = zarr.open_group(str(features), mode="r")
    if not config.transfer.scheduler:
        return train_readouts(root, jobs, config.transfer, size, config.seed, block, progress)
    from distributed import Client

    with Client(config.transfer.scheduler, timeout="30s") as client:
        futures = [client.submit(_remote_job, str(features), job, config.model_dump(mode="json"), size, block,
                                 pure=False) for job in jobs]
        out, report = {}, TrainReport()
        for losses, part in client.gather(futures):
            out.update(losses)
            report.seconds += part.seconds
            report.train_seconds += part.train_seconds
            report.wait_seconds += part.wait_seconds
            report.samples += part.samples
    return out, report


def _remote_job(features: str, job: ReadoutJob, config: dict[str, Any], size: int, block: int):
    """One target's readouts on a dask.distributed worker, with the run's thread cap."""
    from taskonomy.runtime import cap_threads

    config = Config(**config)
    cap_threads(config.threads or 1)
    return train_readouts(zarr.open_group(features, mode="r"), [job], config.transfer, size, config.seed, block)


def _full_and_scratch(target: _Target, data: zarr.Group, config: Config, device,
                      checkpoint: dict | None, progress: bool) -> int:
    """Fill the `full` row (saved at stage I) and the `scratch` row (trained now unless kept); rows trained."""
    from taskonomy.extract.stage1 import test_losses, train_task

    if checkpoint is not None and "test_losses" in checkpoint:
        target.rows["full"] = (content_hash(target.base, "full", checkpoint["hash"]), 0,
                               np.asarray(checkpoint["test_losses"], np.float64))
    if not config.transfer.scratch:
        return 0
    stamp = content_hash(target.base, "scratch", config.train.model_dump(mode="json", exclude={"tasks", "device"}))
    if target.kept.get("scratch", ("",))[0] == stamp:
        target.rows["scratch"] = (stamp, 0, target.kept["scratch"][1])
        return 0
    result = train_task(target.name, data, config.train, target.job.seed, device, progress=progress,
                        split="transfer", scaler=target.job.scaler)
    target.rows["scratch"] = (stamp, 0, test_losses(target.name, result.network, target.job.scaler, data, "test",
                                                   device))
    return 1


def _train_rows(targets: list[_Target], wanted: dict[str, list[tuple[str, ...]]], encoders: dict[str, str],
                features: Path, config: Config, size: int, block: int,
                progress: bool) -> tuple[dict[str, int], TrainReport]:
    """Train the wanted transfers whose stamps are not kept; fill every target's rows; rows trained per target."""
    jobs = []
    for target in targets:
        missing = []
        for sources in wanted[target.name]:
            name, stamp = transfer_name(sources), _row_stamp(target.base, sources, encoders)
            if target.kept.get(name, ("",))[0] == stamp:
                target.rows[name] = (stamp, len(sources), target.kept[name][1])
            else:
                missing.append(sources)
        if missing:
            jobs.append(ReadoutJob(target.name, missing, target.job.labels_transfer, target.job.labels_test,
                                   target.job.scaler, target.job.seed))
    losses, report = _run_jobs(features, jobs, config, size, block, progress)
    for job in jobs:
        target = next(t for t in targets if t.name == job.target)
        for sources, row in zip(job.transfers, losses[job.target]):
            target.rows[transfer_name(sources)] = (_row_stamp(target.base, sources, encoders), len(sources), row)
    return {job.target: len(job.transfers) for job in jobs}, report


def _cache_facts(features: zarr.Group, sources: list[str]) -> tuple[dict[str, str], int]:
    """(encoder hash per source, images per feature block): what every row stamp and batch order depend on."""
    encoders = {s: str(features[s].attrs["encoder_hash"]) for s in sources}
    return encoders, max(features[f"{s}/transfer"].chunks[0] for s in sources)


def _readout_config(config: Config) -> dict[str, Any]:
    """The transfer settings that change a readout's losses (not which readouts are trained, nor where)."""
    return config.transfer.model_dump(mode="json", exclude={"targets", "scheduler", "max_order", "beam", "scratch"})


def _all_orders(targets: list[_Target], first: dict[str, list[tuple[str, ...]]], encoders: dict[str, str],
                config: Config, features: Path, size: int, block: int, progress: bool,
                after_first=None) -> tuple[dict[str, int], float]:
    """First order, then the beam from its mean test losses; (rows trained per target, data-wait share)."""
    trained, report = _train_rows(targets, first, encoders, features, config, size, block, progress)
    if after_first:
        after_first()
    higher = {}
    for target in targets:
        means = {s[0]: float(target.rows[s[0]][2].mean()) for s in first[target.name]}
        higher[target.name] = beam_transfers(sorted(means, key=means.get), config.transfer.max_order,
                                             config.transfer.beam)
    more, report2 = _train_rows(targets, higher, encoders, features, config, size, block, progress)
    for name, count in more.items():
        trained[name] = trained.get(name, 0) + count
    wait = (report.wait_seconds + report2.wait_seconds) / max(report.train_seconds + report2.train_seconds, 1e-9)
    return trained, wait


def run_transfer(config: Config, run_dir: Path, force: bool = False, progress: bool = True) -> dict[str, str]:
    """Fill transfers.zarr for every target; returns {target: what was done}."""
    from taskonomy.extract.checkpoints import checkpoint_path, load_checkpoint
    from taskonomy.extract.features import open_features
    from taskonomy.extract.pipeline import source_names
    from taskonomy.extract.stage1 import fit_scaler, resolve_device
    from taskonomy.scenes.dataset import data_hash, open_data

    run_dir = Path(run_dir)
    data = open_data(run_dir / "data.zarr", config)
    data_tasks, data_id = list(data.attrs["tasks"]), data_hash(data)
    sources = source_names(config, data_tasks)
    features = open_features(run_dir / "features.zarr", sources, data_id)
    encoders, block = _cache_facts(features, sources)
    size, device = int(data.attrs["image_size"]), resolve_device(config.train.device)
    readout_cfg = _readout_config(config)
    names = transfer_targets(config, data_tasks)
    # every checkpoint is read before the store is touched: a refused one leaves a finished store as it was
    ckpts = {name: checkpoint_path(run_dir, name) for name in names}
    checkpoints = {name: load_checkpoint(ckpt) if ckpt.is_file() else None for name, ckpt in ckpts.items()}
    path = run_dir / STORE
    store = zarr.open_group(str(path), mode="a")
    if force or store.attrs.get("data_hash") != data_id:
        store = zarr.open_group(str(path), mode="w")
    store.attrs.update({"data_hash": data_id, "complete": False, "targets": names,
                        "sources": sources, "test_index": [int(i) for i in data["splits/test"][:]],
                        "loss": {t: registry.get(t).loss for t in names}})
    targets, trained = [], dict.fromkeys(names, 0)
    for name in names:
        checkpoint = checkpoints[name]
        scaler = checkpoint["scaler"] if checkpoint else fit_scaler(registry.get(name),
                                                                    _split_labels(data, name, "train")).as_dict()
        seed = _target_seed(config.seed, name)
        base = content_hash(TRANSFER_VERSION, data_id, readout_cfg, seed, name, scaler, block)
        job = ReadoutJob(name, [], _split_labels(data, name, "transfer"), _split_labels(data, name, "test"),
                         scaler, seed)
        target = _Target(name, job, base, {} if force else _existing_rows(store, name), {})
        trained[name] += _full_and_scratch(target, data, config, device, checkpoint, progress)
        targets.append(target)
    first = {t.name: [(s,) for s in sources if s != t.name] for t in targets}

    def write(complete: bool) -> None:
        for target in targets:
            _write_target(store, target, complete=complete, loss=registry.get(target.name).loss)

    rows, wait = _all_orders(targets, first, encoders, config, run_dir / "features.zarr", size, block, progress,
                             after_first=lambda: write(complete=False))
    write(complete=True)
    for name, count in rows.items():
        trained[name] += count
    store.attrs["wait_share"] = wait
    mark_complete(store)
    return {t.name: (f"{trained[t.name]} transfers trained, {len(t.rows) - trained[t.name]} kept"
                     if trained[t.name] else "up to date") for t in targets}


def open_transfers(path: str | Path) -> zarr.Group:
    """transfers.zarr read-only; a target without `complete` is skipped by readers with a warning."""
    from taskonomy.store import open_complete

    return open_complete(path, "taskonomy transfer")


def run_added(config: Config, run_dir: Path, task: registry.Task, labels: np.ndarray, sources: list[str],
              store: zarr.Group, progress: bool = True) -> str:
    """Readouts of an added target from every cached source (first order, then the beam); appended whole."""
    from taskonomy.extract.stage1 import fit_scaler
    from taskonomy.scenes.dataset import data_hash, open_data

    data = open_data(run_dir / "data.zarr")
    features = zarr.open_group(str(run_dir / "features.zarr"), mode="r")
    encoders, block = _cache_facts(features, sources)
    split = {s: labels[data[f"splits/{s}"][:]] for s in ("train", "transfer", "test")}
    scaler = fit_scaler(task, split["train"]).as_dict()
    seed = _target_seed(config.seed, task.name)
    labels_hash = hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()
    base = content_hash(TRANSFER_VERSION, data_hash(data), _readout_config(config), seed, task.name, scaler,
                        block, labels_hash, labels.shape, str(labels.dtype))
    target = _Target(task.name, ReadoutJob(task.name, [], split["transfer"], split["test"], scaler, seed), base, {}, {})
    _all_orders([target], {task.name: [(s,) for s in sources]}, encoders, config, run_dir / "features.zarr",
                int(data.attrs["image_size"]), block, progress)
    writable = zarr.open_group(str(run_dir / STORE), mode="a")
    # a target replaced (--force) and killed midway must not be taken for a damaged store
    writable.attrs["arrays"] = {k: v for k, v in writable.attrs.get("arrays", {}).items()
                                if not k.startswith(f"{task.name}/")}
    _write_target(writable, target, complete=True, loss=task.loss)
    names = [t for t in writable.attrs["targets"] if t != task.name] + [task.name]
    writable.attrs.update({"targets": names, "loss": {**writable.attrs["loss"], task.name: task.loss},
                           "added": sorted({*writable.attrs.get("added", []), task.name})})
    mark_complete(writable)  # the inventory now lists the added target's losses
    return f"{len(target.rows)} transfers trained from the cache"
