"""Stage II as the CLI runs it: every transfer to every target, per-image test losses into transfers.zarr.

    taskonomy --config configs/tiny.yaml transfer [--scheduler tcp://host:8786]

Per target, the rows of /<target>/losses [n_transfers, n_test] are, in order: `full` (the target's stage I
network, its per-image test losses saved at training time), every first-order source except the target
itself (controls and loaded Taskonomy encoders included), the higher orders of the paper's beam search
(for order k <= beam, every k-subset of the target's `beam` best first-order sources by mean VALIDATION
loss; for larger k the top k only), and `scratch` (the stage I architecture trained from scratch on the
transfer split). Row names are the sources joined by "+", sorted (see transfer_name).

Honest selection: `transfer.validation` (default 0.2) of the transfer split's scenes, whole scenes chosen
by the run's seed (extract.stage1.validation_mask), are held out from readout training; /<target>/validation
[n_transfers, n_validation] holds every readout's per-image losses on them (NaN for full and scratch) and the
root attribute `validation_index` their data.zarr indices. The beam ranks on these, never on the test
images that AHP and evaluation score; the test labels change no beam set (tests/transfer/test_validation.py).

Every row carries a stamp of what determines it (code version, data, readout config, seed, label
scaler, its sources' encoder hashes). A row whose stamp is unchanged is kept, so adding a source or an
order later trains only what is new. A target is written whole and marked complete last; a run killed
midway keeps the finished targets, and the first-order rows of the others, and redoes the rest.

Screening (`transfer.screen`, transfer/screen.py): only the first-order sources and beam sets a transferability
estimator ranks best are trained, the rest recorded as screened out; unset, every row above is trained.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import Config, content_hash
from taskonomy.artifacts import AddedTarget, existing_rows, read_added_targets, transfer_name, write_target_losses
from taskonomy.runfolder import RunFolder
from taskonomy.storage import locate
from taskonomy.store import mark_complete, open_group
from taskonomy.transfer.screen import open_screen, write_screen_table
from taskonomy.transfer.train import ReadoutJob, ReadoutLosses, TrainReport, train_readouts
from taskonomy.workers import job_workers, run_jobs

__all__ = ["TRANSFER_VERSION", "TransferOutcome", "beam_transfers", "run_transfer", "stage_seed", "transfer_name",
           "transfer_targets", "validation_part"]

# 2: dense readouts decode with upsampling convs; 3: a lone readout trains beside a companion; 4: readouts train
# on the transfer split less its validation scenes, store their validation losses, and the beam ranks on those
TRANSFER_VERSION = "4"


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
    kept: dict[str, tuple[str, np.ndarray, np.ndarray | None]]  # row -> (stamp, test, validation) stored before
    rows: dict[str, tuple[str, int, np.ndarray]]  # row name -> (stamp, order, test losses) of this run
    labels: np.ndarray | None = None  # one per data.zarr image for a target added from the cache, else None
    validation: dict[str, np.ndarray] = field(default_factory=dict)  # readout row -> its validation losses
    wanted: list[str] = field(default_factory=list)  # readout rows in the order asked for: the order written
    screened_out: list[str] = field(default_factory=list)  # rows transfer.screen left untrained

    def n_validation(self) -> int:
        return int(np.count_nonzero(self.job.validation))

    def reusable(self, name: str, stamp: str) -> bool:
        """A kept readout row: the same stamp, and its validation losses stored with it (else it retrains)."""
        kept = self.kept.get(name)
        return kept is not None and kept[0] == stamp and kept[2] is not None and \
            len(kept[2]) == self.n_validation() and bool(np.isfinite(kept[2]).all())


@dataclass(frozen=True)
class TransferOutcome:
    """What stage II did per target: rows trained now (readouts, scratch, an added target's network), kept and
    (with transfer.screen) screened out; `screen_seconds`: the estimator's reading and scoring."""

    trained: dict[str, int]
    kept: dict[str, int]
    screened: dict[str, int] = field(default_factory=dict)
    screen_seconds: float = 0.0

    def describe(self, target: str) -> str:
        trained, kept, screened = self.trained.get(target, 0), self.kept.get(target, 0), self.screened.get(target, 0)
        out = f"{trained} transfers trained, {kept} kept" if trained else "up to date"
        return out + (f", {screened} screened out" if screened else "")

    @property
    def total_trained(self) -> int:
        return sum(self.trained.values())


def stage_seed(config: Config) -> int:
    """The seed of stage II's readouts and scratch networks: `transfer.seed`, else the run's seed."""
    return config.seed if config.transfer.seed is None else config.transfer.seed


def _target_seed(seed: int, target: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"transfer/{target}".encode())) % 2**31


