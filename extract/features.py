"""The feature cache: every frozen encoder runs once over every split into features.zarr.

    taskonomy --config configs/tiny.yaml extract

Layout: /<source>/<split> float16 [N, C, h, w], chunked along images only, plus
/<source>/views/<task>/<split> for the second views of the multi-view targets. A source group
records the hash of its encoder and of the data; it is kept while both match and recomputed when
either changes. Progress is recorded per chunk (`chunks_done`), so a killed extraction resumes where
it stopped and ends with the same bytes; `complete` is written last, per source and for the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from taskonomy import TaskonomyError
from taskonomy.store import bytes_per_image, chunk_length, create_image_array, mark_complete, open_group

__all__ = ["Source", "extract_features", "extract_source", "feature_arrays", "open_features", "open_for_sources"]

SPLITS = ("train", "transfer", "test")


@dataclass(frozen=True)
class Source:
    """A frozen representation: uint8 images (B, 3, S, S) in, float features (B, C, h, w) out."""

    name: str
    hash: str  # identity of the encoder's weights and preprocessing
    encode: Callable[[np.ndarray], np.ndarray]
    shape: tuple[int, int, int]  # (C, h, w)


def feature_arrays(data: zarr.Group) -> Iterator[tuple[str, str, np.ndarray]]:
    """(array path within a source, data.zarr image array, image indices) for every array to extract."""
    pair_views = sorted(data["views"].keys()) if "views" in data else []
    for split in SPLITS:
        indices = data[f"splits/{split}"][:]
        yield split, "images/rgb", indices
        for task in pair_views:
            yield f"views/{task}/{split}", f"views/{task}", indices


def _prepare_group(root: zarr.Group, source: Source, data_hash: str, force: bool) -> tuple[zarr.Group, str]:
    """The source's group and its state: 'up to date', 'resumed' (interrupted, same encoder) or 'extracted'."""
    if source.name in root and not force:
        group = root[source.name]
        same = group.attrs.get("encoder_hash") == source.hash and group.attrs.get("data_hash") == data_hash
        if same:
            return group, "up to date" if group.attrs.get("complete") else "resumed"
    group = root.create_group(source.name, overwrite=True)
    group.attrs.update({"encoder_hash": source.hash, "data_hash": data_hash, "shape": list(source.shape),
                        "dtype": "float16", "complete": False})
    return group, "extracted"


def _array(group: zarr.Group, path: str, n: int, shape: tuple[int, ...], chunk: int) -> zarr.Array:
    if path in group and group[path].shape == (n, *shape) and group[path].chunks[0] == min(chunk, max(n, 1)):
        return group[path]
    # no zstd for features: float16 activations barely compress, and decoding would cut read throughput
    # ~4x (benchmarks/bench_extract.py); the CRC32C checksum stays
    array = create_image_array(group, path, (n, *shape), "float16", chunk, compress=False)
    array.attrs["chunks_done"] = []
    return array


def _extract_array(source: Source, images: zarr.Array, indices: np.ndarray, out: zarr.Array, batch: int,
                   writer: ThreadPoolExecutor, advance: Callable[[int], None]) -> None:
    """Encode the images `indices` into `out`, chunk by chunk, writes overlapping the next chunk's compute."""
    chunk = out.chunks[0]
    done = set(out.attrs.get("chunks_done", []))
    pending: Future | None = None
    for c in range(math.ceil(len(indices) / chunk)):
        lo, hi = c * chunk, min(len(indices), (c + 1) * chunk)
        if c in done:
            advance(hi - lo)
            continue
        block = np.empty((hi - lo, *out.shape[1:]), np.float16)
        for start in range(lo, hi, batch):
            stop = min(hi, start + batch)
            pixels = images.get_orthogonal_selection((indices[start:stop],))
            block[start - lo:stop - lo] = source.encode(pixels)
            advance(stop - start)
        if pending is not None:
            pending.result()
        pending = writer.submit(_write_chunk, out, c, lo, hi, block)
    if pending is not None:
        pending.result()


