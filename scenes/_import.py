"""The streaming writer of imported data (`data --from-taskonomy`, `data --from-arrays`): chunk by chunk.

Memory: the reader hands over one chunk of every array while the writer thread compresses the previous one, so
at most two chunks of every per-image array are in memory (`memory_bound`), besides the list of images. Each
written chunk is recorded with a digest of its bytes; a killed import resumes at the first unrecorded chunk and
ends with the same bytes as an uninterrupted one. The derived inputs that the tasks read (gray, noisy, masked,
permuted) are made from each chunk's rgb images as the generator makes them. The store's identity
(`content_hash`, what later stages compare) hashes those digests, the splits and the attributes: another
selection is another identity.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from PIL import Image
from tqdm import tqdm

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import content_hash
from taskonomy.runtime import default_threads
from taskonomy.scenes.labels import make_inputs
from taskonomy.store import (bytes_per_image, chunk_length, create_image_array, locate, mark_complete,
                             open_for_writing, open_group, write_state)

__all__ = ["DERIVED", "ImportPlan", "building_splits", "derived_arrays", "memory_bound", "resize_image",
           "resize_label", "round_robin", "write_import"]

DERIVED = ("gray", "noisy", "masked", "permuted")  # inputs made from rgb (scenes.labels.make_inputs)

Block = dict[str, np.ndarray]


@dataclass
class ImportPlan:
    """What an import writes: per-image arrays (name -> (shape, dtype)), splits, root attributes, and `key`:
    a hash of the sources and the selection (a store with another key is not resumed); `chunk_images`: images per
    chunk, None for the store module's policy."""

    arrays: dict[str, tuple[tuple[int, ...], str]]
    splits: dict[str, np.ndarray]
    attrs: dict[str, Any]
    key: str
    chunk_images: int | None = None
    seed: int = 0  # of the derived inputs' randomness (noise, mask, jigsaw permutation), as the generator's

    @property
    def n(self) -> int:
        return next(iter(self.arrays.values()))[0][0]

    @property
    def chunk(self) -> int:
        """Images per chunk: as given, else the store module's policy for the widest array."""
        if self.chunk_images is not None:
            return max(1, min(self.chunk_images, self.n))
        return chunk_length(max(bytes_per_image(s, d) for s, d in self.arrays.values()), self.n)


def derived_arrays(tasks: Sequence[registry.Task], n: int, size: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """The derived inputs the tasks read (colorization gray, denoising noisy, ...): made at import from the rgb
    image as the generator makes them, since a Taskonomy folder has none."""
    wanted = {t.modality for t in tasks}
    return {f"inputs/{m}": ((n, 1 if m == "gray" else 3, size, size), "uint8") for m in DERIVED if m in wanted}


def _derive(block: Block, plan: ImportPlan, lo: int) -> Block:
    """The block with its derived inputs; jigsaw's label is the permutation of the permuted input made here
    (a label that came with the data belongs to an input the data does not have)."""
    names = [k for k in plan.arrays if k.startswith("inputs/")]
    if not names:
        return block
    rgb = block["images/rgb"].transpose(0, 2, 3, 1).astype(np.float32) / np.float32(255)
    inputs, jigsaw = make_inputs(rgb, np.arange(lo, lo + len(rgb)), plan.seed)
    block.update({k: inputs[k.split("/", 1)[1]] for k in names})
    if "labels/jigsaw" in plan.arrays:
        block["labels/jigsaw"] = jigsaw
    return block


def memory_bound(plan: ImportPlan) -> int:
    """Bytes of array data an import holds at most: two chunks of every per-image array (one read, one written)."""
    return 2 * plan.chunk * sum(bytes_per_image(s, d) for s, d in plan.arrays.values())


def round_robin(groups: Sequence[Sequence[int]], limit: int | None) -> list[int]:
    """At most `limit` items, taken from each group in turn (every building keeps images), sorted."""
    if limit is None:
        return sorted(i for g in groups for i in g)
    if limit < 1:
        raise TaskonomyError(f"--limit must be a positive number of images, got {limit}")
    chosen: list[int] = []
    for depth in range(max((len(g) for g in groups), default=0)):
        for g in groups:
            if depth < len(g) and len(chosen) < limit:
                chosen.append(g[depth])
    return sorted(chosen)


def building_splits(buildings: Sequence[str], test: float, transfer: float) -> dict[str, np.ndarray]:
    """train / transfer / test image indices by building (as the generator splits by scene).

    Buildings are ordered by the SHA-256 of their name, so the split depends on the names, not on the order
    they were found in; `test` of them (at least one) are held out, `transfer` of the rest (at least one) are the
    readouts' train images."""
    names = sorted(set(buildings), key=lambda b: hashlib.sha256(b.encode()).hexdigest())
    if len(names) < 2:
        raise TaskonomyError(f"the images come from {len(names)} building; splits by building need at least 2 "
                             f"(train and test)")
    n_test = min(len(names) - 1, max(1, round(test * len(names))))
    held, kept = set(names[:n_test]), names[n_test:]
    readout = set(kept[:max(1, round(transfer * len(kept)))])
    index = np.arange(len(buildings), dtype=np.int64)
    is_test = np.array([b in held for b in buildings], bool)
    is_readout = np.array([b in readout for b in buildings], bool)
    return {"train": index[~is_test], "transfer": index[is_readout], "test": index[is_test]}


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 3) uint8 image at size x size, bilinear."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))


