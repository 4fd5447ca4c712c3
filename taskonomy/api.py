"""The Python API for notebooks: a run folder as labelled arrays, and the stages as calls.

    import taskonomy
    run = taskonomy.open_run("runs/default")
    run.affinity                                  # xarray: target x transfer, AHP-normalised (rows sum to 1)
    run.affinity.sel(transfer="reshading")        # one source's affinity to every target
    run.losses("normal")                          # xarray: transfer x image, per-image test losses
    run.solve(budget=3, max_order=2).supervised   # the BIP's choice (nothing written)
    run.add_target("far_room", labels, loss="bce")  # from the cached features, rows of every kind

Reading holds no lock and writes nothing. Every call that writes (add_target, add_source, write=True) holds
the run folder's lock while it runs, as the CLI does, and saves the config only when it succeeded. Errors are
the CLI's one-line TaskonomyErrors, a damaged store named with its array and the command that rebuilds it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError
from taskonomy import artifacts
from taskonomy.config import Config, load_config
from taskonomy.runfolder import RunFolder, check_format

__all__ = ["Run", "open_run"]


def open_run(path: str | os.PathLike) -> Run:
    """An existing run folder with the config it was made with (its config.yaml)."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise TaskonomyError(f"run folder {folder.path} does not exist")
    check_format(folder.path)
    if not folder.config.is_file():
        raise TaskonomyError(f"{folder.path} has no config.yaml: not a run folder")
    return Run(folder, load_config(folder.config))


