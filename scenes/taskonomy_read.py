"""Read a Taskonomy folder into data.zarr, streamed chunk by chunk (DESIGN.md sections 4 and 10).

    taskonomy data --from-taskonomy DIR [--buildings a,b] [--limit N]

Reads our export's layout (`<domain>/<building>/...`), the original release's `<building>/<domain>/...` and
omnidata's `<domain>/taskonomy/<building>/...`; PNG encodings as in taskonomy_format. Three passes:
1. the file names (kept: one key per file of the chosen buildings; then one per chosen image);
2. every point_info JSON of those buildings (which images are second views, which labels each holds, each
   label checked) and every chosen PNG's header (mode and size): a bad file is refused before anything is
   written;
3. the images, one chunk of every array at a time (scenes/_import.py: at most two chunks in memory), resumable.
Splits: the export file's recorded ones; a folder without it (a real Taskonomy or Omnidata subset) is split by
building (`building_splits`, fractions from the config's data.splits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import content_hash
from taskonomy.runtime import default_threads
from taskonomy.scenes._import import (ImportPlan, building_splits, derived_arrays, resize_image, resize_label,
                                      round_robin, write_import)
from taskonomy.scenes.taskonomy_format import EXPORT_FILE, FILE_RE, Encoding, encoding_for

__all__ = ["plan_taskonomy", "read_taskonomy"]

_DATA_NAMES = {"principal_curvature": "curvature"}  # the data release's domain names that are not task aliases
_MODE_WORDS = {"L": "8-bit grey", "I;16": "16-bit grey", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA"}
_STORE_KEYS_DROPPED = ("complete", "chunk_images", "chunks_done", "config_hash", "content_hash", "import_key")
# config_hash is dropped: the PNG round trip quantises, so these are not the generator's bytes

Key = tuple[str, int, int]  # (building, point, view)
_BATCH = 1024  # files checked or JSONs parsed per pool.map: at most this many are in flight while planning


@dataclass
class _Domain:
    """The files of one task (or rgb / point_info): their keys and each building's folder."""

    name: str  # the domain as the file names spell it
    ext: str
    folders: dict[str, Path] = field(default_factory=dict)
    keys: set[Key] = field(default_factory=set)

    def path(self, key: Key) -> Path:
        return self.folders[key[0]] / f"point_{key[1]}_view_{key[2]}_domain_{self.name}{self.ext}"

    def located(self) -> _Domain:
        """The same files without their keys: what the reader keeps once the images are chosen."""
        return _Domain(self.name, self.ext, self.folders)


@dataclass
class _Source:
    """The PNGs of one array: a domain, the second views of a pair task (image -> view), the label encoding."""

    domain: _Domain
    views: dict[Key, Key] | None = None
    encoding: Encoding | None = None  # None: an image

    def paths(self, keys: list[Key]) -> list[Path]:
        return [self.domain.path(self.views[k] if self.views is not None else k) for k in keys]


@dataclass
class _Infos:
    """What the point_info JSONs say: second views, and which labels each image has (checked)."""

    second: dict[str, dict[Key, Key]] = field(default_factory=dict)  # pair task -> {image: its second view}
    labels: dict[Key, frozenset[str]] = field(default_factory=dict)  # image -> tasks with a valid label
    bad: dict[str, str] = field(default_factory=dict)  # task -> the first file whose label is malformed
    domain: _Domain | None = None  # the point_info files, read again chunk by chunk for the labels


def read_taskonomy(folder: str | Path, out_path: str | Path, size: int | None = None,
                   tasks: list[str] | None = None, buildings: list[str] | None = None, limit: int | None = None,
                   splits: tuple[float, float] = (0.25, 0.25), chunk_images: int | None = None, force: bool = False,
                   progress: bool = True) -> str:
    """Import a Taskonomy folder into data.zarr at `out_path`, streamed: 'imported', 'resumed' or 'up to date'.

    `buildings`/`limit` select images (limit: taken from each building in turn); `splits` = (test, transfer)
    fractions for a folder without our export file; `chunk_images` None: the store module's policy."""
    plan, read = plan_taskonomy(folder, size, tasks, buildings, limit, splits, chunk_images)
    return write_import(out_path, plan, read, force=force, progress=progress, desc="import")


