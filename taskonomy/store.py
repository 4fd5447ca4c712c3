"""Zarr stores of a run: one chunking policy, checksummed codecs, and the completion rule.

Arrays are chunked along the image axis only; writers write whole chunks. A store counts only once
its root attribute `complete` is true, which is written last: a stage killed midway leaves a store
that is resumed or redone, never read.

With `complete`, the root records an inventory of what was written: `arrays` ({array path: shape}) and
`chunks` ({array path: runs of the chunk keys present on disk}, see `mark_complete`). Zarr skips chunks that
are all fill value and reads a chunk file that is gone as fill value, so only the inventory tells a lost
chunk from one that was never written.

A store is a folder of the run, or a prefix at an object-storage URL (storage.url; taskonomy.storage):
`open_group` opens either, and every check here (completion, inventory, `find_damage`) reads either, through
`_files`: a listing of the prefix stands for the folder walks, an object for a file.

    from taskonomy.store import open_complete
    root = open_complete(RunFolder(run_dir).features, "taskonomy extract")  # or a one-line TaskonomyError
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import google_crc32c  # the checksum of zarr's crc32c codec (a dependency of zarr)
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from taskonomy import TaskonomyError, runfolder
from taskonomy.runfolder import FILES, RunFolder
from taskonomy.storage import StoreURL, locate, open_group, remote_errors

__all__ = [
    "CHUNK_BYTES", "REBUILD", "StoreURL", "chunk_length", "codecs", "create_image_array", "damage_error",
    "find_damage", "is_complete", "locate", "mark_complete", "open_complete", "open_for_writing", "open_group",
    "refresh_inventory", "write_state",
]

Where = Path | StoreURL  # a store's location (taskonomy.storage.locate)

# store file name -> the command that rebuilds it (taskonomy.runfolder names both)
REBUILD = {FILES[store]: command for store, command in runfolder.REBUILD.items()}

CHUNK_BYTES = 16 * 2**20  # ~16 MB uncompressed per chunk of the widest array (DESIGN.md: 10-100 MB); small
# enough that a stage writes several chunks and overlaps their compression with the next chunk's compute


def chunk_length(bytes_per_image: int, n_images: int, target: int = CHUNK_BYTES) -> int:
    """Images per chunk so that a chunk of the widest array holds about `target` bytes."""
    return int(max(1, min(n_images, target // max(1, bytes_per_image))))


def codecs(compress: bool = True) -> dict[str, Any]:
    """Compression plus a CRC32C checksum per chunk, so that a corrupted chunk fails loudly on read.

    zstd level 1: on the data set it compresses 3.1x against level 3's 3.45x at 1.4x the speed
    (measured on 256 labelled 64 px images), and writing is a large share of `taskonomy data`.
    """
    return {"compressors": (ZstdCodec(level=1), Crc32cCodec()) if compress else (Crc32cCodec(),)}


def create_image_array(group: zarr.Group, name: str, shape: tuple[int, ...], dtype: str,
                       chunk: int, compress: bool = True) -> zarr.Array:
    """An array whose first axis is images, chunked along it only (checksummed; compressed unless told)."""
    chunks = (max(1, min(chunk, shape[0])),) + tuple(shape[1:])
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, overwrite=True,
                              **codecs(compress))


def is_complete(path: str | Path | StoreURL) -> bool:
    """True when the store at `path` exists and was finished."""
    try:
        return bool(open_group(path, "r").attrs.get("complete", False))
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, OSError):
        return False


def open_complete(path: str | Path | StoreURL, rebuild: str) -> zarr.Group:
    """Open a finished store read-only, or say which command rebuilds it."""
    path = locate(path)
    if not path.exists():
        raise TaskonomyError(f"{path} does not exist; run `{rebuild}` first")
    try:
        group = open_group(path, "r")
    except TaskonomyError:
        raise
    except Exception as err:  # a garbled zarr.json is as bad as a missing one
        raise TaskonomyError(f"{path} is not a readable Zarr store ({type(err).__name__}); rebuild it with "
                             f"`{rebuild} --force`") from None
    if not group.attrs.get("complete", False):
        raise TaskonomyError(f"{path} is incomplete (a run was interrupted); run `{rebuild}` to finish it")
    problem = _check_inventory(_files(path), group.attrs.get("arrays"), group.attrs.get("chunks"))
    if problem:
        raise TaskonomyError(f"{path}: {problem}; rebuild it with `{rebuild} --force`")
    return group


def write_state(path: str | Path | StoreURL, force: bool, other: Callable[[dict[str, Any]], str | None]) -> str:
    """Where a writer stands with the store at `path`: 'fresh' (none, or --force), 'resume' (its own store,
    unfinished) or 'done'; `other(attrs)` says why a store of another origin is refused (None: its own)."""
    path = locate(path)
    if force or not path.exists():
        return "fresh"
    try:
        old = dict(open_group(path, "r").attrs)
    except TaskonomyError:
        raise
    except Exception:
        raise TaskonomyError(f"{path} exists but is not a readable data store; remove it or pass --force") from None
    reason = other(old)
    if reason:
        raise TaskonomyError(f"{path} {reason}")
    return "done" if old.get("complete") else "resume"


def open_for_writing(path: str | Path | StoreURL, attrs: dict[str, Any]) -> zarr.Group:
    """A fresh, empty store at `path` with `attrs` and `complete: false`."""
    group = open_group(path, "w")
    group.attrs.update({**attrs, "complete": False})
    return group


def mark_complete(group: zarr.Group) -> None:
    """The last write of a stage: the group's inventory and `complete`, in one write of its zarr.json.

    `arrays`: {array path: shape}. `chunks`: {array path: sorted runs of the chunk keys whose files are on
    disk (or objects under the URL), relative to the array's `c/` folder}; a run "3-7/0/0/0" stands for the keys
    3/0/0/0 to 7/0/0/0, a lone key is written as is ("5/0/0/0", or "5" in a 1-d array), and "" is the one chunk
    of a 0-d array (the file `c` itself). Array paths are relative to `group` (a sub-group lists its own arrays;
    the root lists every array of the store). Only local or object-storage stores with zarr's default chunk keys
    ("/") get `chunks`; an array whose keys cannot be listed is left out of it and is checked as before
    (metadata and shape only).
    """
    members = sorted(group.members(max_depth=None), key=lambda m: m[0])  # the listing's order is the file system's
    arrays = {name: list(node.shape) for name, node in members if isinstance(node, zarr.Array)}
    update: dict[str, Any] = {"arrays": arrays, "complete": True}
    files = _group_files(group)
    if files is not None:
        chunks = {}
        for name in arrays:
            keys = files.present_keys(name)
            if keys is not None:
                chunks[name] = _runs(keys)
        update["chunks"] = chunks
    group.attrs.update(update)


def refresh_inventory(path: str | Path, rebuild: str | None = None) -> None:
    """Give a complete store written before chunk inventories existed its inventory (arrays and chunks).

    The store is verified first: `open_complete`'s checks, then `find_damage` (every chunk's checksum, the
    arrays it lists). A missing, unreadable, incomplete or damaged store raises a TaskonomyError naming the
    damage and the command that rebuilds it (`rebuild`; by default REBUILD's for the store's file name), and is
    left as it was. A store that already records its chunks passes `open_complete`'s cheap check and is left as
    it is. A chunk file lost before the refresh cannot be told from one never written: the refresh records
    what is there.
    """
    path = locate(path)
    if rebuild is None:
        if path.name not in REBUILD:
            raise ValueError(f"{path}: not a store of a run folder ({', '.join(REBUILD)}); say what rebuilds it")
        rebuild = REBUILD[path.name]
    if "chunks" in open_complete(path, rebuild).attrs:
        return
    problem = find_damage(path)
    if problem:
        raise TaskonomyError(f"{path}: {problem}; rebuild it with `{rebuild} --force`")
    mark_complete(open_group(path, "r+"))


class _Files:
    """The files of a store in a local folder: what the checks read (paths relative to the store, "/")."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def read(self, rel: str) -> bytes:
        """The file's bytes; FileNotFoundError when it is gone."""
        return (self.root / rel).read_bytes()

    def is_file(self, rel: str) -> bool:
        return os.path.isfile(self.root / rel)

    def metadata(self) -> list[str]:
        """Every zarr.json of the store, sorted."""
        return sorted((p.relative_to(self.root).as_posix() for p in self.root.rglob("zarr.json")), key=_parts)

    def chunk_files(self, node: str) -> list[str]:
        """Every file under the array `node`'s c/ (relative to the store), sorted."""
        base = self.root / node / "c" if node else self.root / "c"
        return sorted((p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file()), key=_parts)

    def present_keys(self, node: str) -> list[str] | None:
        return _present_keys(self.root / node)