def _split_labels(data: zarr.Group, target: str, split: str, labels: np.ndarray | None = None) -> np.ndarray:
    index = data[f"splits/{split}"][:]
    if labels is not None:
        return labels[index]
    return np.asarray(data[f"labels/{target}"].get_orthogonal_selection((index,)))


def _row_stamp(base: str, sources: tuple[str, ...], encoders: dict[str, str]) -> str:
    return content_hash(base, [(s, encoders[s]) for s in sorted(sources)])


def _write_target(store: zarr.Group, target: _Target, complete: bool) -> None:
    """(Re)write /<target> whole: full first, then by order, scratch last; `complete` only once every order is in."""
    place = {name: i for i, name in enumerate(target.wanted)}  # kept or retrained, a row keeps its place
    order = sorted(target.rows.items(), key=lambda kv: (kv[0] == "scratch", kv[1][1] if kv[0] != "full" else -1,
                                                        place.get(kv[0], -1)))
    none = np.full(target.n_validation(), np.nan)
    write_target_losses(store, target.name, [(name, row[0], row[2], target.validation.get(name, none))
                                             for name, row in order], target.base, target.job.task.loss, complete,
                        target.screened_out)


def _run_jobs(features: Path, jobs: list[ReadoutJob], config: Config, size: int, block: int,
              progress: bool) -> tuple[dict[str, ReadoutLosses], TrainReport]:
    """Train one job per target: side by side in this process (one per core, on one thread each: see
    taskonomy.workers), or one job per target on a dask.distributed cluster (taskonomy.cluster: transfer.scheduler,
    else scheduler). A job's losses are the same either way."""
    if not jobs:
        return {}, TrainReport()
    from taskonomy.cluster import scheduler_of

    root = open_group(features, "r")  # a folder, or a StoreURL under storage.url
    address = scheduler_of(config, "transfer")
    if not address:
        workers = job_workers(config.threads)

        def train(job: ReadoutJob):
            return train_readouts(root, [job], config.transfer, size, stage_seed(config), block,
                                  progress and workers == 1)

        parts = run_jobs(train, jobs, workers, cost=_readout_cost,
                         desc=f"readouts of {len(jobs)} targets" if progress else None)
    else:
        from taskonomy.cluster import run_remote

        dumped = config.model_dump(mode="json")
        parts = run_remote(address, _remote_job, [(str(features), job, dumped, size, block) for job in jobs],
                           names=[job.target for job in jobs], cost=lambda i: _readout_cost(jobs[i]),
                           desc=f"readouts of {len(jobs)} targets" if progress else None)
    out, report = {}, TrainReport()
    for losses, part in parts:
        out.update(losses)
        report.seconds += part.seconds
        report.train_seconds += part.train_seconds
        report.wait_seconds += part.wait_seconds
        report.samples += part.samples
    return out, report


def _readout_cost(job: ReadoutJob) -> float:
    """Relative work of a job: its readouts, a dense one ~3x a global one, a pair reading two views."""
    head = job.task.head
    return len(job.transfers) * (3.0 if head == "dense" else 1.0) * (2.0 if head == "pair" else 1.0)


def _remote_job(features: str, job: ReadoutJob, config: dict[str, Any], size: int, block: int):
    """One target's readouts on a dask.distributed worker, on one thread as in process (taskonomy.cluster caps
    it: the same losses)."""
    config = Config(**config)
    return train_readouts(open_group(features, "r", config.storage), [job], config.transfer, size,
                          stage_seed(config), block)  # features: a path or URL; options from the config


def _full_row(target: _Target, checkpoint: dict | None) -> None:
    """The `full` row: the target's stage I network's per-image test losses, saved at training time."""
    if checkpoint is not None and "test_losses" in checkpoint:
        target.rows["full"] = (content_hash(target.base, "full", checkpoint["hash"]), 0,
                               np.asarray(checkpoint["test_losses"], np.float64))


