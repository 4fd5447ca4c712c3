"""One writer per run folder: an advisory lock on <run>/.lock, held while a command writes there.

    with run_lock(run_dir, "taskonomy transfer"):
        ...                                  # a second process gets a one-line TaskonomyError naming our PID

fcntl.flock locks belong to the open file, so the kernel drops the lock when its process dies, even by
SIGKILL: a killed run never leaves a stale lock. Within one process the lock is re-entrant (counted per
folder), so `taskonomy run` can call every stage's command while it holds the folder.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taskonomy import TaskonomyError
from taskonomy.runfolder import FILES

__all__ = ["LOCK_FILE", "acquire", "release", "run_lock"]

LOCK_FILE = FILES["lock"]
_held: dict[Path, list] = {}  # resolved run folder -> [file descriptor, depth]
_guard = threading.Lock()


def _holder(path: Path) -> str:
    """'process <pid> (<command>)' as the holder wrote it, or a vaguer phrase while it is still writing it."""
    try:
        pid, _, command = path.read_text().strip().partition(" ")
    except OSError:
        pid, command = "", ""
    return f"process {pid} ({command})" if pid.isdigit() else "another process"


def acquire(run_dir: str | Path, command: str) -> None:
    """Take the run folder's lock (the folder must exist), or refuse when another process holds it."""
    key = Path(run_dir).resolve()
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return
        path = key / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise TaskonomyError(f"cannot lock run folder {run_dir}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TaskonomyError(f"run folder {run_dir} is in use by {_holder(path)}; wait for it to finish "
                                 f"or stop it, or use another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        _held[key] = [fd, 1]


def release(run_dir: str | Path) -> None:
    """Undo one `acquire`; the last one unlocks the folder (the file stays, empty of meaning)."""
    key = Path(run_dir).resolve()
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            os.close(entry[0])  # closing the only descriptor of the open file drops the flock


@contextmanager
def run_lock(run_dir: str | Path, command: str) -> Iterator[None]:
    """Hold the run folder's lock for the `with` block."""
    acquire(run_dir, command)
    try:
        yield
    finally:
        release(run_dir)