class _RemoteFiles(_Files):
    """The objects of a store at a URL: one listing of the prefix answers every `is_file` and walk."""

    def __init__(self, url: StoreURL) -> None:  # the local root is never asked for
        self.url, self.fs = url, url.fs()

    @functools.cached_property
    def keys(self) -> set[str]:
        """Every object under the store, relative to it: one paginated listing (1,000 keys a request), taken
        when first needed; a check of N recorded chunks costs N/1000 requests rather than N."""
        with remote_errors(self.url):
            found = self.fs.find(self.url.key)
        return {k[len(self.url.key) + 1:] for k in found if k.startswith(self.url.key + "/")}

    def __str__(self) -> str:
        return str(self.url)

    def read(self, rel: str) -> bytes:
        with remote_errors(self.url):
            return self.fs.cat_file(f"{self.url.key}/{rel}")

    def is_file(self, rel: str) -> bool:
        return rel in self.keys

    def metadata(self) -> list[str]:
        return sorted((k for k in self.keys if k == "zarr.json" or k.endswith("/zarr.json")), key=_parts)

    def chunk_files(self, node: str) -> list[str]:
        base = f"{node}/c" if node else "c"
        return sorted((k for k in self.keys if k == base or k.startswith(base + "/")), key=_parts)

    def present_keys(self, node: str) -> list[str] | None:
        try:
            meta = json.loads(self.read(f"{node}/zarr.json"))
        except (OSError, ValueError):
            return None
        if not _default_keys(meta):
            return None
        base = f"{node}/c"
        if base in self.keys:
            return [""]  # a 0-d array
        return [k[len(base) + 1:] for k in self.keys if k.startswith(base + "/") and _KEY.fullmatch(k[len(base) + 1:])]


