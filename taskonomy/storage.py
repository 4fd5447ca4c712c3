"""Stores at an object-storage URL: where a run's Zarr stores are, how they are opened, and one-line errors.

    from taskonomy.storage import locate, open_group
    where = locate("s3://bucket/runs/a/features.zarr")  # a StoreURL; a local path comes back as a Path
    group = open_group(where, "r")                       # a zarr.Group over an FsspecStore, or a local folder

data.zarr, features.zarr and transfers.zarr live in the run folder, or under `storage.url`
(`<url>/data.zarr`, ...; taskonomy.runfolder.RunFolder says which). A store there is a `StoreURL`, which
answers the questions the stages ask of a store's Path (`exists`, `is_dir`, `name`, `str`), so a site that
opens stores only calls `open_group` instead of `zarr.open_group(str(path))`. Credentials come from the
environment as s3fs reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, a profile);
`storage.options` (endpoint_url, region_name, ...) go to s3fs. `check_reachable` turns a missing bucket,
missing or refused credentials and an unreachable endpoint into one TaskonomyError naming the URL, before
any work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskonomy import TaskonomyError

__all__ = ["READ_CACHE_BYTES", "S3FS_DEFAULTS", "StoreURL", "check_reachable", "locate", "open_group", "remote_errors",
           "storage_of"]


_file_systems: dict[tuple, Any] = {}  # StoreURL.fs's, by options and AWS_* environment


def storage_of(storage: Any) -> tuple[str | None, dict[str, Any]]:
    """(url, options) of a StorageConfig, its JSON dict (a worker's config, config.yaml) or None."""
    if storage is None:
        return None, {}
    if isinstance(storage, Mapping):
        return storage.get("url"), dict(storage.get("options") or {})
    return storage.url, dict(storage.options or {})


# s3fs's defaults that cost a request: with max_concurrency > 1 every whole-object read is a HEAD (its size, to
# split large objects) and then the GET; chunks are far below s3fs's 50 MB block, so one GET does. `options` win.
S3FS_DEFAULTS = {"max_concurrency": 1}


@dataclass(frozen=True)
class StoreURL:
    """A store (or prefix) at an object-storage URL; compared by URL (options are how to reach it)."""

    url: str
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/"))

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, part: str) -> StoreURL:
        return StoreURL(f"{self.url}/{str(part).strip('/')}", self.options)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> StoreURL:
        return StoreURL(self.url.rsplit("/", 1)[0], self.options)

    @property
    def key(self) -> str:
        """bucket/prefix/..., the path s3fs takes."""
        return self.url.split("://", 1)[1]

    def fs(self):
        """A synchronous s3fs file system without cached listings (what it reports is what the bucket holds now),
        one per set of options and AWS_* environment (credentials are read from the environment as it is now)."""
        key = (json.dumps(dict(self.options), sort_keys=True, default=str),
               tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
        if key not in _file_systems:
            import s3fs

            _file_systems[key] = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                                                   **{**S3FS_DEFAULTS, **self.options})
        return _file_systems[key]

    def exists(self) -> bool:
        """True when any object lies under the URL (a store is a prefix, not an object): one listing of one key."""
        bucket, _, prefix = self.key.partition("/")
        with remote_errors(self):
            try:
                found = self.fs().call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "",
                                          MaxKeys=1)
            except FileNotFoundError:  # no bucket: nothing there (check_reachable says so at the start)
                return False
        return bool(found.get("KeyCount") or found.get("Contents"))

    is_dir = exists

    def zarr_store(self, read_only: bool):
        """zarr's FsspecStore over the URL (an asynchronous s3fs with the same options); read-only, behind a
        cache of the objects it read (`_read_cache`)."""
        from zarr.storage import FsspecStore

        store = FsspecStore.from_url(self.url, storage_options={**S3FS_DEFAULTS, **self.options}, read_only=read_only)
        return _read_cache(store) if read_only else store


READ_CACHE_BYTES = 256 * 2**20