def _write_chunk(out: zarr.Array, c: int, lo: int, hi: int, block: np.ndarray) -> None:
    out[lo:hi] = block
    # recorded only once the chunk is on disk: a kill before this line redoes the chunk
    out.attrs["chunks_done"] = sorted({*out.attrs.get("chunks_done", []), c})


def extract_features(path: str | Path, data: zarr.Group, sources: list[Source], batch: int = 256,
                     chunk_images: int | str = "auto", force: bool = False, progress: bool = True) -> dict[str, str]:
    """Fill features.zarr at `path` for `sources`; returns {source: 'extracted' | 'resumed' | 'up to date'}."""
    from taskonomy.scenes.dataset import data_hash as identify

    data_hash = identify(data)
    root = open_for_sources(path, data_hash)
    outcome = {source.name: extract_source(root, data, source, data_hash, batch, chunk_images, force, progress)
               for source in sources}
    mark_complete(root)
    return outcome


def open_for_sources(path: str | Path, data_hash: str) -> zarr.Group:
    """features.zarr at `path`, marked incomplete, ready for `extract_source` (emptied when it holds features of
    other data). The caller marks it complete once every source is (mark_complete)."""
    root = open_group(path, "a")  # a folder, or a StoreURL under storage.url
    if root.attrs.get("data_hash") not in (None, data_hash):
        root = open_group(path, "w")  # every cached feature belongs to other data
    root.attrs.update({"data_hash": data_hash, "complete": False})
    return root


def extract_source(root: zarr.Group, data: zarr.Group, source: Source, data_hash: str, batch: int = 256,
                   chunk_images: int | str = "auto", force: bool = False, progress: bool = True) -> str:
    """One source's group of `root` filled (kept when up to date, resumed when interrupted); its outcome. Writes
    nothing outside /<source>: sources may be extracted side by side, in processes or on machines of their own."""
    group, outcome = _prepare_group(root, source, data_hash, force)
    if outcome == "up to date":
        return outcome
    arrays = list(feature_arrays(data))
    bar = tqdm(total=sum(len(ix) for _, _, ix in arrays), unit="img", desc=f"extract {source.name}",
               disable=not progress, leave=False)
    with ThreadPoolExecutor(max_workers=1) as writer:
        for name, image_path, indices in arrays:
            chunk = chunk_images if chunk_images != "auto" else chunk_length(
                bytes_per_image((len(indices), *source.shape), "float16"), max(len(indices), 1))
            out = _array(group, name, len(indices), source.shape, int(chunk))
            _extract_array(source, data[image_path], indices, out, batch, writer, bar.update)
    bar.close()
    _clear_progress(group)
    mark_complete(group)
    return outcome


def _clear_progress(group: zarr.Group) -> None:
    """Drop the per-chunk bookkeeping once a source is complete (a finished store has none)."""
    for _, array in group.arrays():
        if "chunks_done" in array.attrs:
            del array.attrs["chunks_done"]
    for _, sub in group.groups():
        _clear_progress(sub)


def open_features(path: str | Path, sources: list[str] | None = None, data_hash: str | None = None) -> zarr.Group:
    """features.zarr read-only; refuses it, or any requested source, when incomplete or made from other data."""
    from taskonomy.store import open_complete

    root = open_complete(path, "taskonomy extract")
    if data_hash is not None and root.attrs.get("data_hash") != data_hash:
        raise TaskonomyError(f"{path} was made from another data.zarr (data hash {root.attrs.get('data_hash')} != "
                             f"{data_hash}); run `taskonomy extract` to redo it")
    for name in sources or []:
        if name not in root or not root[name].attrs.get("complete"):
            raise TaskonomyError(f"{path}: source {name!r} has no complete features; run `taskonomy extract`")
    return root
