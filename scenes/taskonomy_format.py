"""Taskonomy's folder format: export data.zarr to it and read it back (DESIGN.md sections 4 and 10).

    taskonomy data --export-taskonomy DIR

writes `DIR/<domain>/<building>/point_<p>_view_<v>_domain_<domain>.png` with building `scene{scene:05d}`,
p = meta/point, v = 0 for the main view; `taskonomy_read.read_taskonomy` reads that layout, the original
release's `<building>/<domain>/...` and omnidata's `<domain>/taskonomy/<building>/...` into a data.zarr.

Encodings (PNG code c, label x; `x = c / scale + offset`, `c = round((x - offset) * scale)` clipped):

| task (domain) | PNG | scale | offset | range |
|---|---|---|---|---|
| rgb, views | 8-bit RGB | | | the uint8 image |
| depth_zbuffer, depth_euclidean | 16-bit grey | 512 | 0 | [0, 127.998] m; 65535 = too far / invalid |
| normal | 8-bit RGB | 127 | -1 | [-1, 1.008]: c = round(127 n + 127), n = (c - 127) / 127 |
| segment_semantic, colorization | 8-bit grey | | | class ids (colorization: chroma bins), exact |
| curvature (principal_curvature) | 8-bit RGB, B = 0 | 8 | -15.875 | [-15.875, 16] 1/m; c = 127 is 0 |
| autoencoding, denoising, inpainting, segment_unsup2d | 8-bit RGB | 255 | 0 | [0, 1] |
| segment_unsup25d | 8-bit RGBA | 127 (RGB), 16 (A) | -1 (RGB), 0 (A) | normal [-1, 1], depth [0, 15.94] m |
| edge_texture, edge_occlusion, reshading, keypoints2d, keypoints3d | 16-bit grey | 65535 | 0 | [0, 1] |

Other dense tasks get their data's own per-channel range (16-bit grey for one channel, 8-bit RGB/RGBA for
two to four), recorded in `taskonomy_export.json`, which the reader prefers over this table. Global and pair
labels go into `point_info/<building>/point_<p>_view_0_domain_point_info.json` (keys = task names); the second
view of pair task t is `rgb/<building>/point_<p>_view_<v>_domain_rgb.png` with v = VIEW_SLOTS[t] (egomotion 1,
fixated_pose 2, nonfixated_pose 3, point_matching 4, user pair tasks 5..), and the JSON's "views" key says so.
`taskonomy_export.json` is written last: a folder without it was not exported completely.
The export empties a folder that holds an earlier export of ours and refuses any other non-empty folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from taskonomy import TaskonomyError, TaskonomyWarning
from taskonomy import tasks as registry
from taskonomy.runtime import default_threads
from taskonomy.store import open_complete

__all__ = ["EXPORT_FILE", "VIEW_SLOTS", "Encoding", "encoding_for", "export_taskonomy"]

EXPORT_FILE = "taskonomy_export.json"
_PARTIAL = ".taskonomy_export_partial"
VIEW_SLOTS = {"egomotion": 1, "fixated_pose": 2, "nonfixated_pose": 3, "point_matching": 4}
FILE_RE = re.compile(r"point_(\d+)_view_(\d+)_domain_(\w+)")
_DATA_NAMES = {"principal_curvature": "curvature"}  # the data release's domain names that are not task aliases
_PNG_CHANNELS = {"L": 1, "I;16": 1, "RGB": 3, "RGBA": 4}
_MODE_WORDS = {"L": "8-bit grey", "I;16": "16-bit grey", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA"}
_STORE_KEYS_DROPPED = ("complete", "chunk_images", "chunks_done")

Key = tuple[str, int, int]  # (building, point, view)


@dataclass(frozen=True)
class Encoding:
    """How one dense task is stored as PNG: x = code / scale + offset per channel (or class ids as is)."""

    domain: str
    mode: str  # PIL mode of the PNG: L, I;16, RGB, RGBA
    scale: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()
    classes: bool = False  # uint8 class ids: written as is, resized with nearest

    @property
    def max_code(self) -> int:
        return 65535 if self.mode == "I;16" else 255

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Labels (B, C, H, W) (or (B, H, W) class ids) -> codes (B, H, W[, png channels]), n clipped values."""
        if self.classes:
            return x.astype(np.uint8), 0
        scale = np.asarray(self.scale, np.float32)[:, None, None]
        code = (x.astype(np.float32) - np.asarray(self.offset, np.float32)[:, None, None]) * scale
        bad = int(np.count_nonzero(~np.isfinite(code) | (code < -0.5) | (code > self.max_code + 0.5)))
        code = np.clip(np.nan_to_num(code, nan=self.max_code, posinf=self.max_code, neginf=0), 0, self.max_code)
        code = np.moveaxis(np.rint(code).astype(np.uint16 if self.mode == "I;16" else np.uint8), 1, -1)
        pad = _PNG_CHANNELS[self.mode] - code.shape[-1]
        if pad:  # unused PNG channels are 0
            code = np.concatenate([code, np.zeros(code.shape[:-1] + (pad,), code.dtype)], axis=-1)
        return (code[..., 0] if self.mode in ("L", "I;16") else code), bad

    def decode(self, code: np.ndarray) -> np.ndarray:
        """Codes (H, W[, png channels]) -> labels (C, H, W) float32 (or (H, W) uint8 class ids)."""
        if self.classes:
            return code.astype(np.uint8)
        code = code.reshape(code.shape[:2] + (-1,))[..., :len(self.scale)].astype(np.float32)
        return np.moveaxis(code / np.asarray(self.scale, np.float32) + np.asarray(self.offset, np.float32), -1, 0)