def plan_taskonomy(folder: str | Path, size: int | None = None, tasks: list[str] | None = None,
                   buildings: list[str] | None = None, limit: int | None = None,
                   splits: tuple[float, float] = (0.25, 0.25),
                   chunk_images: int | None = None) -> tuple[ImportPlan, Callable]:
    """The plan of an import and its block reader; every file checked, nothing written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskonomyError(f"{folder} is not a folder")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise TaskonomyError(f"size must be a positive number of pixels, got {size!r}")
    meta = _load_json(folder / EXPORT_FILE) if (folder / EXPORT_FILE).exists() else {}
    domains = _scan(folder, meta, buildings)
    with ThreadPoolExecutor(default_threads()) as pool:
        infos = _read_infos(domains.pop("point_info", None), pool)
        rgb = domains.get("rgb")
        seconds = {k for m in infos.second.values() for k in m.values()}
        every = sorted(set(rgb.keys if rgb else ()) - seconds)
        if not every:
            raise TaskonomyError(f"{folder}: no rgb images (point_<p>_view_<v>_domain_rgb.png) found")
        chosen = _choose_tasks(folder, domains, infos, tasks, meta)
        for task in chosen:
            if task.head == "dense":
                _matching(domains[task.name], every)
        by_building: dict[str, list[int]] = {}
        for i, (b, _, _) in enumerate(every):
            by_building.setdefault(b, []).append(i)
        images = [every[i] for i in round_robin(list(by_building.values()), limit)]
        del every, seconds
        files = _png_files(chosen, domains, infos, images, meta)
        s = _check_headers(files, images, size, pool)
        del domains  # the keys of every file: from here on, one key per chosen image
    for task in chosen:
        if task.head != "dense":
            _check_globals(task, infos, images)

    listed, scene, point = _scene_and_point(images)
    n = len(images)
    arrays = {name: ((n, 3, s, s), "uint8") if enc is None else ((n, *_task_of(name).label_shape(s)),
                                                                  _task_of(name).store_dtype)
              for name, enc in ((k, v.encoding) for k, v in files.items())}
    arrays.update({f"labels/{t.name}": ((n, *t.label_shape(0)), t.store_dtype) for t in chosen if t.head != "dense"})
    arrays.update({**derived_arrays(chosen, n, s), "meta/scene": ((n,), "int32"), "meta/point": ((n,), "int32")})
    attrs = {k: v for k, v in meta.get("attrs", {}).items() if k not in _STORE_KEYS_DROPPED}
    attrs.update(image_size=s, n_images=n, tasks=[t.name for t in chosen], imported_from=str(folder.resolve()))
    if listed is not None:
        attrs["buildings"] = listed  # meta/scene indexes this list
    split = _splits(images, meta, splits)
    listing = content_hash([f"{b}/{p}/{v}" for b, p, v in images])
    key = content_hash("taskonomy-folder", attrs, listing, sorted(files), {k: v.tolist() for k, v in split.items()})
    plan = ImportPlan(arrays, split, attrs, key, chunk_images, int(attrs.get("seed", 0)))
    globals_ = [t for t in chosen if t.head != "dense"]
    info_domain = infos.domain.located() if globals_ else None
    del infos

    def read(lo: int, hi: int, pool: ThreadPoolExecutor) -> dict[str, np.ndarray]:
        block = {}
        for name, source in files.items():
            shape, dtype = plan.arrays[name]
            block[name] = out = np.empty((hi - lo, *shape[1:]), dtype)
            load = partial(_read_png, enc=source.encoding, size=s, dtype=dtype)
            for j, x in enumerate(pool.map(load, source.paths(images[lo:hi]))):
                out[j] = x  # filled as the threads finish: no list of the chunk's images beside it
        if globals_:
            info_files = [info_domain.path(k) for k in images[lo:hi]]
            loaded = [_aliased(x) for x in pool.map(_load_json, info_files)]
            for t in globals_:
                block[f"labels/{t.name}"] = np.stack([_global_value(t, x[t.name]) for x in loaded])
        block["meta/scene"], block["meta/point"] = scene[lo:hi], point[lo:hi]
        return block

    return plan, read


def _scene_and_point(images: list[Key]) -> tuple[list[str] | None, np.ndarray, np.ndarray]:
    """meta/scene (k of `scene<k>` building names, else the index in the sorted names, which are returned) and
    meta/point."""
    names = sorted({b for b, _, _ in images})
    numbered = [re.fullmatch(r"scene(\d+)", b) for b in names]
    ids = {b: int(m[1]) if all(numbered) else i for i, (b, m) in enumerate(zip(names, numbered))}
    scene = np.array([ids[b] for b, _, _ in images], np.int32)
    point = np.array([p for _, p, _ in images], np.int32)
    return (None if all(numbered) else names), scene, point


def _task_of(array_name: str) -> registry.Task:
    return registry.get(array_name.split("/", 1)[1])


def _load_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TaskonomyError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(value, dict):
        raise TaskonomyError(f"{path}: expected a JSON object")
    return value


def _aliased(info: dict[str, Any]) -> dict[str, Any]:
    return {registry.resolve_alias(k): v for k, v in info.items()}


def _domain_task(domain: str, meta: dict[str, Any]) -> str | None:
    """Our task name for a file's domain (rgb and point_info as themselves), None for domains we skip."""
    if domain in ("rgb", "point_info"):
        return domain
    if domain in meta.get("encodings", {}):
        return meta["encodings"][domain]["task"]
    name = _DATA_NAMES.get(domain, registry.resolve_alias(domain))
    return name if name in {t.name for t in registry.all_tasks()} else None