def _scratch_rows(targets: list[_Target], data: zarr.Group, config: Config, device, progress: bool) -> dict[str, int]:
    """Fill every target's `scratch` row: kept when its stamp is unchanged, else trained now, the targets' networks
    side by side (taskonomy.workers); rows trained per target."""
    from taskonomy.extract.stage1 import network_cost, test_losses, train_task

    if not config.transfer.scratch:
        return {}
    stamp = {t.name: content_hash(t.base, "scratch", config.train.stamp(t.name)) for t in targets}
    todo = []
    for target in targets:
        if target.kept.get("scratch", ("",))[0] == stamp[target.name]:
            target.rows["scratch"] = (stamp[target.name], 0, target.kept["scratch"][1])
        else:
            todo.append(target)
    workers = job_workers(config.threads, device)

    def train(target: _Target) -> np.ndarray:
        task = target.job.task
        result = train_task(task, data, config.train, target.job.seed, device, progress=progress and workers == 1,
                            split="transfer", scaler=target.job.scaler, labels=target.labels)
        return test_losses(task, result.network, target.job.scaler, data, "test", device, labels=target.labels)

    def keep(i: int, losses: np.ndarray) -> None:
        todo[i].rows["scratch"] = (stamp[todo[i].name], 0, losses)

    run_jobs(train, todo, workers, cost=lambda t: network_cost(t.job.task) * config.train.epochs_for(t.name), done=keep,
             desc="scratch networks" if progress else None)
    return {t.name: 1 for t in todo}


def _train_rows(targets: list[_Target], wanted: dict[str, list[tuple[str, ...]]], encoders: dict[str, str],
                features: Path, config: Config, size: int, block: int,
                progress: bool) -> tuple[dict[str, int], TrainReport]:
    """Train the wanted transfers whose stamps are not kept; fill every target's rows; rows trained per target."""
    jobs = []
    for target in targets:
        missing = []
        for sources in wanted[target.name]:
            name, stamp = transfer_name(sources), _row_stamp(target.base, sources, encoders)
            target.wanted.append(name)
            if target.reusable(name, stamp):
                target.rows[name] = (stamp, len(sources), target.kept[name][1])
                target.validation[name] = target.kept[name][2]
            else:
                missing.append(sources)
        if missing:
            jobs.append(ReadoutJob(target.name, missing, target.job.labels_transfer, target.job.labels_test,
                                   target.job.scaler, target.job.seed, target.job.task, target.job.validation))
    losses, report = _run_jobs(features, jobs, config, size, block, progress)
    for job in jobs:
        target = next(t for t in targets if t.name == job.target)
        result = losses[job.target]
        for sources, test, validation in zip(job.transfers, result.test, result.validation, strict=True):
            name = transfer_name(sources)
            target.rows[name] = (_row_stamp(target.base, sources, encoders), len(sources), test)
            target.validation[name] = validation
    return {job.target: len(job.transfers) for job in jobs}, report


def _cache_facts(features: zarr.Group, sources: list[str]) -> tuple[dict[str, str], int]:
    """(encoder hash per source, images per feature block): what every row stamp and batch order depend on."""
    encoders = {s: str(features[s].attrs["encoder_hash"]) for s in sources}
    return encoders, max(features[f"{s}/transfer"].chunks[0] for s in sources)


def _readout_config(config: Config) -> dict[str, Any]:
    """The transfer settings that change a readout's losses (not which readouts are trained, nor where; the seed
    enters every stamp as the target's seed, so a run with transfer.seed unset keeps its stamps)."""
    return config.transfer.model_dump(mode="json", exclude={"targets", "scheduler", "max_order", "beam", "scratch",
                                                            "screen", "seed"})


