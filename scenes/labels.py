"""Network inputs and task labels from the ray caster's buffers (DESIGN.md sections 3-4).

    inputs, jigsaw = make_inputs(buffers.rgb, indices, seed)
    labels = make_labels(task_names, scenes, cameras, buffers, views, jigsaw)

Every label is an exact function of the buffers, cameras and scenes (no learning), in natural units:
metres, 1/metres, unit vectors, radians. Labels made from the image (autoencoding ... segment_unsup2d)
use the image as stored, rgb quantised to 8 bits, so they can be remade from data.zarr alone. Dense
labels are channels-first. Conventions a reader of the labels needs:

- keypoints2d / keypoints3d: x / (1 + x) with x = max(R, 0) / KEYPOINTS*_SCALE, R the Harris response
  (det - HARRIS_K trace^2 of the structure tensor: Gaussian sigma SMOOTH_SIGMA px before the Sobel
  derivatives, window sigma WINDOW_SIGMA px) of the luma, resp. of (camera normal, log z-depth).
  edge_texture is the Sobel magnitude (per pixel, luma in [0, 1]) of the same smoothed luma.
- segment_unsup2d / 25d: k-means, k = KMEANS_K, maximin seeds, at most KMEANS_ITERS rounds fitted on
  about KMEANS_FIT_PIXELS pixels on a grid, then every pixel to its nearest centre; the label is the mean
  over the segment's pixels: colour (2d), or unit mean camera normal and mean z-depth (25d, clustered on
  normal, log depth and weakly rgb with weights SEG25D_WEIGHTS).
- reshading: min(1, RESHADING_POWER * cos / d^2): a point light at the camera centre, d the distance,
  cos the incidence angle; a frontal surface at sqrt(RESHADING_POWER) m reads 1.
- edge_occlusion: for 4-neighbours on different surfaces, one of them an object (objects and the room
  are convex, so no other pair can occlude), the relative depth error of each side's tangent plane
  extrapolated to the other's ray, the smaller of the two (creases and contacts score ~0), ramped
  linearly from OCCLUSION_RAMP[0] (0) to OCCLUSION_RAMP[1] (1); a pixel takes its largest pair, then the
  label is that edge dilated: the max over the pixel's (2 OCCLUSION_DILATE + 1)^2 neighbourhood, clipped to
  the image. OCCLUSION_DILATE = 1 (3x3) makes the edge ~3 px wide: a 1-2 px edge covers ~14% of the pixels
  at 32 px (mean 0.13), so an L1 readout that cannot place it to the pixel does best predicting 0 everywhere;
  dilated, ~30% (mean 0.27), still an exact function of the depth buffers.
- room_layout / vanishing_point: a canonical room frame (right, down, forward) is chosen per view among
  the 4 rotations of the room about the vertical: forward is the horizontal room axis (+-x, +-y) most
  aligned with the camera's forward direction (ties go to +x, +y, -x, -y in that order), down is world
  -z, right = down x forward. V = R_cam^T [right down forward] is a rotation near the identity.
  room_layout = (axis-angle of V, room centre in the camera frame, half-extents along right, down,
  forward); vanishing_point = V's columns: right (camera x > 0), down, forward (camera z > 0).
- egomotion / fixated_pose / nonfixated_pose: (axis-angle of R_A^T R_B, R_A^T (p_B - p_A)).
- point_matching: 1 when the world points seen by the two views' centre pixels (S//2, S//2) are within
  a + b d + c d / f metres, (a, b, c) = MATCH_TOLERANCE, d their mean distance, f the focal length in
  pixels: c allows for the pixel between a fixation point (on the optical axis) and the centre pixel.
- jigsaw: tile i of the permuted image (3x3 grid of S // 3 px tiles from the top left, row-major) is
  tile JIGSAW_PERMUTATIONS[label][i] of the image; the S mod 3 px border right and below stays put.

Inputs: image i's randomness is default_rng([seed, index_i, 7]), drawn in this order: the noise (16-bit
uniforms mapped through NORMAL_QUANTILES, times NOISE_SIGMA), the masked square's side (S//4 .. S//2), its
top-left row and column, the jigsaw permutation. All labels of a 64x64 image cost ~0.6 ms on one core.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.special import ndtri

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.scenes import _label_kernels as kern
from taskonomy.scenes._kmeans import kmeans, paint, segment_means
from taskonomy.tasks import CHROMA_EDGES
from taskonomy.scenes.scene import N_ROOM_FACES, Buffers, Camera, Scene

__all__ = [
    "HARRIS_K", "JIGSAW_PERMUTATIONS", "KEYPOINTS2D_SCALE", "KEYPOINTS3D_SCALE", "KMEANS_FIT_PIXELS",
    "KMEANS_ITERS", "KMEANS_K", "MATCH_TOLERANCE", "NOISE_SIGMA", "NORMAL_QUANTILES", "OCCLUSION_DILATE",
    "OCCLUSION_RAMP", "RESHADING_POWER", "SEG25D_WEIGHTS", "make_inputs", "make_labels", "permute_tiles",
    "unpermute_tiles",
]

NOISE_SIGMA = 0.1  # denoising input: Gaussian noise on [0, 1] intensities
# The noise is drawn by inverse CDF: a uniform 16-bit index into the standard normal's 65536 quantiles at
# (k + 0.5) / 65536 (|z| <= 4.3), far finer than the 8-bit result can show.
NORMAL_QUANTILES = ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)
MASK_VALUE = 128  # inpainting input: the masked square, mid-grey
SMOOTH_SIGMA, WINDOW_SIGMA, HARRIS_K = 1.0, 1.5, 0.05
KEYPOINTS2D_SCALE = 2e-7  # Harris R of the [0, 1] luma that maps to 0.5 (R scales as contrast^4)
KEYPOINTS3D_SCALE = 2e-3  # Harris R of (camera normal, log depth) that maps to 0.5
RESHADING_POWER = 2.0  # m^2: median ~0.25, ~18% of pixels (closer than ~1.4 m) saturate at 1
OCCLUSION_RAMP = (0.03, 0.12)  # relative depth error -> edge 0 .. 1
OCCLUSION_DILATE = 1  # px, radius of the max filter over the edge (module docstring)
KMEANS_K, KMEANS_ITERS, KMEANS_FIT_PIXELS = 6, 10, 512
SEG25D_WEIGHTS = (1.0, 1.0, 0.05)  # k-means distance weights: camera normal, log depth, rgb
MATCH_TOLERANCE = (0.01, 0.01, 2.0)  # metres, fraction of the distance, pixel footprints

# N_JIGSAW permutations of the 9 tiles, made once: all 9! permutations shuffled by default_rng(2018), then
# greedily the one farthest (Hamming) from the identity and all picked so far; pairwise distance >= 7.
JIGSAW_PERMUTATIONS = np.array([
    [5, 8, 1, 4, 0, 3, 2, 6, 7], [4, 0, 3, 7, 1, 2, 5, 8, 6], [7, 4, 6, 5, 2, 8, 1, 0, 3], [6, 3, 8, 0, 5, 7, 4, 2, 1],
    [8, 5, 4, 2, 3, 6, 7, 1, 0], [2, 6, 5, 1, 7, 0, 8, 3, 4], [1, 7, 0, 6, 8, 4, 3, 5, 2], [3, 2, 7, 8, 6, 1, 0, 4, 5],
    [5, 2, 6, 1, 4, 7, 3, 8, 0], [7, 8, 2, 6, 3, 0, 5, 4, 1], [2, 8, 0, 7, 6, 5, 4, 1, 3], [8, 4, 5, 3, 1, 7, 0, 6, 2],
    [6, 1, 7, 2, 8, 3, 5, 0, 4], [0, 4, 3, 8, 7, 6, 2, 5, 1], [8, 7, 2, 5, 0, 1, 4, 3, 6], [1, 3, 5, 4, 6, 2, 7, 0, 8],
    [5, 7, 4, 8, 1, 0, 6, 2, 3], [3, 6, 8, 5, 1, 4, 2, 7, 0], [6, 5, 1, 7, 2, 4, 0, 3, 8], [6, 0, 2, 4, 7, 8, 3, 1, 5],
    [4, 3, 6, 7, 2, 0, 8, 1, 5], [2, 6, 1, 3, 4, 8, 0, 5, 7], [4, 8, 1, 7, 5, 6, 3, 0, 2], [4, 2, 8, 3, 7, 1, 6, 5, 0],
], np.int64)
assert JIGSAW_PERMUTATIONS.shape == (registry.N_JIGSAW, 9)


def _tiles(images: np.ndarray) -> np.ndarray:
    """The 9 tiles (B, 9, t, t, C), row-major, of the top-left 3t x 3t region of (B, S, S, C) images."""
    b, s, _, c = images.shape
    t = s // 3
    grid = images[:, :3 * t, :3 * t].reshape(b, 3, t, 3, t, c).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(b, 9, t, t, c)


def _place(images: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    b, s, _, c = images.shape
    t = s // 3
    out = images.copy()
    out[:, :3 * t, :3 * t] = tiles.reshape(b, 3, 3, t, t, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 3 * t, 3 * t, c)
    return out


def permute_tiles(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Shuffle the 3x3 tiles of (B, S, S, C) images by JIGSAW_PERMUTATIONS[index]; a border of S mod 3
    pixels on the right and bottom stays in place."""
    tiles = _tiles(images)
    return _place(images, tiles[np.arange(len(images))[:, None], JIGSAW_PERMUTATIONS[index]])