# task -> (domain, PNG mode, scale, offset): x = code / scale + offset (the table of the module docstring)
_TABLE: dict[str, tuple[str, str, float | tuple, float | tuple]] = {
    "depth_zbuffer": ("depth_zbuffer", "I;16", 512, 0),  # the original release: 1/512 m units
    "depth_euclidean": ("depth_euclidean", "I;16", 512, 0),
    "normal": ("normal", "RGB", 127, -1),  # 127-centred as in the original release
    "curvature": ("principal_curvature", "RGB", 8, -127 / 8),
    **{k: (k, "RGB", 255, 0) for k in ("autoencoding", "denoising", "inpainting", "segment_unsup2d")},
    "segment_unsup25d": ("segment_unsup25d", "RGBA", (127, 127, 127, 16), (-1, -1, -1, 0)),
    # edge_texture is a Sobel/8 magnitude of [0, 1] luma (at most 0.71), the others are ramps or tanh in [0, 1]
    **{k: (k, "I;16", 65535, 0) for k in ("edge_texture", "edge_occlusion", "reshading", "keypoints2d",
                                           "keypoints3d")},
}


def encoding_for(task: registry.Task) -> Encoding | None:
    """The fixed encoding of a built-in dense task (module docstring), None when it has none."""
    if task.head != "dense":
        return None
    if task.loss == "ce_dense" and task.label_dtype == "uint8":
        return Encoding(task.name, "L", classes=True)
    if task.name not in _TABLE:
        return None
    domain, mode, scale, offset = _TABLE[task.name]
    per = lambda v: tuple(float(a) for a in (v if isinstance(v, tuple) else (v,) * task.channels))  # noqa: E731
    return Encoding(domain, mode, per(scale), per(offset))


def _data_encoding(task: registry.Task, array: Any) -> Encoding:
    """For a dense task with no fixed encoding: its data's own per-channel range."""
    c = task.channels
    if c > 4:
        raise TaskonomyError(f"task {task.name}: {c} channels do not fit one PNG (at most 4)")
    values = np.moveaxis(np.asarray(array[:], np.float32), 1, 0).reshape(c, -1)
    lo, hi = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
    mode = "I;16" if c == 1 else ("RGB" if c <= 3 else "RGBA")
    top = 65535 if mode == "I;16" else 255
    scale = tuple(float(top / (h - l)) if h > l else 1.0 for l, h in zip(lo, hi))
    return Encoding(task.name, mode, scale, tuple(float(l) for l in lo))


# ---------------------------------------------------------------------------------------------- export


