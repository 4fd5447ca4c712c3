"""Contact sheet of a data store: a few images as rows, every task's label as columns (the paper's Figure 3).

    taskonomy --config configs/tiny.yaml data --preview FILE.png [--rows 4]

or, from Python, `contact_sheet("runs/tiny/data.zarr", "sheet.png")`. The store is only read (mode "r") and an
incomplete one is refused. Columns come in bands by task group, each band starting again with the RGB image;
every label is drawn the way a person reads it: depth near-bright, normals as (n + 1) / 2 colours, semantic
classes in a fixed palette (legend at the bottom), global labels as short text, the room box and the vanishing
directions projected onto the image, pair tasks as the second view with the pose or match written on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.store import locate, open_complete

__all__ = ["CELL_PX", "contact_sheet", "semantic_palette"]

CELL_PX, GAP_PX, DPI = 96, 6, 100  # cells: at least CELL_PX, a whole multiple of small images (crisp pixels)
LABEL_PX, HEADER_PX, TITLE_PX, BAND_GAP_PX, LEGEND_PX, MAX_COLS = 92, 34, 30, 14, 26, 12
INPUTS = {"denoising": "noisy", "colorization": "gray", "inpainting": "masked"}  # drawn next to their target
GROUP_COLORS = {"low-level": "#7f6a4f", "2D": "#1f5fa8", "3D": "#2a8a3e", "semantic": "#8e3fa0",
                "multi-view": "#c4621a", "other": "#555555"}
_PALE = "#f1f1ee"


@dataclass
class _Sheet:
    """What the painters read: the selected rows of every array, already in memory."""

    size: int
    cell: int  # cell side in pixels
    rows: np.ndarray  # (n,) image indices
    rgb: np.ndarray  # (n, S, S, 3) float32 in [0, 1]
    arrays: dict[str, np.ndarray]  # "labels/<task>", "inputs/<name>", "views/<task>", "meta/scene" -> rows
    fov: float | None  # horizontal field of view, radians
    room_types: tuple[str, ...]
    object_classes: tuple[str, ...]


@dataclass(frozen=True)
class _Column:
    header: str
    group: str
    draw: Callable[[Any, _Sheet, int], None]
    width: int = 1


def contact_sheet(data_path: str | Path, out_png: str | Path, n_rows: int = 4,
                  images: list[int] | None = None) -> Path:
    """Write a PNG with one row per image (by default the first `n_rows` test images, from different scenes
    where possible) and one column per task with labels in the store. Returns the PNG's path."""
    data_path, out_png = locate(data_path), Path(out_png)  # a folder, or a StoreURL under storage.url
    group = open_complete(data_path, "taskonomy data")
    if images is None and (not isinstance(n_rows, int) or n_rows < 1):
        raise TaskonomyError(f"contact sheet: n_rows must be a positive integer, got {n_rows!r}")
    rows = _choose_rows(group, data_path, n_rows, images)
    names = [n for n in map(registry.validate_name, group.attrs.get("tasks", [])) if f"labels/{n}" in group]
    columns = _columns(names, group)
    sheet = _load(group, rows, names)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    _render(sheet, columns, out_png, f"{data_path.name}: {int(group.attrs.get('n_images', 0))} images, "
            f"{sheet.size} px, seed {group.attrs.get('seed', '?')}, {len(names)} tasks")
    return out_png


def _choose_rows(group, path: Path, n_rows: int, images: list[int] | None) -> np.ndarray:
    """Explicit indices, or the first test images taking one per scene before repeating a scene."""
    n = int(group["images/rgb"].shape[0])
    if images is not None:
        rows = np.asarray(list(images), dtype=np.int64)
        if rows.size == 0 or rows.ndim != 1 or rows.min() < 0 or rows.max() >= n:
            raise TaskonomyError(f"contact sheet of {path}: images must be indices in [0, {n}), "
                                 f"got {list(images)}")
        return rows
    test = np.asarray(group["splits/test"][:], np.int64) if "splits/test" in group else np.arange(0)
    scene = np.asarray(group["meta/scene"][:]) if "meta/scene" in group else np.arange(n)
    rest = np.setdiff1d(np.arange(n), test)  # used only when the test split is shorter than n_rows
    return np.concatenate([_one_per_scene(test, scene), _one_per_scene(rest, scene)])[:n_rows]


