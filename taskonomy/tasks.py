"""The task dictionary: one registry, looked up by name (DESIGN.md section 3).

Every task says what it reads (input modality), what it predicts (head and output shape), how it is
scored per image (a registered loss returning one value per image) and how its labels are made.
Adding a task is one `register(Task(...))`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from taskonomy import TaskonomyError

__all__ = [
    "CHROMA_EDGES", "GROUPS", "HEADS", "MODALITIES", "N_CHROMA_BINS", "N_OBJECT_CLASSES", "N_SEMANTIC", "N_JIGSAW",
    "OBJECT_CLASSES", "ROOM_TYPES", "Task", "all_tasks", "control_names", "get", "register", "resolve_alias",
    "unregister", "validate_name",
]

GROUPS = ("low-level", "2D", "3D", "semantic", "multi-view", "control", "added")  # added: by add-target
MODALITIES = ("rgb", "gray", "noisy", "masked", "permuted", "pair", "none")
HEADS = ("dense", "global", "pair", "none")
ROLES = ("both", "source", "target")

# Semantic classes of the generated scenes. Label 0 = uncertain (unused by the generator, kept for
# Taskonomy compatibility), 1 = background (walls, floor, ceiling), then the object classes.
OBJECT_CLASSES = ("bed", "sofa", "table", "cabinet", "chair", "lamp", "plant", "ball")
N_OBJECT_CLASSES = len(OBJECT_CLASSES)
N_SEMANTIC = 2 + N_OBJECT_CLASSES
ROOM_TYPES = ("bedroom", "living_room", "kitchen", "office", "playroom")
N_JIGSAW = 24  # permutations of the 3x3 tiles the jigsaw task classifies between
# Colorization is a classification over quantised chroma, as in the paper (Zhang et al.'s loss): chroma is
# ambiguous given luma (a room type's walls come in two opposite tints), and an L1 regression of U, V
# learnt the mean (loss 0.94 of the baseline's). Per channel, the 7 inner edges are the octiles of the
# generated scenes' U and V (measured on the default data set), so each of the 8 x 8 bins is well used.
CHROMA_EDGES = ((-0.045, -0.025, -0.016, -0.0085, -0.0034, 0.0024, 0.0144),  # U
                (-0.039, -0.0166, -0.0044, 0.0009, 0.008, 0.0213, 0.0388))  # V
N_CHROMA_BINS = (len(CHROMA_EDGES[0]) + 1) * (len(CHROMA_EDGES[1]) + 1)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def validate_name(name: str) -> str:
    """Task names become store paths: lower-case ASCII letters, digits and `_`, starting with a letter."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise TaskonomyError(
            f"invalid task name {name!r}: expected 1-64 characters of a-z, 0-9 and '_', starting with a letter"
        )
    return name


@dataclass(frozen=True)
class Task:
    """One vision task. `channels` is the dense output channels or the global vector length."""

    name: str
    group: str
    modality: str  # what the network reads: rgb, gray, noisy, masked, permuted, pair (two views)
    head: str  # dense (per pixel), global (one vector), pair (siamese over two views), none (controls)
    channels: int
    loss: str  # name in taskonomy.losses: returns one value per image
    label: str  # how the labels are made, one line
    label_dtype: str = "float32"  # "uint8" for class indices
    num_classes: int = 0  # > 0 for classification: the label holds class indices (or a distribution)
    role: str = "both"  # both, source (never a transfer target), target (never supervised)
    aliases: tuple[str, ...] = field(default=())  # names in the original release

    def __post_init__(self) -> None:
        validate_name(self.name)
        for value, allowed, what in ((self.group, GROUPS, "group"), (self.modality, MODALITIES, "modality"),
                                     (self.head, HEADS, "head"), (self.role, ROLES, "role")):
            if value not in allowed:
                raise TaskonomyError(f"task {self.name}: {what} {value!r} is not one of {allowed}")

    @property
    def is_source(self) -> bool:
        return self.role in ("both", "source")

    @property
    def is_target(self) -> bool:
        return self.role in ("both", "target") and self.head != "none"

    @property
    def store_dtype(self) -> str:
        """dtype of the label array in data.zarr: class indices uint8, dense maps float16, vectors float32."""
        if self.label_dtype != "float32":
            return self.label_dtype
        return "float16" if self.head == "dense" else "float32"

    def label_shape(self, size: int) -> tuple[int, ...]:
        """Shape of one image's label at image size `size` (no batch axis)."""
        if self.head == "none":
            return ()
        if self.head == "dense":
            if self.loss == "ce_dense":
                return (size, size)  # class index per pixel
            return (self.channels, size, size)
        if self.loss == "ce":
            return ()  # one class index
        return (self.channels,)


