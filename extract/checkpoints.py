"""Stage I checkpoints: models/<task>.pt, stamped with the hash of the config and data they came from.

Saved atomically (temporary name, then rename) and loaded with `weights_only=True`: a checkpoint holds
tensors, numbers, strings and lists only, so loading one can never run pickled code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from taskonomy import TaskonomyError
from taskonomy.runfolder import RunFolder

__all__ = ["checkpoint_path", "load_checkpoint", "save_checkpoint", "stored_hash"]


def checkpoint_path(run_dir: Path, task: str) -> Path:
    return RunFolder(run_dir).checkpoint(task)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` (must contain 'hash' and 'state_dict') to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The payload at `path`, or a one-line error naming the file."""
    if not path.is_file():
        raise TaskonomyError(f"checkpoint {path} is missing; run `taskonomy train` to make it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TaskonomyError(f"checkpoint {path} is unreadable or unsafe ({first[:120]}); "
                             f"rerun `taskonomy train --force`") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "hash" not in payload:
        raise TaskonomyError(f"checkpoint {path} is not a stage I checkpoint (no state_dict and hash)")
    return payload


def stored_hash(path: Path) -> str | None:
    """The hash a checkpoint was stamped with, or None when it is missing or unreadable."""
    try:
        return load_checkpoint(path)["hash"]
    except TaskonomyError:
        return None