def _one_per_scene(pool: np.ndarray, scene: np.ndarray) -> np.ndarray:
    """`pool` reordered: the first image of each scene, then the others, each part in the original order."""
    _, first = np.unique(scene[pool], return_index=True)
    return pool[np.concatenate([np.sort(first), np.setdiff1d(np.arange(pool.size), first)]).astype(np.int64)]


def _load(group, rows: np.ndarray, names: list[str]) -> _Sheet:
    """The selected rows of every array the sheet draws (labels, second views, inputs, scene ids)."""
    keys = [f"{kind}/{n}" for kind in ("labels", "views") for n in names] + ["meta/scene"]
    keys = [k for k in keys + [f"inputs/{m}" for m in ("gray", "noisy", "masked", "permuted")] if k in group]
    order = np.argsort(rows)  # one sorted orthogonal read per array decodes each chunk once
    back = np.argsort(order)
    arrays = {k: np.asarray(group[k].oindex[rows[order]])[back] for k in keys}
    rgb = np.asarray(group["images/rgb"].oindex[rows[order]])[back].transpose(0, 2, 3, 1)
    fov, size = group.attrs.get("fov_degrees"), int(rgb.shape[1])
    return _Sheet(
        size=size, cell=_cell_px(size), rows=rows, rgb=rgb.astype(np.float32) / 255.0,
        arrays=arrays, fov=None if fov is None else float(np.radians(fov)),
        room_types=tuple(group.attrs.get("room_types", registry.ROOM_TYPES)),
        object_classes=tuple(group.attrs.get("object_classes", registry.OBJECT_CLASSES)),
    )


