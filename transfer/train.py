"""Train every readout of several targets from one pass over the cached features per epoch.

    losses, report = train_readouts(features_root, jobs, transfer_cfg, image_size)
    losses["normal"].test, losses["normal"].validation       # (G, n_test), (G, n_validation) float64

A job is one target with its list of transfers (tuples of sources) and the mask of the transfer split's
validation part (whole scenes, transfer.validation of them; the same mask for every job). Per epoch the
feature blocks of the transfer split are read once (Dask, one block ahead) and every job's readouts train
on each batch of the rest of it (the "fit" part); the readouts of one target are one grouped network
(readouts.py). Then the validation part and the test split are read once each and every readout gets its
per-image losses on both, in the target's scaled label space (the stage I scaler when the target has a
network, so `full`, `scratch` and readouts are comparable image by image). Selection (the beam's ranking,
the best first-order source) reads the validation losses; the test losses are for AHP and evaluation only.

Inputs of a readout: each source's features standardised per channel (transfer-split statistics),
clipped to +-5 sigma (as the original release did), resized to the target grid (image / 8) and
concatenated on channels for a higher-order transfer; a pair target reads both views of each source.
Inputs narrower than the widest transfer of the group are zero-padded (inert channels).

Determinism: the batch order depends only on the seed and the epoch, and each job's weights only on its
own seed, so a job trains to the same weights alone, with other jobs, or on a dask.distributed worker.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import TransferConfig
from taskonomy.torchutil import EVAL_BATCH, LabelScaler, deterministic
from taskonomy.losses import get_loss
from taskonomy.transfer.feed import FeatureFeed, channel_stats
from taskonomy.tasks import Task
from taskonomy.transfer.readouts import GroupedReadouts, build_readouts

__all__ = ["ReadoutJob", "ReadoutLosses", "TrainReport", "train_readouts"]

CLIP_SIGMA = 5.0


def readout_seed(seed: int, transfer: tuple[str, ...]) -> int:
    """The initialisation seed of one readout: its target's seed and its sources, nothing else."""
    return (seed * 1_000_003 + zlib.crc32("+".join(sorted(transfer)).encode())) % 2**31


@dataclass
class ReadoutJob:
    """The readouts of one target: its transfers, labels of both splits (stored dtype), label scaler and the
    validation mask over the transfer split (True: held out from training; None: nothing held out)."""

    target: str
    transfers: list[tuple[str, ...]]
    labels_transfer: np.ndarray
    labels_test: np.ndarray
    scaler: dict = field(default_factory=dict)
    seed: int = 0
    task: Task | None = None  # the target's dictionary entry; None = the registered task `target`. A target
    # added from the cache travels here, so a dask.distributed worker needs no registry of its own
    validation: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = registry.get(self.target)
        if self.validation is None:
            self.validation = np.zeros(len(self.labels_transfer), bool)


@dataclass(frozen=True)
class ReadoutLosses:
    """One job's per-image losses, a row per transfer in the job's order: on the test split and on the
    validation part of the transfer split."""

    test: np.ndarray  # (G, n_test) float64
    validation: np.ndarray  # (G, n_validation) float64


@dataclass
class TrainReport:
    seconds: float = 0.0  # everything: statistics, training, test losses
    train_seconds: float = 0.0  # the training loop alone
    wait_seconds: float = 0.0  # time the training loop waited for feature blocks
    samples: int = 0  # readout training samples: images x readouts x epochs

    @property
    def wait_share(self) -> float:
        return self.wait_seconds / self.train_seconds if self.train_seconds else 0.0


def _source_paths(source: str, target: Task, split: str) -> list[str]:
    """features.zarr arrays a readout into `target` reads from `source`: the view, and the second view of a pair."""
    pair = target.head == "pair"
    return [f"{source}/{split}"] + ([f"{source}/views/{target.name}/{split}"] if pair else [])


def _input_paths(job: ReadoutJob, split: str) -> list[str]:
    sources = dict.fromkeys(s for transfer in job.transfers for s in transfer)
    return [p for s in sources for p in _source_paths(s, job.task, split)]