def resize_label(x: np.ndarray, size: int, classes: bool) -> np.ndarray:
    """A dense label ((C, H, W) values, or (H, W) class ids) at size x size: bilinear, class ids nearest."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if classes:  # class ids must stay ids
        return np.asarray(Image.fromarray(x).resize((size, size), Image.NEAREST))
    return np.stack([np.asarray(Image.fromarray(c.astype(np.float32)).resize((size, size), Image.BILINEAR))
                     for c in x])


def _state(path: Path, key: str, force: bool) -> str:
    """'fresh', 'resume' or 'done' for the store at `path`; refuses a store of another origin unless forced."""
    return write_state(path, force, lambda old: None if old.get("import_key") == key else (
        "exists and holds other data (another import, selection or the generator's); pass --force to replace it"))


def write_import(path: str | Path, plan: ImportPlan, read: Callable[[int, int, ThreadPoolExecutor], Block],
                 force: bool = False, progress: bool = True, desc: str = "import") -> str:
    """Write the store of `plan` at `path`, `read(lo, hi, pool)` giving images lo..hi of every array:
    'imported', 'resumed', or 'up to date' when the same import is already complete."""
    path = locate(path)  # a folder, or a StoreURL under storage.url
    state = _state(path, plan.key, force)
    if state == "done":
        return "up to date"
    chunk, n = plan.chunk, plan.n
    if state == "resume":
        group = open_group(path, "r+")
        if group.attrs.get("chunk_images") != chunk or not all(k in group and group[k].shape == s
                                                                for k, (s, _) in plan.arrays.items()):
            state = "fresh"
    if state == "fresh":
        group = open_for_writing(path, {**plan.attrs, "import_key": plan.key, "chunk_images": chunk,
                                        "chunks_done": [], "chunk_digests": {}})
        for name, (shape, dtype) in plan.arrays.items():
            create_image_array(group, name, shape, dtype, chunk)
    done = set(group.attrs.get("chunks_done", []))
    todo = [c for c in range(math.ceil(n / chunk)) if c not in done]
    bar = tqdm(total=n, initial=n - sum(min(n, (c + 1) * chunk) - c * chunk for c in todo), unit="img", desc=desc,
               disable=not progress)
    pending: Future | None = None
    with ThreadPoolExecutor(default_threads()) as pool, ThreadPoolExecutor(max_workers=1) as writer:
        for c in todo:
            lo, hi = c * chunk, min(n, (c + 1) * chunk)
            block = _checked(_derive(read(lo, hi, pool), plan, lo), plan, lo, hi)
            if pending is not None:
                pending.result()  # at most one chunk waits for the writer: the memory bound
            pending = writer.submit(_write_chunk, group, c, lo, hi, block)
            bar.update(hi - lo)
        if pending is not None:
            pending.result()
    bar.close()
    digests = group.attrs["chunk_digests"]
    for name, indices in plan.splits.items():
        create_image_array(group, f"splits/{name}", indices.shape, "int64", max(1, len(indices)))[:] = indices
    described = {k: v for k, v in plan.attrs.items() if k != "imported_from"}  # where it came from is not content
    identity = content_hash("import", described, [digests[str(c)] for c in range(math.ceil(n / chunk))],
                            {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in plan.splits.items()})
    for key in ("chunks_done", "chunk_digests"):
        del group.attrs[key]
    group.attrs["content_hash"] = identity
    mark_complete(group)
    return "resumed" if state == "resume" else "imported"


def _checked(block: Block, plan: ImportPlan, lo: int, hi: int) -> Block:
    """The reader's block cast to the plan's dtypes, every array present with hi - lo images."""
    out = {}
    for name, (shape, dtype) in plan.arrays.items():
        values = np.asarray(block[name]).astype(dtype, copy=False)
        if values.shape != (hi - lo, *shape[1:]):
            raise TaskonomyError(f"{name}: images {lo}..{hi - 1} have shape {values.shape}, expected "
                                 f"{(hi - lo, *shape[1:])}")
        out[name] = values
    return out


def _write_chunk(group: zarr.Group, c: int, lo: int, hi: int, block: Block) -> None:
    digest = hashlib.sha256()
    for name, values in block.items():
        group[name][lo:hi] = values
        digest.update(name.encode())
        digest.update(memoryview(np.ascontiguousarray(values)).cast("B"))  # the array's bytes, not a copy of them
    # recorded only after every array of the chunk is on disk: a kill before this line redoes the chunk
    group.attrs.update({"chunks_done": sorted({*group.attrs.get("chunks_done", []), c}),
                        "chunk_digests": {**group.attrs.get("chunk_digests", {}), str(c): digest.hexdigest()}})