def _scan(folder: Path, meta: dict[str, Any], buildings: list[str] | None) -> dict[str, _Domain]:
    """task (or rgb / point_info) -> its files in the chosen buildings (all when `buildings` is None)."""
    domains: dict[str, _Domain] = {}
    seen: set[str] = set()
    wanted = set(buildings) if buildings is not None else None
    for path in folder.rglob("point_*_view_*_domain_*"):
        match = FILE_RE.fullmatch(path.stem)
        if not match or path.suffix != (".json" if match[3] == "point_info" else ".png"):
            continue
        name = _domain_task(match[3], meta)
        if name is None:
            continue  # a domain of the release that is not a task here (mask_valid, ...)
        parts = [p for p in path.relative_to(folder).parts[:-1] if p not in (match[3], "taskonomy")]
        if not parts:
            raise TaskonomyError(f"{path}: no building folder in its path")
        building = parts[-1]
        seen.add(building)
        if wanted is not None and building not in wanted:
            continue
        domain = domains.setdefault(name, _Domain(match[3], path.suffix))
        if domain.name != match[3]:
            raise TaskonomyError(f"task {name} comes as two domains, {domain.name} and {match[3]} ({path})")
        if domain.folders.setdefault(building, path.parent) != path.parent:
            raise TaskonomyError(f"{path}: building {building} has {match[3]} files in two folders "
                                 f"({domain.folders[building]} too)")
        key = (building, int(match[1]), int(match[2]))
        if key in domain.keys:
            raise TaskonomyError(f"{path}: the same image and domain as {domain.path(key)}")
        domain.keys.add(key)
    if not seen:
        raise TaskonomyError(f"{folder}: no Taskonomy files (point_<p>_view_<v>_domain_<domain>.png) found")
    missing = sorted((wanted or set()) - seen)
    if missing:
        raise TaskonomyError(f"{folder}: no building {missing[0]} (it has {len(seen)}: "
                             f"{', '.join(sorted(seen)[:5])}{', ...' if len(seen) > 5 else ''})")
    return domains