def _read_cache(store):
    """`store` with the last READ_CACHE_BYTES of whole objects it returned kept in memory. A stage reads the
    same chunk many times (extract reads data.zarr's images once per source and batch: 1,920 GETs of the tiny
    run's 13 image chunks, 42 with the cache); from a folder the page cache does this. Only read-only handles
    get one, and a handle lives for one stage: nothing it caches is written meanwhile (the lease keeps other
    commands off the prefix)."""
    from collections import OrderedDict

    from zarr.storage import WrapperStore

    class ReadCache(WrapperStore):
        def __init__(self, inner) -> None:
            super().__init__(inner)
            self._cached: OrderedDict[str, Any] = OrderedDict()
            self._bytes = 0

        def _with_store(self, inner):
            return type(self)(inner)

        async def get(self, key, prototype, byte_range=None):
            if byte_range is not None:
                return await self._store.get(key, prototype, byte_range)
            if key in self._cached:
                self._cached.move_to_end(key)
                return self._cached[key]
            value = await self._store.get(key, prototype)
            if value is not None and len(value) <= READ_CACHE_BYTES:
                self._cached[key] = value
                self._bytes += len(value)
                while self._bytes > READ_CACHE_BYTES:
                    self._bytes -= len(self._cached.popitem(last=False)[1])
            return value

    return ReadCache(store)


def locate(path: str | os.PathLike | StoreURL, storage: Any = None) -> Path | StoreURL:
    """A store's location: a StoreURL as it is; a string URL as a StoreURL (reached with `storage`'s options:
    a dask worker gets the location as a string and the config as a dict); anything else as a local Path."""
    if isinstance(path, StoreURL):
        return path
    if isinstance(path, str) and "://" in path:
        return StoreURL(path, storage_of(storage)[1])
    return Path(path)


def open_group(path: str | os.PathLike | StoreURL, mode: str = "r", storage: Any = None):
    """The Zarr group at `path` (local folder or URL, see `locate`) in zarr's `mode` ('r', 'r+', 'a', 'w')."""
    import zarr

    where = locate(path, storage)
    if isinstance(where, Path):
        return zarr.open_group(str(where), mode=mode)
    with remote_errors(where):
        return zarr.open_group(where.zarr_store(read_only=mode == "r"), mode=mode)


def _reason(err: BaseException) -> str | None:
    """What an error from s3fs/botocore says about reaching the bucket, or None when it is not about that."""
    name = type(err).__name__
    text = str(err).splitlines()[0] if str(err) else name
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return ("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile) in the "
                "environment")
    if isinstance(err, PermissionError) or name in ("ClientError",) and "403" in text:
        return f"access refused ({text}): check the credentials in the environment"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError",
                "ConnectionRefusedError", "ServerDisconnectedError", "ReadTimeoutError"):
        return f"the endpoint cannot be reached ({text})"
    if "bucket does not exist" in text.lower() or "NoSuchBucket" in text:
        return "the bucket does not exist"
    return None


@contextmanager
def remote_errors(url: StoreURL | str) -> Iterator[None]:
    """Turn an error about reaching `url` (credentials, bucket, endpoint) into one line naming it; others pass."""
    try:
        yield
    except TaskonomyError:
        raise
    except Exception as err:  # botocore's and aiohttp's errors are not imported unless s3fs is installed
        reason = _reason(err) or (_reason(err.__cause__) if err.__cause__ else None)
        if reason is None:
            raise
        raise TaskonomyError(f"{url}: {reason}") from None


def check_reachable(url: StoreURL) -> None:
    """One cheap request that proves the bucket exists and the credentials are accepted: a listing of at most
    one key under the prefix (what a policy limited to the prefix allows, unlike HeadBucket); a TaskonomyError
    naming `url` otherwise, and for a missing s3fs."""
    try:
        import s3fs
    except ImportError:
        raise TaskonomyError(f"storage.url {url} needs s3fs: pip install 'taskonomy-engine[storage]'") from None
    bucket, _, prefix = url.key.partition("/")
    # few retries: a wrong endpoint answers in a second, not after s3fs's and botocore's back-offs (~8 s)
    probe = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                              **{"config_kwargs": {"retries": {"max_attempts": 1}}, **dict(url.options)})
    probe.retries = 1  # s3fs's own retry loop (a class attribute, 5)
    with remote_errors(url):
        try:
            probe.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
        except FileNotFoundError:
            raise TaskonomyError(f"{url}: the bucket {bucket} does not exist") from None