def _all_orders(targets: list[_Target], first: dict[str, list[tuple[str, ...]]], encoders: dict[str, str],
                config: Config, features: Path, size: int, block: int, progress: bool,
                after_first=None, screen=None) -> tuple[dict[str, int], float]:
    """First order, then the beam from its mean VALIDATION losses (never the test split's, which AHP and
    evaluation score), of its sets only those `screen` keeps (transfer.screen.Screen; None: all); (rows trained
    per target, data-wait share)."""
    trained, report = _train_rows(targets, first, encoders, features, config, size, block, progress)
    if after_first:
        after_first()
    higher = {}
    for target in targets:
        means = {s[0]: float(target.validation[s[0]].mean()) for s in first[target.name]} \
            if config.transfer.max_order > 1 else {}
        higher[target.name] = beam_transfers(sorted(means, key=means.get), config.transfer.max_order,
                                             config.transfer.beam)
        if screen is not None:
            higher[target.name] = screen.higher(target.name, higher[target.name])
            target.screened_out = screen.screened_out(target.name)
    more, report2 = _train_rows(targets, higher, encoders, features, config, size, block, progress)
    for name, count in more.items():
        trained[name] = trained.get(name, 0) + count
    wait = (report.wait_seconds + report2.wait_seconds) / max(report.train_seconds + report2.train_seconds, 1e-9)
    return trained, wait


def _targets(config: Config, run: RunFolder, data_tasks: list[str], data_id: str,
             only: list[str] | None) -> tuple[list[str], dict[str, AddedTarget]]:
    """(every target of the run: the config's, then those added from the cache; the added ones by name).
    An added target whose labels belong to another data.zarr is refused by name."""
    added = {a.task.name: a for a in read_added_targets(run.path)}
    names = [n for n in transfer_targets(config, data_tasks) if n not in added] + list(added)
    for name in only or []:
        if name not in names:
            raise TaskonomyError(f"{name!r} is not a target of {run.path}")
    for name, entry in added.items():
        if entry.data_hash != data_id and (only is None or name in only):
            raise TaskonomyError(f"added target {name} was labelled for another data.zarr (data hash "
                                 f"{entry.data_hash}, now {data_id}); label the new images and add it again with "
                                 f"`taskonomy add-target {name} --labels FILE --loss {entry.task.loss} --force`")
    return names, added


def validation_part(data: zarr.Group, config: Config) -> np.ndarray:
    """Mask over the transfer split: its validation part, `transfer.validation` of its scenes (whole scenes,
    chosen by the run's seed). With higher orders to rank, an empty part is refused in one line."""
    from taskonomy.extract.stage1 import validation_mask

    held = validation_mask(data, config.transfer.validation, config.seed, "transfer")
    if config.transfer.max_order > 1 and not held.any():
        scenes = len(np.unique(data["meta/scene"].get_orthogonal_selection((data["splits/transfer"][:],)))) \
            if "meta/scene" in data else 0
        raise TaskonomyError(f"transfer.validation={config.transfer.validation} holds out none of the transfer "
                             f"split's {scenes} scenes, and the beam ranks on them; use more scenes "
                             f"(data.n_scenes, data.splits.transfer) or transfer.max_order 1")
    return held


def require_scheduler(config: Config) -> None:
    """A configured scheduler needs the optional distributed package: refused in one line before any work."""
    import importlib.util

    if config.transfer.scheduler and importlib.util.find_spec("distributed") is None:
        raise TaskonomyError("transfer.scheduler needs the distributed package: pip install -e '.[distributed]'")