_REGISTRY: dict[str, Task] = {}
_ALIASES: dict[str, str] = {}


def register(task: Task, *, replace: bool = False) -> Task:
    """Add a task to the dictionary. A name (or alias) already taken is refused unless `replace`."""
    for name in (task.name, *task.aliases):
        owner = name if name in _REGISTRY else _ALIASES.get(name)
        if owner and not replace:
            raise TaskonomyError(f"task name {name!r} is already registered (by {owner!r})")
    _REGISTRY[task.name] = task
    for alias in task.aliases:
        _ALIASES[alias] = task.name
    return task


def unregister(name: str) -> None:
    """Remove a task (and its aliases) from the dictionary; unknown names are ignored."""
    task = _REGISTRY.pop(name, None)
    for alias in task.aliases if task else ():
        _ALIASES.pop(alias, None)


def resolve_alias(name: str) -> str:
    """Our name for a task named the original release's way (e.g. rgb2sfnorm -> normal)."""
    return name if name in _REGISTRY else _ALIASES.get(name, name)


def get(name: str) -> Task:
    """The task called `name` (or one of its aliases)."""
    key = resolve_alias(name)
    if key not in _REGISTRY:
        raise TaskonomyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def all_tasks() -> list[Task]:
    """Every registered task, in registration order."""
    return list(_REGISTRY.values())


def control_names() -> tuple[str, ...]:
    """The control sources (random, pixels): sources only, left out wherever real tasks are compared."""
    return tuple(t.name for t in _REGISTRY.values() if t.group == "control")