def unpermute_tiles(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Inverse of `permute_tiles`."""
    tiles = _tiles(images)
    inverse = np.argsort(JIGSAW_PERMUTATIONS[index], axis=1)
    return _place(images, tiles[np.arange(len(images))[:, None], inverse])


def make_inputs(rgb: np.ndarray, indices: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The network inputs of a batch: rgb, gray, noisy, masked, permuted as uint8 (B, C, S, S), and each
    image's jigsaw permutation index (B,) uint8. Image i's randomness is default_rng([seed, index_i, 7])."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[3] != 3 or rgb.shape[1] != rgb.shape[2]:
        raise TaskonomyError(f"make_inputs: expected rgb of shape (B, S, S, 3), got {rgb.shape}")
    indices = np.asarray(indices).reshape(-1)
    if len(indices) != len(rgb):
        raise TaskonomyError(f"make_inputs: {len(indices)} indices for {len(rgb)} images")
    b, s = rgb.shape[:2]
    noise = np.empty((b, s, s, 3), np.uint16)
    boxes = np.empty((b, 3), np.int64)  # row, column, side of the masked square
    jigsaw = np.empty(b, np.int64)
    for i, index in enumerate(indices.tolist()):
        rng = np.random.default_rng([int(seed), int(index), 7])
        noise[i] = rng.integers(0, 65536, (s, s, 3), dtype=np.uint16)  # 5x cheaper than standard_normal
        side = int(rng.integers(max(1, s // 4), max(1, s // 2) + 1))
        boxes[i] = (*rng.integers(0, s - side + 1, 2), side)
        jigsaw[i] = rng.integers(registry.N_JIGSAW)
    made = kern.inputs(np.ascontiguousarray(rgb, np.float32), noise, NORMAL_QUANTILES, NOISE_SIGMA, boxes,
                       MASK_VALUE, JIGSAW_PERMUTATIONS[jigsaw])
    return dict(zip(("rgb", "gray", "noisy", "masked", "permuted"), made)), jigsaw.astype(np.uint8)


def _squash(response: np.ndarray, scale: float) -> np.ndarray:
    """max(R, 0) / scale mapped monotonically onto [0, 1): x / (1 + x), one half at R = scale."""
    x = np.maximum(response, np.float32(0.0)) * np.float32(1.0 / scale)
    return x / (x + np.float32(1.0))


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, 3, 3) @ (B, 3, 3) written out, so each product is independent of the batch."""
    return (a[:, :, :, None] * b[:, None, :, :]).sum(axis=2)


def _rotvec(r: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(r).as_rotvec()


class _Batch:
    """The buffers of one batch and the intermediates several labels share, each made once on demand."""

    def __init__(self, scenes, cameras, buffers: Buffers, views, jigsaw):
        self.scenes, self.cameras, self.buffers, self.views, self.jigsaw = scenes, cameras, buffers, views, jigsaw
        self.size = buffers.rgb.shape[1]

    @cached_property
    def rotation(self) -> np.ndarray:  # (B, 3, 3) camera -> world
        return np.stack([np.asarray(c.rotation, np.float64) for c in self.cameras])

    @cached_property
    def slopes(self) -> np.ndarray:
        """(B, S) float32: the camera-frame ray of pixel (v, u) is (slopes[u], slopes[v], 1)."""
        f = np.array([c.focal(self.size) for c in self.cameras])
        return ((np.arange(self.size) + 0.5 - self.size / 2)[None, :] / f[:, None]).astype(np.float32)

    @cached_property
    def pix(self) -> np.ndarray:  # (N_PIXEL_CHANNELS, B, S, S) float32, channels named in _label_kernels
        buf = self.buffers
        return kern.pixels(buf.rgb, buf.normal, buf.depth_z, buf.depth_euclid, self.rotation, self.slopes,
                           self.slopes, RESHADING_POWER)

    def channels(self, start: int, count: int = 1) -> np.ndarray:
        """Pixel channels start .. start + count - 1, (count, B, S, S) float32 (a view, contiguous)."""
        return self.pix[start:start + count]

    @cached_property
    def image(self) -> np.ndarray:  # (3, B, S, S): the clean image, one object for the three tasks using it
        return self.channels(kern.RGB, 3)

    @cached_property
    def image_structure(self) -> tuple[np.ndarray, np.ndarray]:
        return _structure(self.channels(kern.LUMA))

    def segments(self, start: int, weights) -> np.ndarray:
        """Per-image k-means segment (B, S*S) of the pixel channels start .. start + len(weights) - 1,
        fitted on a regular grid of about KMEANS_FIT_PIXELS pixels."""
        x = self.channels(start, len(weights))
        step = max(1, int(np.ceil(self.size / np.sqrt(KMEANS_FIT_PIXELS))))
        fit = np.ascontiguousarray(x[:, :, ::step, ::step])
        return kmeans(fit.reshape(*fit.shape[:2], -1), x.reshape(*x.shape[:2], -1), np.asarray(weights, np.float32),
                      KMEANS_K, KMEANS_ITERS)

    def segment_means(self, labels: np.ndarray, start: int, count: int) -> np.ndarray:
        """(B, KMEANS_K, count): each segment's mean of the pixel channels start .. start + count - 1."""
        x = self.channels(start, count)
        return segment_means(labels, x.reshape(*x.shape[:2], -1), KMEANS_K)


def _structure(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return kern.structure(x, kern.gaussian_weights(SMOOTH_SIGMA), kern.gaussian_weights(WINDOW_SIGMA), HARRIS_K)


def _painted(c: _Batch, labels: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(C, B, S, S): each pixel gets its segment's row of means (B, KMEANS_K, C)."""
    return paint(labels, means).reshape(means.shape[2], -1, c.size, c.size)


def _segment_unsup2d(c: _Batch) -> np.ndarray:
    labels = c.segments(kern.RGB, (1.0, 1.0, 1.0))
    return _painted(c, labels, c.segment_means(labels, kern.RGB, 3))


def _segment_unsup25d(c: _Batch) -> np.ndarray:
    wn, wd, wc = SEG25D_WEIGHTS  # features: camera normal, log depth, rgb (channels NORMAL .. RGB + 2)
    labels = c.segments(kern.NORMAL, (wn, wn, wn, wd, wc, wc, wc))
    means = c.segment_means(labels, kern.DEPTH, 4)[:, :, [1, 2, 3, 0]]  # (depth, normal) -> (normal, depth)
    norm = np.sqrt((means[:, :, :3] ** 2).sum(axis=2, keepdims=True))
    means[:, :, :3] /= np.maximum(norm, np.float32(1e-12))  # the mean of unit normals, made unit again
    return _painted(c, labels, np.ascontiguousarray(means))


def _edge_occlusion(c: _Batch) -> np.ndarray:
    return kern.occlusion(c.buffers.depth_z, c.channels(kern.NORMAL, 3), c.buffers.surface, c.slopes, c.slopes,
                          N_ROOM_FACES, *OCCLUSION_RAMP, OCCLUSION_DILATE)[None]


def _room_frame(c: _Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """V (B, 3, 3): canonical room axes (right, down, forward) in the camera frame; the room centre in the
    camera frame (B, 3); half-extents along right, down, forward (B, 3). See the module docstring."""
    axes = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0]])  # R_z(k 90deg) e_x
    fx, fy = c.rotation[:, 0, 2], c.rotation[:, 1, 2]  # the camera's forward direction, world x and y
    k = np.argmax(np.stack([fx, fy, -fx, -fy], axis=1), axis=1)  # ties resolve to the lowest k
    frame = np.stack([axes[(k + 3) % 4], np.broadcast_to([0.0, 0, -1], (len(k), 3)), axes[k]], axis=2)
    v = _matmul(c.rotation.transpose(0, 2, 1), frame)
    room = np.stack([s.room for s in c.scenes])
    offset = room / 2 - np.stack([cam.position for cam in c.cameras])
    centre = (c.rotation * offset[:, :, None]).sum(axis=1)  # R^T (centre - position)
    half = np.where((k % 2 == 0)[:, None], room[:, [1, 2, 0]], room[:, [0, 2, 1]]) / 2
    return v, centre, half


def _room_layout(c: _Batch) -> np.ndarray:
    v, centre, half = _room_frame(c)
    return np.concatenate([_rotvec(v), centre, half], axis=1).astype(np.float32)


def _vanishing_point(c: _Batch) -> np.ndarray:
    v, _, _ = _room_frame(c)
    return v.transpose(0, 2, 1).reshape(-1, 9).astype(np.float32)


def _class_object(c: _Batch) -> np.ndarray:
    b = len(c.scenes)
    sem = c.buffers.semantic.reshape(b, -1).astype(np.int64)
    flat = (sem - 2 + registry.N_OBJECT_CLASSES * np.arange(b)[:, None])[sem >= 2]
    counts = np.bincount(flat, minlength=b * registry.N_OBJECT_CLASSES).reshape(b, -1).astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    uniform = np.full_like(counts, 1.0 / registry.N_OBJECT_CLASSES)
    return np.where(total > 0, counts / np.maximum(total, 1), uniform).astype(np.float32)


def _relative_pose(c: _Batch, name: str) -> np.ndarray:
    """Second camera B in the first camera A's frame: axis-angle of R_A^T R_B (3), R_A^T (p_B - p_A) (3)."""
    second = c.views[name][0]
    ra, rb = c.rotation, np.stack([np.asarray(cam.rotation, np.float64) for cam in second])
    step = np.stack([cb.position - ca.position for ca, cb in zip(c.cameras, second)])
    rel = _matmul(ra.transpose(0, 2, 1), rb)
    return np.concatenate([_rotvec(rel), (ra * step[:, :, None]).sum(axis=1)], axis=1).astype(np.float32)


def _point_matching(c: _Batch) -> np.ndarray:
    h = c.size // 2
    other = c.views["point_matching"][1]
    pa, pb = c.buffers.position[:, h, h].astype(np.float64), other.position[:, h, h].astype(np.float64)
    d = (c.buffers.depth_euclid[:, h, h].astype(np.float64) + other.depth_euclid[:, h, h]) / 2
    f = np.array([cam.focal(c.size) for cam in c.cameras])
    a, b, px = MATCH_TOLERANCE
    close = np.linalg.norm(pa - pb, axis=1) <= a + b * d + px * d / f
    return close.astype(np.float32)[:, None]


def chroma_bins(chroma: np.ndarray) -> np.ndarray:
    """(2, B, S, S) chroma U, V -> (B, S, S) uint8 bin index 8 * u_bin + v_bin (tasks.CHROMA_EDGES)."""
    u, v = (np.searchsorted(np.asarray(e, np.float32), c, side="right") for e, c in zip(CHROMA_EDGES, chroma))
    return (u * (len(CHROMA_EDGES[1]) + 1) + v).astype(np.uint8)


def chroma_of_bins(bins: np.ndarray) -> np.ndarray:
    """The inverse for drawing: (B..., S, S) bin indices -> (2, B..., S, S) a representative U, V per bin."""
    centres = []
    for edges in CHROMA_EDGES:
        e = np.asarray(edges, np.float64)
        outer = np.concatenate([[e[0] - (e[1] - e[0])], e, [e[-1] + (e[-1] - e[-2])]])
        centres.append(((outer[:-1] + outer[1:]) / 2).astype(np.float32))
    k = len(CHROMA_EDGES[1]) + 1
    return np.stack([centres[0][bins // k], centres[1][bins % k]])


# Dense labels come back float32 and channel-major, (C, B, S, S); make_labels casts them all in one go.
_LABELS = {
    "autoencoding": lambda c: c.image, "denoising": lambda c: c.image, "inpainting": lambda c: c.image,
    "colorization": lambda c: chroma_bins(c.channels(kern.CHROMA, 2)),
    "jigsaw": lambda c: np.asarray(c.jigsaw, np.uint8),
    "edge_texture": lambda c: c.image_structure[0][None],
    "keypoints2d": lambda c: _squash(c.image_structure[1], KEYPOINTS2D_SCALE)[None],
    "segment_unsup2d": _segment_unsup2d,
    "depth_zbuffer": lambda c: c.buffers.depth_z[None],
    "depth_euclidean": lambda c: c.buffers.depth_euclid[None],
    "normal": lambda c: c.channels(kern.NORMAL, 3),
    "reshading": lambda c: c.channels(kern.SHADE),
    "curvature": lambda c: c.buffers.curvature.transpose(3, 0, 1, 2),
    "edge_occlusion": _edge_occlusion,
    "keypoints3d": lambda c: _squash(_structure(c.channels(kern.NORMAL, 4))[1], KEYPOINTS3D_SCALE)[None],
    "segment_unsup25d": _segment_unsup25d,
    "room_layout": _room_layout,
    "vanishing_point": _vanishing_point,
    "segment_semantic": lambda c: np.array(c.buffers.semantic, np.uint8),  # a copy, not the buffer
    "class_object": _class_object,
    "class_scene": lambda c: np.array([s.room_type for s in c.scenes], np.uint8),
    "egomotion": lambda c: _relative_pose(c, "egomotion"),
    "fixated_pose": lambda c: _relative_pose(c, "fixated_pose"),
    "nonfixated_pose": lambda c: _relative_pose(c, "nonfixated_pose"),
    "point_matching": _point_matching,
}


def make_labels(tasks: Sequence[str], scenes: Sequence[Scene], cameras: Sequence[Camera], buffers: Buffers,
                views: dict[str, tuple[list[Camera], Buffers]], jigsaw: np.ndarray) -> dict[str, np.ndarray]:
    """One label array per task: shape (B, *task.label_shape(S)), dtype task.store_dtype.

    `views` holds the second cameras and their buffers of each multi-view task; `jigsaw` comes from
    `make_inputs`. Shared intermediates (luma, camera-frame normals, ...) are computed once per call.
    """
    b, s = buffers.rgb.shape[:2]
    if len(scenes) != b or len(cameras) != b or len(jigsaw) != b:
        raise TaskonomyError(f"make_labels: expected {b} scenes, cameras and jigsaw indices (one per image), "
                             f"got {len(scenes)}, {len(cameras)} and {len(jigsaw)}")
    batch = _Batch(scenes, cameras, buffers, views, jigsaw)
    out, dense = {}, {}
    for name in tasks:
        task = registry.get(name)
        if task.name not in _LABELS:
            raise TaskonomyError(f"make_labels: task {name!r} has no generated labels")
        if task.head == "pair" and task.name not in views:
            raise TaskonomyError(f"make_labels: task {name!r} needs its second views in `views`")
        if b == 0:
            out[name] = np.zeros((0, *task.label_shape(s)), task.store_dtype)
        elif task.store_dtype == "float16":
            dense[name] = _LABELS[task.name](batch)
        else:
            label = _LABELS[task.name](batch)
            out[name] = np.ascontiguousarray(label, dtype=task.store_dtype).reshape(b, *task.label_shape(s))
    # one parallel cast for all dense labels (each parallel region costs a wake-up of every thread)
    unique = {id(a): a for a in dense.values()}  # autoencoding, denoising, inpainting share one array
    cast, seen = dict(zip(unique, kern.to_float16(*unique.values()))), set()
    for name, label in dense.items():
        out[name] = cast[id(label)].copy() if id(label) in seen else cast[id(label)]
        seen.add(id(label))
    return {name: out[name] for name in tasks}