def _cell_px(size: int) -> int:
    """Side of a cell: the smallest whole multiple of the image size from CELL_PX up, at most 128 px."""
    return min(size * -(-CELL_PX // size), max(CELL_PX, 128))


# ---- columns: which painter draws which task ------------------------------------------------------------------

def _columns(names: list[str], group) -> list[_Column]:
    """The RGB column, then every labelled task in registry order (unknown names last), inputs before targets."""
    known = [t for t in registry.all_tasks() if t.name in names]
    columns = [_Column("rgb", "image", lambda ax, s, r: _image(ax, s.rgb[r]))]
    for task in known:
        modality = INPUTS.get(task.name)
        if modality and f"inputs/{modality}" in group:
            columns.append(_Column(f"{modality}\n(input)", task.group, partial(_input, key=f"inputs/{modality}")))
        width = 2 if task.name == "point_matching" else 1
        columns.append(_Column(task.name, task.group, partial(_painter(task), name=task.name), width))
    for name in sorted(set(names) - {t.name for t in known}):
        columns.append(_Column(name, "other", partial(_generic, name=name)))
    return columns


def _painter(task) -> Callable:
    special = {"depth_zbuffer": _depth, "depth_euclidean": _depth, "normal": _normal, "curvature": _curvature,
               "colorization": _colorization, "segment_unsup25d": _normal, "segment_semantic": _semantic,
               "class_scene": _scene_text, "class_object": _object_text, "room_layout": _room_layout,
               "vanishing_point": _vanishing, "jigsaw": _jigsaw, "point_matching": _point_match}
    if task.name in special:
        return special[task.name]
    if task.head == "pair":
        return _pose
    if task.head == "dense" and task.channels == 3 and task.group in ("low-level", "2D"):
        return _colour_label
    return _grey if task.head == "dense" else _generic


# ---- painters: (axes, sheet, row, name) -> draws one cell ------------------------------------------------------

def _image(ax, img: np.ndarray, **kw) -> None:
    ax.imshow(img, interpolation="nearest", **kw)
    ax.set_axis_off()


def _caption(ax, text: str, x: float = 0.5, box: str = "black") -> None:
    ax.text(x, 0.02, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=7, color="white",
            bbox=dict(facecolor=box, alpha=0.6, pad=1.2, linewidth=0))


def _input(ax, s: _Sheet, r: int, key: str) -> None:
    x = s.arrays[key][r]  # (C, S, S) uint8
    if x.shape[0] == 1:
        _image(ax, x[0], cmap="gray", vmin=0, vmax=255)
    else:
        _image(ax, x.transpose(1, 2, 0))


def _colour_label(ax, s: _Sheet, r: int, name: str) -> None:
    _image(ax, np.clip(s.arrays[f"labels/{name}"][r].astype(np.float32).transpose(1, 2, 0), 0, 1))


def _grey(ax, s: _Sheet, r: int, name: str) -> None:
    x = s.arrays[f"labels/{name}"][r][0].astype(np.float32)
    lo, hi = min(0.0, float(np.nanmin(x))), float(np.nanpercentile(x, 99.5))
    _image(ax, x, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6))


def _depth(ax, s: _Sheet, r: int, name: str) -> None:
    x = s.arrays[f"labels/{name}"][r][0].astype(np.float32)
    lo, hi = (float(v) for v in np.nanpercentile(x, [1, 99]))
    _image(ax, x, cmap="magma_r", vmin=lo, vmax=max(hi, lo + 1e-6))  # reversed: near is bright
    _caption(ax, f"{lo:.1f}-{hi:.1f} m")


def _normal(ax, s: _Sheet, r: int, name: str) -> None:
    n = s.arrays[f"labels/{name}"][r][:3].astype(np.float32)
    _image(ax, np.clip((n.transpose(1, 2, 0) + 1) / 2, 0, 1))


def _curvature(ax, s: _Sheet, r: int, name: str) -> None:
    mean = s.arrays[f"labels/{name}"][r].astype(np.float32).mean(axis=0)
    m = float(np.nanpercentile(np.abs(mean), 99)) or float(np.nanmax(np.abs(mean)))
    _image(ax, mean, cmap="RdBu_r", vmin=-(m or 1.0), vmax=m or 1.0)
    _caption(ax, f"|H| up to {m:.2g} /m" if m else "flat")


def _colorization(ax, s: _Sheet, r: int, name: str) -> None:
    """The chroma bins' representative U, V recombined with the stored luma, BT.601."""
    from taskonomy.scenes.labels import chroma_of_bins

    u, v = chroma_of_bins(np.asarray(s.arrays[f"labels/{name}"][r]))
    gray = s.arrays.get("inputs/gray")
    y = gray[r, 0].astype(np.float32) / 255.0 if gray is not None else np.full_like(u, 0.5)
    rgb = np.stack([y + 1.13983 * v, y - 0.39465 * u - 0.58060 * v, y + 2.03211 * u], axis=-1)
    _image(ax, np.clip(rgb, 0, 1))
    if gray is None:
        _caption(ax, "chroma only")


def semantic_palette(n_classes: int) -> np.ndarray:
    """(n_classes, 3) colours: 0 uncertain black, 1 background pale grey, then distinct saturated colours."""
    from matplotlib import colormaps
    base = [colormaps["tab10"](i)[:3] for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
    base += [colormaps["tab20"](i)[:3] for i in range(1, 20, 2)]
    colours = [(0.0, 0.0, 0.0), (0.86, 0.86, 0.84)] + [base[i % len(base)] for i in range(max(0, n_classes - 2))]
    return np.asarray(colours[:n_classes], np.float32)


def _semantic(ax, s: _Sheet, r: int, name: str) -> None:
    palette = semantic_palette(2 + len(s.object_classes))
    _image(ax, palette[np.clip(s.arrays[f"labels/{name}"][r], 0, len(palette) - 1)])


def _text_cell(ax, lines: list[tuple[str, Any]], size: float = 8) -> None:
    ax.set_facecolor(_PALE)
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    for k, (text, colour) in enumerate(lines):
        y = 0.5 + (len(lines) - 1) * 0.09 - k * 0.18
        ax.text(0.5, y, text, transform=ax.transAxes, ha="center", va="center", fontsize=size, color=colour)


def _room_name(s: _Sheet, r: int) -> str:
    k = int(s.arrays["labels/class_scene"][r])
    return s.room_types[k] if 0 <= k < len(s.room_types) else f"room type {k}"


def _scene_text(ax, s: _Sheet, r: int, name: str) -> None:
    _text_cell(ax, [(_room_name(s, r), "black")], size=9)


def _object_text(ax, s: _Sheet, r: int, name: str) -> None:
    p = s.arrays[f"labels/{name}"][r].astype(np.float32)
    palette = semantic_palette(2 + len(p))
    # the generator writes a uniform distribution for an image without objects
    top = [k for k in np.argsort(-p, kind="stable")[:2] if p[k] > 0] if np.ptp(p) > 1e-6 else []
    names = [s.object_classes[k] if k < len(s.object_classes) else f"class {k}" for k in top]
    lines = [(f"{name} {p[k]:.2f}", tuple(palette[2 + k] * 0.8)) for name, k in zip(names, top)]
    _text_cell(ax, lines or [("no objects", "grey")])


def _image_with_text(ax, s: _Sheet, r: int, key: str, text: str) -> None:
    """The image `key` captioned with `text`, or the text alone when the store lacks that image."""
    if key in s.arrays:
        _input(ax, s, r, key)
        _caption(ax, text)
    else:
        _text_cell(ax, [(text, "black")])


def _jigsaw(ax, s: _Sheet, r: int, name: str) -> None:
    _image_with_text(ax, s, r, "inputs/permuted", f"permutation {int(s.arrays[f'labels/{name}'][r])}")


def _pose(ax, s: _Sheet, r: int, name: str) -> None:
    """The second view; the rotation angle (axis-angle norm) and the translation length."""
    pose = s.arrays[f"labels/{name}"][r].astype(np.float64)
    text = f"{np.degrees(np.linalg.norm(pose[:3])):.0f}\u00b0  {np.linalg.norm(pose[3:6]):.2f} m"
    _image_with_text(ax, s, r, f"views/{name}", text)


def _point_match(ax, s: _Sheet, r: int, name: str) -> None:
    """Both views side by side, a marker at each centre: green when the centres see the same point."""
    match = float(np.ravel(s.arrays[f"labels/{name}"][r])[0]) > 0.5
    colour = "#1f9e3a" if match else "#e0301e"
    second = s.arrays.get(f"views/{name}")
    second = second[r].transpose(1, 2, 0) / 255.0 if second is not None else np.ones_like(s.rgb[r])
    gap = np.ones((s.size, max(1, s.size // 16), 3), np.float32)
    _image(ax, np.concatenate([s.rgb[r], gap, second], axis=1))
    c = s.size // 2  # the label's centre pixel (S//2, S//2)
    for x in (c, c + s.size + gap.shape[1]):
        ax.plot([x], [c], marker="+", markersize=9, markeredgewidth=2, color=colour)
    _caption(ax, "match" if match else "no match", x=0.25, box=colour)


def _generic(ax, s: _Sheet, r: int, name: str) -> None:
    x = np.ravel(s.arrays[f"labels/{name}"][r]).astype(np.float64)
    text = " ".join(f"{v:.2g}" for v in x[:4]) + (" ..." if x.size > 4 else "")
    _text_cell(ax, [(text, "black")], size=7)


# ---- geometry overlays: the room box and the vanishing directions -----------------------------------------------

def _room_layout(ax, s: _Sheet, r: int, name: str) -> None:
    """The room box projected as red edges: axis-angle of V (columns: the room's axes in the camera frame),
    centre in the camera frame, half-extents along V's columns (scenes/labels.py)."""
    from scipy.spatial.transform import Rotation

    box = s.arrays[f"labels/{name}"][r].astype(np.float64)
    if s.fov is None:
        return _generic(ax, s, r, name)
    _image(ax, 0.5 * s.rgb[r] + 0.5)
    ax.autoscale(False)  # lines run past the image; keep the frame on the image
    rot, centre, half = Rotation.from_rotvec(box[:3]).as_matrix(), box[3:6], box[6:9]
    signs = np.array([[(i >> b & 1) * 2 - 1 for b in range(3)] for i in range(8)], np.float64)
    corners = centre + (signs * half) @ rot.T  # (8, 3) camera frame
    f, c = s.size / (2.0 * np.tan(s.fov / 2.0)), (s.size - 1) / 2  # pixel u's centre is at u
    for i in range(8):
        for b in range(3):
            j = i | (1 << b)
            if j != i:
                seg = _clip_near(corners[i], corners[j])
                if seg is not None:
                    ax.plot(f * seg[:, 0] / seg[:, 2] + c, f * seg[:, 1] / seg[:, 2] + c, color="#d62728", lw=1.6)


def _clip_near(a: np.ndarray, b: np.ndarray, near: float = 0.05) -> np.ndarray | None:
    """The part of segment a-b in front of the camera (z >= near), or None."""
    if min(a[2], b[2]) >= near or max(a[2], b[2]) < near:
        return np.stack([a, b]) if a[2] >= near else None
    hit = a + (near - a[2]) / (b[2] - a[2]) * (b - a)
    return np.stack([hit, b] if a[2] < near else [a, hit])


def _vanishing(ax, s: _Sheet, r: int, name: str) -> None:
    """Four lines through the image towards each of the three vanishing points (at infinity: parallel)."""
    d = s.arrays[f"labels/{name}"][r].astype(np.float64).reshape(3, 3)
    if s.fov is None:
        return _generic(ax, s, r, name)
    _image(ax, 0.5 * s.rgb[r] + 0.5)
    ax.autoscale(False)  # lines run past the image; keep the frame on the image
    f, c = s.size / (2.0 * np.tan(s.fov / 2.0)), (s.size - 1) / 2  # pixel u's centre is at u
    for direction, colour in zip(d, ("#d62728", "#2ca02c", "#1f77b4")):
        vp = np.array([f * direction[0] + c * direction[2], f * direction[1] + c * direction[2], direction[2]])
        along = _line_direction(np.array([c, c]), vp)
        across = np.array([-along[1], along[0]])
        for k in (-1.5, -0.5, 0.5, 1.5):
            q = np.array([c, c]) + k * across * s.size * 0.25
            u = _line_direction(q, vp)
            ax.plot([q[0] - 2 * s.size * u[0], q[0] + 2 * s.size * u[0]],
                    [q[1] - 2 * s.size * u[1], q[1] + 2 * s.size * u[1]], color=colour, lw=1.0, alpha=0.9)


def _line_direction(q: np.ndarray, vp: np.ndarray) -> np.ndarray:
    line = np.cross([q[0], q[1], 1.0], vp)  # homogeneous line through q and the vanishing point
    u = np.array([line[1], -line[0]])
    return u / (np.linalg.norm(u) or 1.0)


# ---- layout ----------------------------------------------------------------------------------------------------

def _bands(columns: list[_Column]) -> list[list[_Column]]:
    """Pack the task columns into bands of at most MAX_COLS cells, breaking between groups where possible."""
    bands: list[list[_Column]] = [[]]
    for _, run in groupby(columns[1:], key=lambda c: c.group):
        run = list(run)
        for k, col in enumerate(run):
            need = sum(c.width for c in run) if k == 0 else col.width  # a group starts where it fits whole
            if bands[-1] and sum(c.width for c in bands[-1]) + need > MAX_COLS - 1:
                bands.append([])
            bands[-1].append(col)
    return [[columns[0], *band] for band in bands]


def _render(s: _Sheet, columns: list[_Column], out_png: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bands = _bands(columns)
    n, step = len(s.rows), s.cell + GAP_PX
    band_h = HEADER_PX + n * step + BAND_GAP_PX
    width = LABEL_PX + max(sum(c.width for c in b) for b in bands) * step + GAP_PX
    legend = any(c.header == "segment_semantic" for c in columns)
    ncol = min(len(s.object_classes) + 1, max(1, (width - 20) // 80))  # legend entries per line
    legend_h = LEGEND_PX + 14 * -(-(len(s.object_classes) + 1) // ncol) if legend else 0
    height = TITLE_PX + len(bands) * band_h + legend_h
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)  # Agg on this figure only: no pyplot, no global backend switch
    tmp = out_png.with_name(out_png.name + ".tmp")
    try:
        fig.text(6 / width, 1 - 8 / height, title, ha="left", va="top", fontsize=10, weight="bold")
        for b, band in enumerate(bands):
            _draw_band(fig, s, band, TITLE_PX + b * band_h, (width, height))
        if legend:
            _legend(fig, s, ncol, height)
        fig.savefig(tmp, dpi=DPI, format="png", facecolor="white")
        tmp.replace(out_png)  # a reader never sees half a PNG
    finally:
        fig.clear()
        tmp.unlink(missing_ok=True)


def _draw_band(fig, s: _Sheet, band: list[_Column], top: int, wh: tuple[int, int]) -> None:
    width, height = wh
    step = s.cell + GAP_PX
    box = lambda x, y, w, h: fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))  # noqa: E731
    x, last_group = LABEL_PX, None
    for col in band:
        w = col.width * step - GAP_PX
        colour = GROUP_COLORS.get(col.group, "black")
        if col.group != last_group and col.group != "image":
            fig.text(x / width, 1 - (top + 2) / height, col.group, ha="left", va="top", fontsize=7,
                     color=colour, style="italic")
        last_group = col.group
        fig.text((x + w / 2) / width, 1 - (top + HEADER_PX - 3) / height, col.header, ha="center",
                 va="bottom", fontsize=7.5 if len(col.header) > 14 else 8, color=colour, linespacing=0.95)
        for r in range(len(s.rows)):
            col.draw(box(x, top + HEADER_PX + r * step, w, s.cell), s, r)
        x += col.width * step
    for r in range(len(s.rows)):
        y = top + HEADER_PX + r * step + s.cell / 2
        fig.text((LABEL_PX - 8) / width, 1 - y / height, _row_label(s, r), ha="right", va="center", fontsize=8)


def _row_label(s: _Sheet, r: int) -> str:
    lines = [f"image {int(s.rows[r])}"]
    if "meta/scene" in s.arrays:
        lines.append(f"scene {int(s.arrays['meta/scene'][r])}")
    if "labels/class_scene" in s.arrays:
        lines.append(_room_name(s, r))
    return "\n".join(lines)


def _legend(fig, s: _Sheet, ncol: int, height: int) -> None:
    from matplotlib.patches import Patch

    palette = semantic_palette(2 + len(s.object_classes))
    names = ["background", *s.object_classes]
    handles = [Patch(facecolor=palette[1 + k], edgecolor="grey", linewidth=0.5, label=n) for k, n in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7.5, frameon=False,
               title="segment_semantic", title_fontsize=7.5, bbox_to_anchor=(0.5, 2 / height),
               handlelength=1.2, columnspacing=1.0)