def _builtin() -> None:
    T = Task
    img = "the clean RGB image in [0, 1]"
    for task in (
        # low-level / self-supervised
        T("autoencoding", "low-level", "rgb", "dense", 3, "l1", f"reconstruct {img}", aliases=("autoencoder",)),
        T("denoising", "low-level", "noisy", "dense", 3, "l1", f"{img}, from the image with Gaussian noise",
          aliases=("denoise",)),
        T("colorization", "low-level", "gray", "dense", N_CHROMA_BINS, "ce_dense",
          f"the image's chroma (YUV U, V) quantised to {N_CHROMA_BINS} bins (8 x 8 equal-mass), from its luma",
          label_dtype="uint8", num_classes=N_CHROMA_BINS, role="source"),
        T("inpainting", "low-level", "masked", "dense", 3, "l1",
          f"{img}, from the image with a random square masked out", role="source", aliases=("impainting_whole",)),
        T("jigsaw", "low-level", "permuted", "global", N_JIGSAW, "ce",
          f"which of {N_JIGSAW} fixed permutations shuffled the 3x3 tiles", label_dtype="uint8",
          num_classes=N_JIGSAW, role="source"),
        # 2D
        T("edge_texture", "2D", "rgb", "dense", 1, "l1", "Sobel gradient magnitude of the smoothed luma",
          aliases=("edge2d",)),
        T("keypoints2d", "2D", "rgb", "dense", 1, "l1", "Harris corner response of the luma, squashed to [0, 1]",
          aliases=("keypoint2d",)),
        T("segment_unsup2d", "2D", "rgb", "dense", 3, "l1",
          "the image with each pixel replaced by the mean colour of its colour cluster (k-means, k=6)",
          aliases=("segment2d",)),
        # 2.5D / 3D
        T("depth_zbuffer", "3D", "rgb", "dense", 1, "l1", "z-buffer depth along the optical axis, metres",
          aliases=("rgb2depth",)),
        T("depth_euclidean", "3D", "rgb", "dense", 1, "l1", "distance from the camera centre, metres",
          aliases=("rgb2mist",)),
        T("normal", "3D", "rgb", "dense", 3, "l1", "surface normal in the camera frame (x right, y down, z forward)",
          aliases=("rgb2sfnorm",)),
        T("reshading", "3D", "rgb", "dense", 1, "l1",
          "Lambertian shading from a point light at the camera with inverse-square falloff, min(1, 2 m^2 cos / d^2)",
          aliases=("reshade",)),
        # curvature and edge_occlusion are sparse (on the default data 87% and 70% of their label pixels are 0):
        # under L1 the median, 0 everywhere, is the best constant, and every network, readout and scratch run
        # learnt it (their mean losses equal to 3 decimals, AHP consistency ratio 10); L2 rewards the curved
        # surfaces and the edges (stage I ratio 0.90 and 0.54 on the default run, consistency ratio < 0.3)
        T("curvature", "3D", "rgb", "dense", 2, "l2", "analytic principal curvatures (k1 >= k2), 1/metres"),
        T("edge_occlusion", "3D", "rgb", "dense", 1, "l2", "occlusion edges: relative depth discontinuities",
          aliases=("edge3d",)),
        T("keypoints3d", "3D", "rgb", "dense", 1, "l1",
          "3D corner response: Harris on the camera-frame normals and depth", aliases=("keypoint3d",)),
        T("segment_unsup25d", "3D", "rgb", "dense", 4, "l1",
          "per-pixel mean normal and depth of its geometric segment (k-means on colour, normal, depth)",
          aliases=("segment25d",)),
        T("room_layout", "3D", "rgb", "global", 9, "l2",
          "room box in the camera frame, its horizontal axes turned so the forward one is nearest the view: "
          "rotation (3, axis-angle), centre (3), half-extents (3)"),
        T("vanishing_point", "3D", "rgb", "global", 9, "l2",
          "the three Manhattan vanishing directions in the camera frame, canonical order and signs "
          "(right, down, forward)",
          aliases=("vanishing_point_well_defined",)),
        # semantic
        T("segment_semantic", "semantic", "rgb", "dense", N_SEMANTIC, "ce_dense",
          "per-pixel class: 1 background, then " + ", ".join(OBJECT_CLASSES), label_dtype="uint8",
          num_classes=N_SEMANTIC, aliases=("segmentsemantic_rb",)),
        T("class_object", "semantic", "rgb", "global", N_OBJECT_CLASSES, "soft_ce",
          "distribution of visible object pixels over the object classes", num_classes=N_OBJECT_CLASSES,
          aliases=("class_1000",)),
        T("class_scene", "semantic", "rgb", "global", len(ROOM_TYPES), "ce",
          "room type: " + ", ".join(ROOM_TYPES), label_dtype="uint8", num_classes=len(ROOM_TYPES),
          aliases=("class_places",)),
        # multi-view: the network sees the main view and a second view of the same room
        T("egomotion", "multi-view", "pair", "pair", 6, "l2",
          "relative pose of a small camera step: axis-angle (3), translation (3) in the first camera frame",
          aliases=("ego_motion",)),
        T("fixated_pose", "multi-view", "pair", "pair", 6, "l2",
          "relative pose of two cameras fixating the same 3D point", aliases=("fix_pose",)),
        T("nonfixated_pose", "multi-view", "pair", "pair", 6, "l2",
          "relative pose of two overlapping cameras", aliases=("non_fixated_pose",)),
        T("point_matching", "multi-view", "pair", "pair", 1, "bce",
          "1 if the two views' centre pixels see the same 3D point, else 0", aliases=("point_match",)),
        # controls: sources only, no labels
        T("random", "control", "rgb", "none", 0, "none", "an untrained encoder with a fixed seed", role="source"),
        T("pixels", "control", "rgb", "none", 0, "none", "the image resized to the feature shape", role="source"),
    ):
        register(task)


_builtin()