def _read_infos(domain: _Domain | None, pool: ThreadPoolExecutor) -> _Infos:
    """Every point_info JSON read once on threads, only what the import needs kept (not the JSONs)."""
    out = _Infos(domain=domain)
    if domain is None:
        return out
    known = {t.name: t for t in registry.all_tasks() if t.head in ("global", "pair")}
    keys = sorted(domain.keys)
    interned: dict[frozenset[str], frozenset[str]] = {}
    def infos() -> Iterator[tuple[Key, dict[str, Any]]]:  # _BATCH files in flight, not one future per file
        for lo in range(0, len(keys), _BATCH):
            yield from zip(keys[lo:lo + _BATCH], pool.map(lambda k: _aliased(_load_json(domain.path(k))),
                                                          keys[lo:lo + _BATCH]))

    for key, info in infos():
        views = info.get("views")  # ours: {task: view}; the release's point_info has no such key
        for name, slot in (views.items() if isinstance(views, dict) else ()):
            if isinstance(slot, int):
                out.second.setdefault(name, {})[key] = (key[0], key[1], slot)
        valid = set()
        for name in info.keys() & known.keys():
            try:
                _global_value(known[name], info[name])
                valid.add(name)
            except TaskonomyError:
                out.bad.setdefault(name, f"{_file_name(key, 'point_info')}.json")
        labels = frozenset(valid)
        out.labels[key] = interned.setdefault(labels, labels)  # most images share one set: stored once
    return out


def _global_value(task: registry.Task, value: Any) -> np.ndarray:
    shape = task.label_shape(0)  # global and pair labels do not depend on the image size
    try:
        x = np.asarray(value, task.store_dtype).reshape(shape)
    except (ValueError, TypeError):
        raise TaskonomyError(f"task {task.name}: a label is not {task.store_dtype} of shape {shape}") from None
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise TaskonomyError(f"task {task.name}: a label holds NaN or inf")
    return x


def _choose_tasks(folder: Path, domains: dict[str, _Domain], infos: _Infos, wanted: list[str] | None,
                  meta: dict[str, Any]) -> list[registry.Task]:
    """The tasks to read: those requested (each must be present), else every task the folder has."""
    known = {t.name: t.head for t in registry.all_tasks()}
    found = {name for name in domains if known.get(name) == "dense"}
    found |= {k for labels in set(infos.labels.values()) for k in labels if known.get(k) == "global"}
    found |= {k for k in infos.bad if known.get(k) == "global"}
    found |= {k for k in infos.second if known.get(k) == "pair"}
    wanted = [wanted] if isinstance(wanted, str) else wanted
    names = [registry.get(n).name for n in wanted] if wanted is not None else sorted(found)
    for name in names:
        if name not in found:
            raise TaskonomyError(f"{folder}: task {name} has no labels (or second views) in this folder")
    order = [n for n in meta.get("attrs", {}).get("tasks", []) if n in names]
    return [registry.get(n) for n in order + [n for n in names if n not in order]]


def _file_name(key: Key, domain: str) -> str:
    return f"{key[0]}/point_{key[1]}_view_{key[2]}_domain_{domain}"


def _matching(domain: _Domain, images: list[Key]) -> None:
    """A domain must have exactly the images that rgb has (in the chosen buildings)."""
    extra = sorted(domain.keys - set(images))
    if extra or len(domain.keys) != len(images):
        example = extra[0] if extra else next(k for k in images if k not in domain.keys)
        raise TaskonomyError(f"domain {domain.name}: {len(domain.keys)} images but rgb has {len(images)} "
                             f"(e.g. {_file_name(example, domain.name)})")


def _png_files(chosen: list[registry.Task], domains: dict[str, _Domain], infos: _Infos, images: list[Key],
               meta: dict[str, Any]) -> dict[str, _Source]:
    """Array name -> where its PNGs are (checked: every chosen image has one)."""
    rgb = domains["rgb"]
    files = {"images/rgb": _Source(rgb.located())}
    for task in chosen:
        if task.head == "pair":
            views = infos.second.get(task.name, {})
            for k in images:
                if views.get(k) not in rgb.keys:
                    what = f"{_file_name(views[k], 'rgb')}.png is missing" if k in views else \
                        f"{_file_name(k, 'point_info')}.json names none"
                    raise TaskonomyError(f"task {task.name}: no second view: {what}")
            files[f"views/{task.name}"] = _Source(rgb.located(), {k: views[k] for k in images})
        elif task.head == "dense":
            domain = domains[task.name]
            enc = _reading_encoding(task, domain.name, meta)
            files[f"labels/{task.name}"] = _Source(domain.located(), None, enc)
    return files


