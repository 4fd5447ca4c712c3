"""A new frozen encoder joins a finished run: only its features are extracted and only its rows trained.

    taskonomy --run-dir runs/default add-source vp_normal --encoder normal_encoder-f5e2c773.pth

The encoder is what `extract.taskonomy_encoders` takes (a local visualpriors encoder checkpoint, read with
`weights_only=True`); the source joins the run's config under that name. Every other source's features
and every row whose stamp is unchanged are kept, so afterwards transfers.zarr equals, row for row and bit
for bit, a fresh `taskonomy transfer` with the source in the config; beam sets the new source pushed out
of a target's top first-order sources are gone, as they would be.
"""

from __future__ import annotations

from pathlib import Path

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.artifacts import read_added_targets
from taskonomy.config import Config
from taskonomy.runfolder import REBUILD, RunFolder
from taskonomy.transfer.stage import TransferOutcome

__all__ = ["add_source", "with_source"]


def with_source(config: Config, run_dir: str | Path, name: str, encoder: str | Path) -> Config:
    """`config` with the encoder file `encoder` as source `name`, after checking both (one-line errors)."""
    from taskonomy.extract.visualpriors import load_taskonomy_encoder

    run = RunFolder(run_dir)
    registry.validate_name(name)
    taken = {t.name: "a task of the dictionary" for t in registry.all_tasks()}
    taken.update({n: "an encoder of this run" for n in config.extract.taskonomy_encoders})
    taken.update({a.task.name: "a target added to this run" for a in read_added_targets(run.path)})
    if name in taken or registry.resolve_alias(name) != name:
        raise TaskonomyError(f"source name {name!r} is taken by {taken.get(name, 'a task of the dictionary')}; "
                             f"choose another name")
    path = Path(encoder).expanduser().resolve()
    if not path.is_file():
        raise TaskonomyError(f"encoder file {encoder} does not exist")
    load_taskonomy_encoder(path)  # not an encoder checkpoint: a one-line error naming the file
    encoders = {**config.extract.taskonomy_encoders, name: str(path)}
    return config.model_copy(update={"extract": config.extract.model_copy(update={"taskonomy_encoders": encoders})})


def add_source(config: Config, run_dir: str | Path, name: str, encoder: str | Path,
               progress: bool = True) -> tuple[Config, dict[str, str], TransferOutcome]:
    """Extract source `name` into the feature cache and train its transfers into every target.

    Returns (the run's config with the source, extract's outcome per source, stage II's outcome); the caller
    saves the config once this succeeded.
    """
    from taskonomy.extract.pipeline import extract_all
    from taskonomy.store import open_complete
    from taskonomy.transfer.stage import run_transfer

    run = RunFolder(run_dir)
    open_complete(run.transfers, REBUILD["transfers"])  # a finished run, or a one-line error naming the store
    config = with_source(config, run.path, name, encoder)
    extracted = extract_all(config, run.path, progress=progress)
    return config, extracted, run_transfer(config, run.path, progress=progress)