def _parts(rel: str) -> list[str]:
    return rel.split("/")  # the order of sorted Paths (part by part), which the local walks had


def _files(path: Where) -> _Files:
    return _RemoteFiles(path) if isinstance(path, StoreURL) else _Files(Path(path))


def _group_files(group: zarr.Group) -> _Files | None:
    """The files of `group` (relative to the group) when its store is a local folder or an object-storage
    prefix, else None."""
    store = group.store
    if isinstance(store, zarr.storage.LocalStore):
        return _Files(Path(store.root) / group.path if group.path else Path(store.root))
    if isinstance(store, zarr.storage.FsspecStore) and "s3" in _protocols(store.fs):
        options = {k: v for k, v in store.fs.storage_options.items() if k != "asynchronous"}
        url = StoreURL(f"s3://{store.path}", options)
        return _RemoteFiles(url / group.path if group.path else url)
    return None


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _default_keys(meta: dict[str, Any]) -> bool:
    """True when an array's chunk keys are zarr's default ones, "/"-separated."""
    encoding = meta.get("chunk_key_encoding") or {}
    return encoding.get("name") == "default" and (encoding.get("configuration") or {}).get("separator", "/") == "/"


def _present_keys(node: Path) -> list[str] | None:
    """The chunk keys of the array folder `node` whose files exist (relative to its `c/`), or None when its
    chunk keys are not zarr's default "/" ones. Never reads a chunk.

    Chunked along the first axis only (this module's policy), an array's keys are "i/0/.../0": one scandir of
    `c/` and one stat per chunk. Any other grid: one walk of `c/` (a scandir per folder, several per chunk).
    """
    try:
        meta = _metadata(node)
    except (OSError, ValueError):
        return None
    if not _default_keys(meta):
        return None
    base = node / "c"
    if base.is_file():
        return [""]  # a 0-d array
    grid = meta.get("chunk_grid") or {}
    try:
        shape, chunk = meta["shape"], grid["configuration"]["chunk_shape"]
        along_first = grid.get("name") == "regular" and all(s <= c for s, c in zip(shape[1:], chunk[1:], strict=True))
    except (KeyError, TypeError, ValueError):
        along_first = False
    keys: list[str] = []
    if along_first:
        tail = "/0" * (len(shape) - 1)
        try:
            with os.scandir(base) as entries:
                for entry in entries:
                    if _INDEX_RE.fullmatch(entry.name) and (os.path.isfile(entry.path + tail) if tail else
                                                            entry.is_file()):
                        keys.append(entry.name + tail)
        except (FileNotFoundError, NotADirectoryError):
            pass
        return keys
    stack = [(str(base), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file() and _KEY.fullmatch(prefix + entry.name):
                    keys.append(prefix + entry.name)
    return keys


_INDEX = r"(?:0|[1-9]\d*)"  # zarr writes chunk indices in decimal without leading zeros
_INDEX_RE = re.compile(_INDEX)
_KEY = re.compile(rf"{_INDEX}(?:/{_INDEX})*")
_RUN = re.compile(rf"({_INDEX})(?:-({_INDEX}))?((?:/{_INDEX})*)")


def _runs(keys: Iterable[str]) -> list[str]:
    """Chunk keys as runs along their first index, sorted: ["0/0", "1/0", "2/0", "5/0"] -> ["0-2/0", "5/0"]."""
    keys = list(keys)
    if "" in keys:
        return [""]
    firsts: dict[str, list[int]] = {}  # the rest of the key ("/0/0/0", or "" in a 1-d array) -> first indices
    for key in keys:
        first, slash, rest = key.partition("/")
        firsts.setdefault(slash + rest, []).append(int(first))
    runs = []
    for rest, indices in firsts.items():
        indices.sort()
        lo = indices[0]
        for prev, i in zip(indices, [*indices[1:], None], strict=True):
            if i != prev + 1:  # the run lo..prev ends here
                runs.append((lo, prev, rest))
                lo = i
    runs.sort(key=lambda r: (r[0], [int(i) for i in r[2].split("/")[1:]]))
    return [f"{lo}{rest}" if lo == hi else f"{lo}-{hi}{rest}" for lo, hi, rest in runs]


def _keys(runs: Iterable[str]) -> Iterator[str]:
    """The chunk keys that `runs` (as `_runs` writes them) stand for; ValueError for a garbled run."""
    for run in runs:
        if run == "":
            yield ""
            continue
        match = _RUN.fullmatch(run)
        if match is None:
            raise ValueError(run)
        first, last, tail = int(match[1]), int(match[2] or match[1]), match[3]
        for i in range(first, last + 1):
            yield f"{i}{tail}"


def _rows(meta: dict[str, Any], key: str) -> str:
    """The rows (images, or transfers in transfers.zarr) of chunk `key`: arrays are chunked along axis 0 only."""
    if not key:
        return "the only chunk"
    step = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    lo = int(key.split("/")[0]) * step
    return f"rows {lo} to {min(lo + step, meta['shape'][0]) - 1}"


def _metadata(path: Path) -> dict[str, Any]:
    return json.loads((path / "zarr.json").read_bytes())


def _check_inventory(files: _Files, arrays: dict[str, list[int]] | None,
                     chunks: dict[str, list[str]] | None = None) -> str | None:
    """What is wrong with the arrays a complete store lists (gone, unreadable metadata, another shape, a
    recorded chunk whose file is gone), if any. One stat per recorded chunk; no chunk is read.

    Stores written before inventories existed list no arrays, and before chunk inventories no chunks: those
    checks are skipped. Only arrays listed in `arrays` are checked against `chunks` (a writer that replaces an
    array drops it from `arrays` first, so a replacement killed midway is not taken for damage).
    """
    for name, shape in (arrays or {}).items():
        try:
            meta = json.loads(files.read(f"{name}/zarr.json"))
            found = meta.get("shape")
        except FileNotFoundError:
            return f"array {name} is missing"
        except (OSError, ValueError):
            return f"the metadata of array {name} is unreadable"
        if found != shape:
            return f"array {name} has shape {found}, expected {shape}"
        if not chunks or name not in chunks:
            continue
        base = f"{name}/c"
        try:
            for key in _keys(chunks[name]):
                if not files.is_file(f"{base}/{key}" if key else base):
                    return f"array {name}, chunk {key or 'c'} ({_rows(meta, key)}) is missing"
        except (ValueError, TypeError, KeyError, IndexError):
            return f"the chunk inventory of array {name} is unreadable"
    return None


def find_damage(path: str | Path | StoreURL) -> str | None:
    """The first damaged part of the store at `path`, in words, or None when every byte checks out.

    Reads every chunk once (only after a read failed): unreadable metadata, a chunk failing its CRC32C
    checksum (the codec appends it to the chunk's bytes), an array of the inventory that is gone, or a chunk
    of the inventory whose file (or object) is gone.
    """
    files = _files(locate(path))
    for meta_file in files.metadata():
        node = meta_file.rpartition("/")[0]
        name = node or "the root group"
        try:
            meta = json.loads(files.read(meta_file))
        except (OSError, ValueError):
            return f"the metadata of {name} is unreadable"
        if meta.get("node_type") != "array" or not meta.get("codecs") or meta["codecs"][-1].get("name") != "crc32c":
            continue
        for chunk in files.chunk_files(node):
            blob = files.read(chunk)
            if len(blob) < 4 or google_crc32c.value(blob[:-4]) != int.from_bytes(blob[-4:], "little"):
                key = chunk[len(node) + 3:] if node else chunk[2:]  # after "<node>/c/"
                return (f"array {name}, chunk {key} ({_rows(meta, key)}), fails its CRC32C checksum (truncated or "
                        f"garbled)")
    try:
        attributes = json.loads(files.read("zarr.json")).get("attributes", {})
        return _check_inventory(files, attributes.get("arrays"), attributes.get("chunks"))
    except (OSError, ValueError):
        return "the metadata of the root group is unreadable"


def damage_error(run_dir: str | Path) -> TaskonomyError | None:
    """After a read failed: the first damaged store of the run folder (or of its storage.url) as a one-line error
    naming the store, the array and the command that rebuilds it; None when the run's stores are sound."""
    run = RunFolder(run_dir)
    for store, command in runfolder.REBUILD.items():
        path = getattr(run, store)
        try:
            problem = find_damage(path) if path.is_dir() else None
        except TaskonomyError as err:  # the bucket is out of reach: that is the error to show
            return err
        if problem:
            return TaskonomyError(f"{path}: {problem}; rebuild it with `{command} --force`")
    return None


def bytes_per_image(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes one image occupies in an array of `shape` (first axis images)."""
    return int(math.prod(shape[1:]) * np.dtype(dtype).itemsize)