def _check_globals(task: registry.Task, infos: _Infos, images: list[Key]) -> None:
    """Every chosen image has a well-formed label of `task` in its point_info JSON."""
    if task.name in infos.bad:
        raise TaskonomyError(f"task {task.name}: the label in {infos.bad[task.name]} is not {task.store_dtype} of "
                             f"shape {task.label_shape(0)} (or not finite)")
    for key in images:
        if task.name not in infos.labels.get(key, ()):
            raise TaskonomyError(f"task {task.name}: no label in {_file_name(key, 'point_info')}.json")


def _reading_encoding(task: registry.Task, domain: str, meta: dict[str, Any]) -> Encoding:
    """The exporter's recorded encoding when there is one, else the fixed table's."""
    recorded = meta.get("encodings", {}).get(domain)
    if recorded:
        fields = {k: v for k, v in recorded.items() if k != "task"}
        return Encoding(**{**fields, "scale": tuple(fields["scale"]), "offset": tuple(fields["offset"])})
    enc = encoding_for(task)
    if enc is None:
        raise TaskonomyError(f"domain {domain}: no known PNG encoding for task {task.name} "
                             f"(and no {EXPORT_FILE} that records one)")
    return enc


def _check_headers(files: dict[str, _Source], images: list[Key], size: int | None, pool: ThreadPoolExecutor) -> int:
    """Every PNG's mode and size, from its header only; the image size (`size`, else the first rgb's)."""
    s = size or _open_png(files["images/rgb"].paths(images[:1])[0], "RGB", None, "rgb").size[0]
    for source in files.values():
        enc = source.encoding
        mode, domain = ("RGB", "rgb") if enc is None else (enc.mode, enc.domain)
        check = partial(_check_png, mode=mode, size=None if size else s, domain=domain)
        for lo in range(0, len(images), _BATCH):
            list(pool.map(check, source.paths(images[lo:lo + _BATCH])))
    return s


def _check_png(path: Path, mode: str, size: int | None, domain: str) -> None:
    """`_open_png`'s checks from the header alone; the file is closed at once (thousands are checked at a time)."""
    _open_png(path, mode, size, domain, load=False).close()


def _open_png(path: Path, mode: str, size: int | None, domain: str, load: bool = True) -> Image.Image:
    """The PNG at `path`, checked for its mode (bit depth, channels) and, when `size` is given, its size."""
    accepted = ("I;16", "I;16B", "I") if mode == "I;16" else (mode,)
    try:
        image = Image.open(path)
        if load:
            image.load()
    except OSError as err:
        raise TaskonomyError(f"{path}: not a readable PNG ({err})") from None
    if image.mode not in accepted:
        raise TaskonomyError(f"{path}: expected a {_MODE_WORDS[mode]} PNG for {domain}, got PIL mode {image.mode}")
    w, h = image.size
    if w != h or (size is not None and w != size):
        raise TaskonomyError(f"{path}: {w}x{h} pixels, expected {size or w}x{size or w} (pass size= to resize)")
    return image


def _read_png(path: Path, enc: Encoding | None, size: int, dtype: str) -> np.ndarray:
    """An image (3, S, S) when `enc` is None, else the decoded label, at `size`."""
    if enc is None:
        return resize_image(np.asarray(_open_png(path, "RGB", None, "rgb")), size).transpose(2, 0, 1)
    x = enc.decode(np.asarray(_open_png(path, enc.mode, None, enc.domain)))
    return resize_label(x, size, enc.classes).astype(dtype, copy=False)


def _splits(images: list[Key], meta: dict[str, Any], fractions: tuple[float, float]) -> dict[str, np.ndarray]:
    """The export file's recorded splits (restricted to the chosen images), else splits by building."""
    named = meta.get("splits")
    if not named:
        return building_splits([b for b, _, _ in images], *fractions)
    out = {}
    for split, members in named.items():
        members = set(members)
        out[split] = np.array([i for i, (b, p, _) in enumerate(images)
                               if b in members or f"{b}/point_{p}" in members], np.int64)
    return out