def _standardise(block: np.ndarray, stats: tuple[np.ndarray, np.ndarray], grid: int) -> torch.Tensor:
    mean, std = (torch.from_numpy(v.astype(np.float32)).view(1, -1, 1, 1) for v in stats)
    x = ((torch.from_numpy(block) - mean) / std).clamp_(-CLIP_SIGMA, CLIP_SIGMA)
    if x.shape[-1] > grid:
        return F.adaptive_avg_pool2d(x, grid)
    if x.shape[-1] < grid:
        return F.interpolate(x, size=(grid, grid), mode="nearest")
    return x


class _Job:
    """A job's grouped readouts, optimiser and labels, ready to train."""

    def __init__(self, job: ReadoutJob, cfg: TransferConfig, channels: dict[str, int], grid: int, image_size: int,
                 steps: int):
        self.job, self.task = job, job.task
        self.pair = self.task.head == "pair"
        widths = [sum(channels[s] * (2 if self.pair else 1) for s in t) for t in job.transfers]
        self.width = max(widths)
        # a lone readout gets an idle companion: oneDNN computes a grouped convolution of any G >= 2 group by group
        # with the same kernel, but G = 1 takes the plain convolution, whose float sums differ in the last bit;
        # so a readout trains to the same bits alone (add-source) as among the others (a fresh transfer)
        self.n = len(job.transfers)
        spare = [(widths[0], readout_seed(job.seed, ("spare",)))] if self.n == 1 else []
        self.readouts: GroupedReadouts = build_readouts(self.task, self.n + len(spare), self.width, grid, image_size,
                                                        cfg.hidden)
        self.readouts.reset([readout_seed(job.seed, t) for t in job.transfers] + [s for _, s in spare],
                            widths + [w for w, _ in spare])
        self.optimizer = torch.optim.AdamW(self.readouts.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps)))
        self.scaler = LabelScaler.from_any(job.scaler)
        self.loss = get_loss(self.task.loss)

    def inputs(self, features: dict[str, torch.Tensor], split: str, rows: torch.Tensor) -> torch.Tensor:
        """(B, G, width, h, w): each transfer's sources concatenated, zero-padded to the group's width."""
        groups = []
        for transfer in self.job.transfers:
            parts = [features[p][rows] for s in transfer for p in _source_paths(s, self.task, split)]
            x = torch.cat(parts, dim=1)
            groups.append(F.pad(x, (0, 0, 0, 0, 0, self.width - x.shape[1])))
        groups += [torch.zeros_like(groups[0])] * (self.readouts.groups - self.n)  # the idle companion's input
        return torch.stack(groups, dim=1)

    def losses(self, z: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
        """Per-image, per-readout losses (B, G) of the readouts on inputs z against stored labels."""
        y = torch.from_numpy(labels.astype(np.int64) if self.task.label_dtype == "uint8" else labels)
        y = self.scaler.apply(y)
        pred = self.readouts(z)
        b, g = pred.shape[:2]
        target = y.unsqueeze(1).expand(b, g, *y.shape[1:]).flatten(0, 1)
        return self.loss(pred.flatten(0, 1), target).view(b, g)[:, :self.n]  # the idle companion never learns


def train_readouts(root: zarr.Group, jobs: list[ReadoutJob], cfg: TransferConfig, image_size: int,
                   seed: int = 0, block: int | None = None, progress: bool = False,
                   ) -> tuple[dict[str, ReadoutLosses], TrainReport]:
    """Train every job's readouts on the fit part of the transfer split; return {target: its test and
    validation losses}.

    `block`: images per feature block (default: the longest chunk among the arrays read); pass the same
    value to get the same batches whatever the jobs read. Every job holds out the same validation mask.
    """
    from tqdm import tqdm

    start, report = time.perf_counter(), TrainReport()
    if not jobs:
        return {}, report
    held = jobs[0].validation
    if any(not np.array_equal(job.validation, held) for job in jobs):
        raise TaskonomyError("readout jobs trained together must hold out the same validation images")
    train_paths = list(dict.fromkeys(p for job in jobs for p in _input_paths(job, "transfer")))
    stats = channel_stats(root, train_paths)
    channels = {p.split("/")[0]: len(m) for p, (m, _) in stats.items()}
    grid = image_size // 8
    feed = FeatureFeed(root, train_paths, block)
    if len(held) != feed.n:
        raise TaskonomyError(f"the validation mask covers {len(held)} images; the transfer split has {feed.n}")
    fit = {lo: np.flatnonzero(~held[lo:hi]) for lo, hi in feed.bounds}  # block rows the readouts train on
    steps = max(1, cfg.epochs * sum(math.ceil(len(rows) / cfg.batch) for rows in fit.values()))
    with deterministic(torch.device("cpu")):
        states = [_Job(job, cfg, channels, grid, image_size, steps) for job in jobs]
        loop_start = time.perf_counter()
        what = jobs[0].target if len(jobs) == 1 else f"{len(jobs)} targets"
        bar = tqdm(total=cfg.epochs * feed.n, unit="img", disable=not progress,
                   desc=f"readouts {what} ({sum(len(j.transfers) for j in jobs)} transfers)")
        for epoch in range(cfg.epochs):
            rng = np.random.default_rng([seed, epoch])
            for lo, hi, block in feed.blocks(rng.permutation(len(feed.bounds))):
                features = {p: _standardise(x, stats[p], grid) for p, x in block.items()}
                rows_fit = fit[lo][rng.permutation(len(fit[lo]))]
                for rows in torch.from_numpy(rows_fit).split(cfg.batch) if len(rows_fit) else ():
                    for state in states:
                        z = state.inputs(features, "transfer", rows)
                        loss = state.losses(z, state.job.labels_transfer[lo:hi][rows.numpy()]).mean(0).sum()
                        state.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        state.optimizer.step()
                        state.schedule.step()
                        report.samples += len(rows) * len(state.job.transfers)
                bar.update(hi - lo)
        bar.close()
        report.train_seconds = time.perf_counter() - loop_start
        report.wait_seconds = feed.wait_seconds
        validation = _eval_losses(root, states, stats, grid, "transfer", held)
        test = _eval_losses(root, states, stats, grid, "test")
    report.seconds = time.perf_counter() - start
    return {t: ReadoutLosses(test[t], validation[t]) for t in test}, report


@torch.no_grad()
def _eval_losses(root: zarr.Group, states: list[_Job], stats: dict, grid: int, split: str,
                 mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{target: per-image losses (G, n) float64} of every readout on `split`'s images (those of `mask`)."""
    paths = list(dict.fromkeys(p for s in states for p in _input_paths(s.job, split)))
    # every split's features are standardised with the transfer split's statistics, as the readouts saw them
    split_stats = {p: stats[p.removesuffix(split) + "transfer"] for p in paths}
    feed = FeatureFeed(root, paths)
    wanted = [b for b, (lo, hi) in enumerate(feed.bounds) if mask is None or mask[lo:hi].any()]  # in order
    out: dict[str, list[torch.Tensor]] = {s.job.target: [] for s in states}
    for lo, hi, block in feed.blocks(wanted):
        features = {p: _standardise(x, split_stats[p], grid) for p, x in block.items()}
        rows_all = torch.arange(hi - lo) if mask is None else torch.from_numpy(np.flatnonzero(mask[lo:hi]))
        for rows in rows_all.split(EVAL_BATCH):
            for state in states:
                state.readouts.eval()
                z = state.inputs(features, split, rows)
                labels = state.job.labels_test if split == "test" else state.job.labels_transfer
                out[state.job.target].append(state.losses(z, labels[lo:hi][rows.numpy()]).double())
    return {s.job.target: torch.cat(out[s.job.target]).T.numpy() if out[s.job.target]
            else np.zeros((s.n, 0)) for s in states}
