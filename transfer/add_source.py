"""A new frozen encoder joins a finished run: only its features are extracted and only its rows trained.

    taskonomy --run-dir runs/default add-source vp_normal --encoder normal_encoder-f5e2c773.pth
    taskonomy --run-dir runs/default add-source dino --kind export --file dino_vits16.pt2 --sha256 1a2b3c4d

The encoder is what `extract.taskonomy_encoders` takes (a local visualpriors encoder checkpoint, read with
`weights_only=True`), or an entry of `extract.encoders` of any kind (extract/encoders.py); the source joins the
run's config under that name once its file loaded and gave a feature map (nothing is written before). Every
other source's features and every row whose stamp is unchanged are kept, so afterwards transfers.zarr equals,
row for row and bit for bit, a fresh `taskonomy transfer` with the source in the config; beam sets the new
source pushed out of a target's top first-order sources (ranked by mean validation loss, as stage II ranks
them) are gone, as they would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.artifacts import read_added_targets
from taskonomy.config import Config, encoder_entry
from taskonomy.runfolder import REBUILD, RunFolder
from taskonomy.transfer.stage import TransferOutcome

__all__ = ["add_source", "with_source"]


def with_source(config: Config, run_dir: str | Path, name: str, encoder: str | Path | dict[str, Any]) -> Config:
    """`config` with `encoder` as source `name`, after checking both (one-line errors): a file path is a
    visualpriors checkpoint for extract.taskonomy_encoders, a mapping an extract.encoders entry (kind, file, ...)
    that is loaded and probed for a feature map."""
    from taskonomy.extract.encoders import encoder_source
    from taskonomy.extract.visualpriors import load_taskonomy_encoder

    run = RunFolder(run_dir)
    registry.validate_name(name)
    taken = {t.name: "a task of the dictionary" for t in registry.all_tasks()}
    taken.update({n: "an encoder of this run" for n in [*config.extract.taskonomy_encoders, *config.extract.encoders]})
    taken.update({a.task.name: "a target added to this run" for a in read_added_targets(run.path)})
    if name in taken or registry.resolve_alias(name) != name:
        raise TaskonomyError(f"source name {name!r} is taken by {taken.get(name, 'a task of the dictionary')}; "
                             f"choose another name")
    extract = config.extract
    if isinstance(encoder, dict):
        entry = encoder_entry({k: v for k, v in encoder.items() if v is not None}, "add-source")
        if not Path(entry.file).expanduser().is_file():
            raise TaskonomyError(f"encoder file {entry.file} does not exist")
        entry = entry.model_copy(update={"file": str(Path(entry.file).expanduser().resolve())})
        encoder_source(name, entry)  # a wrong file, sha256 or output: a one-line error naming it
        extract = extract.model_copy(update={"encoders": {**extract.encoders, name: entry}})
    else:
        path = Path(encoder).expanduser().resolve()
        if not path.is_file():
            raise TaskonomyError(f"encoder file {encoder} does not exist")
        load_taskonomy_encoder(path)  # not an encoder checkpoint: a one-line error naming the file
        extract = extract.model_copy(update={"taskonomy_encoders": {**extract.taskonomy_encoders, name: str(path)}})
    return config.model_copy(update={"extract": extract})


def add_source(config: Config, run_dir: str | Path, name: str, encoder: str | Path | dict[str, Any],
               progress: bool = True) -> tuple[Config, dict[str, str], TransferOutcome]:
    """Extract source `name` into the feature cache and train its transfers into every target.

    Returns (the run's config with the source, extract's outcome per source, stage II's outcome); the caller
    saves the config once this succeeded.
    """
    from taskonomy.extract.pipeline import extract_all
    from taskonomy.store import open_complete
    from taskonomy.transfer.stage import require_scheduler, run_transfer

    require_scheduler(config)
    run = RunFolder(run_dir, config.storage)  # the stores in the folder or under storage.url
    open_complete(run.transfers, REBUILD["transfers"])  # a finished run, or a one-line error naming the store
    config = with_source(config, run.path, name, encoder)
    extracted = extract_all(config, run.path, progress=progress)
    return config, extracted, run_transfer(config, run.path, progress=progress)