def export_taskonomy(data_path: str | Path, out_dir: str | Path, progress: bool = True) -> int:
    """Write the complete data.zarr at `data_path` in Taskonomy's layout under `out_dir`; returns the image count."""
    group = open_complete(data_path, "taskonomy data")
    n, size = group["images/rgb"].shape[0], int(group["images/rgb"].shape[-1])
    scene, point = np.asarray(group["meta/scene"][:]), np.asarray(group["meta/point"][:])
    buildings = [f"scene{int(s):05d}" for s in scene]
    if len(set(zip(buildings, point.tolist()))) != n:
        raise TaskonomyError(f"{data_path}: meta/scene and meta/point do not name each image once")
    names = list(group["labels"].array_keys()) if "labels" in group else []
    encodings, views = _plan(group, names)
    out = _fresh_folder(Path(out_dir))  # only now: a store we cannot export leaves an earlier export alone
    for b in set(buildings):
        for domain in ["rgb", "point_info", *(e.domain for e in encodings.values())]:
            (out / domain / b).mkdir(parents=True, exist_ok=True)

    clipped = dict.fromkeys(encodings, 0)
    arrays = {name: group[name] for name in ["images/rgb", *(f"views/{k}" for k in views),
                                             *(f"labels/{k}" for k in names)]}  # look-ups cost ~1 ms each
    chunk = max(1, group["images/rgb"].chunks[0])
    step = chunk * max(1, 64 // chunk)  # whole chunks, and enough images per block to keep the pool busy
    bar = tqdm(total=n, unit="img", desc="export", disable=not progress)
    with ThreadPoolExecutor(default_threads()) as pool:
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            jobs = _block_jobs(arrays, out, lo, hi, buildings, point, encodings, views, clipped)
            list(pool.map(lambda job: job[0](*job[1:]), jobs))  # PNG zlib releases the GIL
            bar.update(hi - lo)
    bar.close()
    _warn_clipped(encodings, clipped)
    _write_json(out / EXPORT_FILE, {
        "format": "taskonomy-folder", "version": 1, "image_size": size, "n_images": n,
        "buildings": sorted(set(buildings)), "splits": _named_splits(group, buildings, point), "views": views,
        "encodings": {e.domain: {"task": name, **asdict(e)} for name, e in encodings.items()},
        "attrs": {k: v for k, v in group.attrs.asdict().items() if k not in _STORE_KEYS_DROPPED},
    })
    (out / _PARTIAL).unlink()
    return n


def _plan(group: Any, names: list[str]) -> tuple[dict[str, Encoding], dict[str, int]]:
    """The PNG encoding of each dense label, and the view number of each pair task's second view."""
    tasks = [registry.get(name) for name in names]
    encodings = {t.name: encoding_for(t) or _data_encoding(t, group[f"labels/{t.name}"])
                 for t in tasks if t.head == "dense"}
    pair = [t.name for t in tasks if t.head == "pair" and f"views/{t.name}" in group]
    free = iter(range(max(VIEW_SLOTS.values()) + 1, 10**6))  # slots for user-registered pair tasks
    return encodings, {name: VIEW_SLOTS.get(name) or next(free) for name in sorted(pair)}


def _warn_clipped(encodings: dict[str, Encoding], clipped: dict[str, int]) -> None:
    for name, count in clipped.items():
        if count:  # the fixed ranges are a guess about the labels: say when one is too narrow
            e = encodings[name]
            ranges = ", ".join(f"[{o:g}, {o + e.max_code / s:g}]" for s, o in zip(e.scale, e.offset))
            warnings.warn(f"task {name}: {count} values outside {ranges} were clipped in the PNG export",
                          TaskonomyWarning, stacklevel=3)


def _fresh_folder(out: Path) -> Path:
    """`out` emptied of a previous (or killed) export of ours, so no stale domain survives; others' refused."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not ((out / EXPORT_FILE).exists() or (out / _PARTIAL).exists()):
            raise TaskonomyError(f"{out} is not empty and holds no Taskonomy export; choose an empty or new folder")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / _PARTIAL).touch()  # until EXPORT_FILE is written: marks the folder as ours, and unfinished
    return out


def _block_jobs(arrays: dict[str, Any], out: Path, lo: int, hi: int, buildings: list[str], point: np.ndarray,
                encodings: dict[str, Encoding], views: dict[str, int], clipped: dict[str, int]) -> list[tuple]:
    """(writer, path, payload) for every file of images lo..hi."""
    def path(domain: str, i: int, v: int = 0, ext: str = "png") -> Path:
        return out / domain / buildings[i] / f"point_{int(point[i])}_view_{v}_domain_{domain}.{ext}"

    jobs: list[tuple] = []
    block = {name: np.asarray(array[lo:hi]) for name, array in arrays.items()}
    rgb = np.moveaxis(block["images/rgb"], 1, -1)
    jobs += [(_save_png, path("rgb", lo + j), rgb[j]) for j in range(hi - lo)]
    for name, v in views.items():
        second = np.moveaxis(block[f"views/{name}"], 1, -1)
        jobs += [(_save_png, path("rgb", lo + j, v), second[j]) for j in range(hi - lo)]
    for name, enc in encodings.items():
        code, bad = enc.encode(block[f"labels/{name}"])
        clipped[name] += bad
        jobs += [(_save_png, path(enc.domain, lo + j), code[j]) for j in range(hi - lo)]
    values = {k[7:]: v for k, v in block.items() if k.startswith("labels/") and k[7:] not in encodings}
    for j in range(hi - lo):
        info: dict[str, Any] = {"building": buildings[lo + j], "point": int(point[lo + j]), "view": 0}
        info.update({k: v[j].tolist() for k, v in values.items()})  # float32 -> float: exact through JSON
        if views:
            info["views"] = views
        jobs.append((Path.write_text, path("point_info", lo + j, ext="json"), json.dumps(info)))
    return jobs


def _named_splits(group: Any, buildings: list[str], point: np.ndarray) -> dict[str, list[str]]:
    """Each split as building names; as `building/point_p` keys when a split takes part of a building."""
    if "splits" not in group:
        return {}
    splits = {k: np.asarray(group[f"splits/{k}"][:]).tolist() for k in group["splits"].array_keys()}
    total = Counter(buildings)
    if all(c == total[b] for idx in splits.values() for b, c in Counter(buildings[i] for i in idx).items()):
        return {k: sorted({buildings[i] for i in idx}) for k, idx in splits.items()}
    return {k: [f"{buildings[i]}/point_{int(point[i])}" for i in idx] for k, idx in splits.items()}


def _save_png(path: Path, code: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(code)).save(path, compress_level=1)  # labels are noisy: speed wins


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    """Written whole or not at all: the export file is the folder's completion marker."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