def run_transfer(config: Config, run_dir: str | Path, force: bool = False, progress: bool = True,
                 only: list[str] | None = None, store_path: Any = None) -> TransferOutcome:
    """Fill transfers.zarr for every target (or the targets `only`, leaving the others as they are).

    `store_path`: another loss store to fill instead (a second readout seed's, beside the first: stability);
    it keeps its own stamps, and screen.csv is left as the run's own stage II wrote it."""
    from taskonomy.extract.checkpoints import load_checkpoint
    from taskonomy.extract.features import open_features
    from taskonomy.extract.pipeline import added_network, source_names
    from taskonomy.torchutil import fit_scaler, resolve_device
    from taskonomy.scenes.dataset import data_hash, open_data

    require_scheduler(config)
    run = RunFolder(run_dir, config.storage)  # the stores in the folder or under storage.url
    data = open_data(run.data, config)
    data_tasks, data_id = list(data.attrs["tasks"]), data_hash(data)
    held = validation_part(data, config)
    sources = source_names(config, data_tasks)
    features = open_features(run.features, sources, data_id)
    encoders, block = _cache_facts(features, sources)
    size, device = int(data.attrs["image_size"]), resolve_device(config.train.device)
    readout_cfg = _readout_config(config)
    names, added = _targets(config, run, data_tasks, data_id, only)
    todo = names if only is None else list(only)
    trained = dict.fromkeys(todo, 0)
    # every checkpoint is read (an added target's network trained) before the store is touched: a refused one
    # leaves a finished store as it was
    labels = {name: added[name].labels(run.path) for name in todo if name in added}
    checkpoints = {}
    for name in todo:
        if name in added:
            checkpoints[name], fresh = added_network(config, run.path, added[name], labels[name], data, device,
                                                     progress)
            trained[name] += fresh
        else:
            path = run.checkpoint(name)
            checkpoints[name] = load_checkpoint(path) if path.is_file() else None
    # transfer.screen's estimator reads the cache and scores the first order before anything is written
    screen = open_screen(config, data, features, sources, {n: added[n].task if n in added else registry.get(n)
                                                           for n in todo}, labels, held) \
        if config.transfer.screen else None
    store_path = run.transfers if store_path is None else locate(store_path)
    store = open_group(store_path, "a")
    if force or store.attrs.get("data_hash") != data_id:
        store = open_group(store_path, "w")
    present = set(store.attrs.get("targets", [])) | set(todo)
    # set with the first write: until a row is written, a finished store stays as it was (and complete)
    root_attrs = {"data_hash": data_id, "complete": False, "targets": [n for n in names if n in present],
                  "sources": sources, "test_index": [int(i) for i in data["splits/test"][:]],
                  "validation_index": [int(i) for i in data["splits/transfer"][:][held]],
                  "loss": {n: (added[n].task if n in added else registry.get(n)).loss for n in names},
                  **({"screen": config.transfer.screen.model_dump(mode="json")} if screen else {}),
                  **({"readout_seed": config.transfer.seed} if config.transfer.seed is not None else {})}
    targets = []
    for name in todo:
        task = added[name].task if name in added else registry.get(name)
        checkpoint, own = checkpoints[name], labels.get(name)
        scaler = checkpoint["scaler"] if checkpoint else fit_scaler(task, _split_labels(data, name, "train",
                                                                                        own)).as_dict()
        seed = _target_seed(stage_seed(config), name)
        identity = (added[name].labels_hash,) if name in added else ()  # an added target's labels are an input
        base = content_hash(TRANSFER_VERSION, data_id, readout_cfg, seed, name, scaler, block, *identity)
        job = ReadoutJob(name, [], _split_labels(data, name, "transfer", own), _split_labels(data, name, "test", own),
                         scaler, seed, task, held)
        target = _Target(name, job, base, {} if force else existing_rows(store, name), {}, own)
        _full_row(target, checkpoint)
        targets.append(target)
    for name, count in _scratch_rows(targets, data, config, device, progress).items():
        trained[name] += count
    first = {t.name: [(s,) for s in sources if s != t.name] for t in targets}
    if screen is not None:
        for target in targets:
            first[target.name] = screen.first_order(target.name, first[target.name])
            target.screened_out = screen.screened_out(target.name)

    def write(complete: bool) -> None:
        store.attrs.update(root_attrs)
        if screen is None and "screen" in store.attrs:  # an unscreened store is as it always was
            del store.attrs["screen"]
        if config.transfer.seed is None and "readout_seed" in store.attrs:
            del store.attrs["readout_seed"]
        for target in targets:
            _write_target(store, target, complete=complete)

    rows, wait = _all_orders(targets, first, encoders, config, run.features, size, block, progress,
                             after_first=lambda: write(complete=False), screen=screen)
    write(complete=True)
    for name, count in rows.items():
        trained[name] += count
    store.attrs["wait_share"] = wait
    if store_path == run.transfers:
        write_screen_table(run.path, screen, todo, names)
    mark_complete(store)
    return TransferOutcome(trained, {t.name: len(t.rows) - min(trained[t.name], len(t.rows)) for t in targets},
                           {t.name: len(t.screened_out) for t in targets}, screen.seconds if screen else 0.0)