class Run:
    """One run folder: its config, stage I quality, affinities, per-image losses, and the stages as calls."""

    def __init__(self, folder: RunFolder, config: Config):
        self.folder, self.config = folder, config

    def __repr__(self) -> str:
        return f"<taskonomy run {self.folder.path} ({self.config.name})>"

    @property
    def path(self) -> Path:
        return self.folder.path

    # --- reading -----------------------------------------------------------------------------------------------

    @property
    def quality(self):
        """Stage I quality per task (xarray Dataset over `task`): test loss, baseline, ratio, win rate, ..."""
        import pandas as pd

        path = self.folder.stage1_quality
        if not path.is_file():
            raise TaskonomyError(f"{path} does not exist; run `taskonomy train`")
        return pd.read_csv(path).set_index("task").to_xarray()

    @property
    def affinity(self):
        """AHP affinities (xarray DataArray, target x transfer; NaN where a target did not try a transfer), with
        each transfer's `order` (0 for full and scratch) as a coordinate."""
        import xarray as xr

        table = artifacts.read_affinity(self.path)
        return xr.DataArray(table.values, dims=("target", "transfer"), name="affinity",
                            coords={"target": table.targets, "transfer": table.transfers,
                                    "order": ("transfer", [artifacts.order_of(t) for t in table.transfers])})

    @property
    def intervals(self):
        """Affinities with their bootstrap percentile intervals (xarray Dataset of affinity, low, high over
        target x transfer)."""
        import xarray as xr

        rows = artifacts.read_affinity_ci(self.path)
        targets = list(dict.fromkeys(r["target"] for r in rows))
        transfers = list(self.affinity.transfer.values)
        out = {k: np.full((len(targets), len(transfers)), np.nan) for k in ("affinity", "low", "high")}
        for r in rows:
            i, j = targets.index(r["target"]), transfers.index(r["transfer"])
            for key in out:
                out[key][i, j] = r[key]
        return xr.Dataset({k: (("target", "transfer"), v) for k, v in out.items()},
                          coords={"target": targets, "transfer": transfers})

    @property
    def published(self) -> dict[str, Any] | None:
        """What `taskonomy published` imported into this folder (published.json), or None for a run of ours."""
        return artifacts.read_published(self.path)

    @property
    def targets(self) -> list[str]:
        """Every complete target of transfers.zarr (the config's and those added from the cache); in a folder of
        the published results, the targets of its affinity table."""
        if self.published is not None:
            return list(artifacts.read_affinity(self.path).targets)
        return artifacts.complete_targets(self.path)

    @property
    def sources(self) -> list[str]:
        """Every source of the feature cache that transfers read; in a folder of the published results, every
        task a transfer of its affinity table reads."""
        if self.published is not None:
            columns = artifacts.read_affinity(self.path).transfers
            return list(dict.fromkeys(s for c in columns if c not in artifacts.BASELINES for s in c.split("+")))
        return artifacts.read_losses(self.path, []).sources

    def losses(self, target: str):
        """Per-image test losses into `target` (xarray DataArray, transfer x image; `image` is the data.zarr
        index of each test image)."""
        import xarray as xr

        if self.published is not None:
            raise TaskonomyError(f"{self.path} holds the published Taskonomy results: win rates and affinities, "
                                 f"no per-image losses (see {self.folder.wins_vs_task.name})")
        table = artifacts.read_losses(self.path, [target])
        rows = table[target]
        return xr.DataArray(rows.losses, dims=("transfer", "image"), name=f"losses of {target}",
                            coords={"transfer": rows.transfers, "image": table.test_index,
                                    "order": ("transfer", rows.orders)})

    # --- stage IV ----------------------------------------------------------------------------------------------

    def _taxonomy(self, **overrides: Any) -> Config:
        from taskonomy.taxonomy.stage import with_overrides

        return with_overrides(self.config, **overrides)

    def solve(self, budget: float | None = None, max_order: int | None = None, write: bool = False, **taxonomy):
        """The BIP's policy (taskonomy.taxonomy.bip.Solution) at `budget` and `max_order` (default: the
        config's); other keys of the config's taxonomy section may be given too (importance={...}, ...).
        With write=True, also writes taxonomy.json and its graph as `taskonomy solve` does."""
        from taskonomy.lock import run_lock
        from taskonomy.taxonomy.stage import run_solve, solve_policy

        config = self._taxonomy(budget=budget, max_order=max_order, **taxonomy)
        if not write:
            return solve_policy(config, self.path)[1]
        with run_lock(self.path, "taskonomy.api solve"):
            return run_solve(config, self.path)[0]

    def evaluate(self, max_order: int | None = None, budgets: Sequence[float] | None = None, **taxonomy):
        """Gain and quality of the policy at every budget (default 1..number of sources) and max order 1..K:
        a list of taskonomy.taxonomy.evaluate.SweepPoint, as `taskonomy evaluate` computes them (nothing
        written)."""
        from taskonomy.taxonomy.stage import sweep_policies

        return sweep_policies(self._taxonomy(**taxonomy), self.path, max_order=max_order, budgets=budgets)[0]

    # --- reusing the cache -------------------------------------------------------------------------------------

    def add_target(self, name: str, labels: np.ndarray | None = None, loss: str = "l2",
                   label_fn: Callable[[Any], np.ndarray] | None = None, force: bool = False,
                   progress: bool = False):
        """A new target from the cached features (see `taskonomy add-target`): labels one per data.zarr image,
        or `label_fn(data.zarr group)`. Returns stage II's outcome (rows trained and kept)."""
        from taskonomy.lock import run_lock
        from taskonomy.transfer.add_target import add_target

        with run_lock(self.path, "taskonomy.api add_target"):
            return add_target(self.config, self.path, name, loss, labels=labels, label_fn=label_fn,
                              origin="labels from Python" if labels is not None else "label function",
                              force=force, progress=progress)

    def add_source(self, name: str, encoder: str | os.PathLike | dict, progress: bool = False):
        """A new frozen encoder joins the run (see `taskonomy add-source`): a visualpriors checkpoint file, or an
        `extract.encoders` entry such as {"kind": "export", "file": "resnet50.pt2", "sha256": "1a2b"}; the run's
        config.yaml then lists it. Returns stage II's outcome."""
        import yaml

        from taskonomy.lock import run_lock
        from taskonomy.runfolder import write_text
        from taskonomy.transfer.add_source import add_source

        with run_lock(self.path, "taskonomy.api add_source"):
            config, _, outcome = add_source(self.config, self.path, name, encoder, progress=progress)
            write_text(self.folder.config, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        self.config = config
        return outcome
