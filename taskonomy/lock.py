"""One writer per run folder: an advisory lock on <run>/.lock, held while a command writes there; and with
storage.url, one writer per object-storage prefix: a lease object <url>/.taskonomy-lease.

    with run_lock(run_dir, "taskonomy transfer", config.storage):
        ...                                  # a second process gets a one-line TaskonomyError naming our PID

fcntl.flock locks belong to the open file, so the kernel drops the lock when its process dies, even by
SIGKILL: a killed run never leaves a stale lock. Within one process the lock is re-entrant (counted per
folder), so `taskonomy run` can call every stage's command while it holds the folder.

The lease: a second run folder may point at the same prefix, so the stores there are claimed too. After the
bucket is checked (one line, exit 2, when the bucket, the credentials or the endpoint is wrong), the lease is
created with a conditional put (S3 `If-None-Match: *`: exactly one of two racing commands creates it) holding
{host, pid, command, run folder, since, token}, and deleted when the lock is released. A second command on the
prefix is refused in one line naming the holder. Unlike a flock, a lease outlives a killed process: one left by
a process of this host that is gone (its pid no longer runs) is stale and taken over (deleted, then created
again conditionally); one from another host cannot be checked from here and is refused, with the lease's URL to
delete once its holder is known to be gone. The delete is not conditional (s3fs has no delete-if-unchanged),
so two commands taking over the same stale lease in the same instant could both get in; every other race is
settled by the conditional put.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskonomy import TaskonomyError
from taskonomy.runfolder import FILES, bind_storage, unbind_storage
from taskonomy.storage import StoreURL, check_reachable, remote_errors, storage_of

__all__ = ["LEASE", "LOCK_FILE", "acquire", "acquire_lease", "lease_holder", "release", "release_lease", "run_lock"]

LOCK_FILE = FILES["lock"]
LEASE = ".taskonomy-lease"  # the lease object under storage.url
_held: dict[Path, list] = {}  # resolved run folder -> [file descriptor, depth, prefix URL or None]
_leases: dict[str, list] = {}  # prefix URL -> [token, depth, the lease's contents]
_guard = threading.Lock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def lease_holder(doc: dict[str, Any]) -> str:
    """'process <pid> on <host> (<command>, run folder <dir>, since <time>)' from a lease's contents."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc["since"])) if "since" in doc else "?"
    return (f"process {doc.get('pid', '?')} on {doc.get('host', '?')} ({doc.get('command', '?')}, run folder "
            f"{doc.get('run_dir', '?')}, since {since})")


def acquire_lease(prefix: StoreURL, command: str, run_dir: str | Path) -> None:
    """Claim the stores under `prefix` for this process (re-entrant), or refuse in one line naming the holder.
    The bucket is checked first (`check_reachable`)."""
    folder = str(Path(run_dir).resolve())
    with _guard:
        held = _leases.get(prefix.url)
        if held is not None:  # re-entrant for the same run folder only: another folder's stores would clash
            if held[2]["run_dir"] != folder:
                raise TaskonomyError(f"{prefix} is in use by {lease_holder(held[2])}; use another storage.url")
            held[1] += 1
            return
        check_reachable(prefix)
        lease = prefix / LEASE
        token = uuid.uuid4().hex
        doc = {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "run_dir": folder,
               "since": round(time.time(), 3), "token": token}
        body = json.dumps(doc).encode()
        fs = prefix.fs()
        with remote_errors(prefix):
            for _ in range(3):  # a stale lease is deleted and the put tried again; a racer may win meanwhile
                try:
                    fs.pipe_file(lease.key, body, mode="create")  # If-None-Match: *
                    break
                except FileExistsError:
                    pass
                try:
                    other = json.loads(fs.cat_file(lease.key))
                except FileNotFoundError:  # released meanwhile
                    continue
                except ValueError:
                    other = {}
                stale = other.get("host") == socket.gethostname() and isinstance(other.get("pid"), int) \
                    and other["pid"] != os.getpid() and not _alive(other["pid"])
                if not stale:
                    raise TaskonomyError(f"{prefix} is in use by {lease_holder(other)}; wait for it to finish or "
                                         f"stop it, or use another storage.url (if that process is gone, delete "
                                         f"{lease})")
                try:  # still the stale one? (another command may have taken it over meanwhile)
                    if json.loads(fs.cat_file(lease.key)).get("token") != other.get("token"):
                        continue
                except (FileNotFoundError, ValueError):
                    continue
                fs.rm(lease.key)  # two takeovers racing past this check in the same instant both get in
            else:
                raise TaskonomyError(f"{prefix}: could not claim {lease} (other commands keep taking it)")
        _leases[prefix.url] = [token, 1, doc]


def release_lease(prefix: StoreURL) -> None:
    """Undo one `acquire_lease`; the last one deletes the lease if it is still ours (never another's)."""
    with _guard:
        entry = _leases.get(prefix.url)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1]:
            return
        del _leases[prefix.url]
        lease = prefix / LEASE
        fs = prefix.fs()
        try:
            if json.loads(fs.cat_file(lease.key)).get("token") == entry[0]:
                fs.rm(lease.key)
        except Exception:  # gone, unreadable or unreachable: a lease we cannot delete is taken over as stale
            pass


def _holder(path: Path) -> str:
    """'process <pid> (<command>)' as the holder wrote it, or a vaguer phrase while it is still writing it."""
    try:
        pid, _, command = path.read_text().strip().partition(" ")
    except OSError:
        pid, command = "", ""
    return f"process {pid} ({command})" if pid.isdigit() else "another process"


def acquire(run_dir: str | Path, command: str, storage: Any = None) -> None:
    """Take the run folder's lock (the folder must exist), or refuse when another process holds it. With
    `storage` (the config's StorageConfig) at a URL, also the lease on its prefix, and RunFolder(run_dir) finds
    the stores there until `release`."""
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
        _held[key] = [fd, 1, None]
    url, options = storage_of(storage)
    if url:
        prefix = StoreURL(url, options)
        try:
            acquire_lease(prefix, command, run_dir)
        except BaseException:
            release(run_dir)
            raise
        with _guard:
            _held[key][2] = prefix
        bind_storage(key, storage)


def release(run_dir: str | Path) -> None:
    """Undo one `acquire`; the last one unlocks the folder (the file stays, empty of meaning)."""
    key = Path(run_dir).resolve()
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1]:
            return
        del _held[key]
    if entry[2] is not None:  # the lease first: the folder stays ours until the stores are released
        unbind_storage(key)
        release_lease(entry[2])
    os.close(entry[0])  # closing the only descriptor of the open file drops the flock


@contextmanager
def run_lock(run_dir: str | Path, command: str, storage: Any = None) -> Iterator[None]:
    """Hold the run folder's lock (and with storage at a URL, its prefix's lease) for the `with` block."""
    acquire(run_dir, command, storage)
    try:
        yield
    finally:
        release(run_dir)
