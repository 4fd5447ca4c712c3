"""Configuration: validated defaults, a small YAML override, the resolved config saved in the run folder.

    taskonomy --config configs/tiny.yaml data
    taskonomy --run-dir runs/tiny --set transfer.epochs=5 transfer     # the folder's config.yaml, one key changed

An unknown key or a bad value is refused with one line naming the key and what was expected. The built-in
defaults are configs/default.yaml's values (the main job), so `load_config()` is that run. Every key belongs to
the stage whose stored output it changes (`stage_of`): a run folder's config.yaml is compared key by key with
a new config (`changed_keys`) before a command may use it there.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskonomy import TaskonomyError
from taskonomy import tasks as registry

__all__ = ["AhpConfig", "Config", "DataConfig", "ENCODER_KINDS", "EPHEMERAL", "EncoderConfig", "ExtractConfig",
           "SCREEN_ESTIMATORS", "ScreenConfig", "SplitConfig", "STAGES", "StorageConfig", "TaxonomyConfig",
           "TrainConfig", "TransferConfig", "changed_keys", "content_hash", "encoder_entry", "flat_keys", "load_config",
           "parse_setting", "stage_of"]

# The main job's tasks (configs/default.yaml): the 21 single-image tasks; the multi-view ones need the GPU run.
DEFAULT_TASKS = ("autoencoding", "denoising", "colorization", "inpainting", "jigsaw", "edge_texture", "keypoints2d",
                 "segment_unsup2d", "depth_zbuffer", "depth_euclidean", "normal", "reshading", "curvature",
                 "edge_occlusion", "keypoints3d", "segment_unsup25d", "room_layout", "vanishing_point",
                 "segment_semantic", "class_object", "class_scene")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    """Splits are made by scene, so no room appears in two splits (as Taskonomy splits by building)."""

    test: float = Field(0.125, gt=0, lt=1, description="fraction of scenes held out for testing transfers")
    transfer: float = Field(0.125, gt=0, le=1, description="fraction of the train scenes the readouts see")


class DataConfig(_Strict):
    """The generated data set."""

    image_size: int = Field(32, ge=16, le=512)
    n_scenes: int = Field(1000, ge=4)
    views_per_scene: int = Field(4, ge=1, le=1000)
    min_objects: int = Field(3, ge=1, le=24, description="fewest pieces of furniture in a room")
    max_objects: int = Field(10, ge=1, le=24, description="most pieces of furniture in a room (each 1..5 primitives)")
    n_lights: int = Field(3, ge=1, le=8, description="most lights in a room (each room has 1..n_lights)")
    object_materials: Literal["free", "class"] = Field(
        "free", description="free: an object's material ignores its class; class: each class has its own kind and hue "
        "(easier: colour then tells the class, and through the furniture the room type)")
    columns: float = Field(0.85, ge=0, le=1, description="share of rooms with 1..5 floor-to-ceiling columns")
    fov_degrees: float = Field(65.0, ge=30, le=120)
    tasks: list[str] | Literal["all"] = Field(default_factory=lambda: list(DEFAULT_TASKS),
                                              description="labelled tasks; 'all' = every task of the dictionary")
    splits: SplitConfig = SplitConfig()
    chunk_images: int | Literal["auto"] = "auto"
    batch: int = Field(64, ge=1, le=4096, description="images rendered per call of the ray caster")

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"expected a multiple of 8 (the encoder downsamples by 8), got {value}")
        return value

    @field_validator("tasks")
    @classmethod
    def _known_targets(cls, value: list[str] | str) -> list[str] | str:
        names = _registered(value, "task")
        for name in names if names != "all" else ():
            if registry.get(name).head == "none":
                raise ValueError(f"{name!r} is a control with no labels; controls are sources, not data tasks")
        return names

    @model_validator(mode="after")
    def _object_range(self) -> DataConfig:
        if self.min_objects > self.max_objects:
            raise ValueError(f"expected min_objects <= max_objects, got {self.min_objects} > {self.max_objects}")
        return self

    @field_validator("chunk_images")
    @classmethod
    def _positive_chunk(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError(f"expected 'auto' or a positive number of images, got {value}")
        return value

    @property
    def n_images(self) -> int:
        return self.n_scenes * self.views_per_scene

    def task_names(self) -> list[str]:
        """The configured tasks with labels, in registry order when 'all'."""
        if self.tasks == "all":
            return [t.name for t in registry.all_tasks() if t.head != "none"]
        return list(self.tasks)


class TrainConfig(_Strict):
    """Stage I: one encoder-decoder per source task, the encoder architecture identical for all."""

    width: int = Field(16, ge=4, le=512, description="channels of the encoder's first stage (doubling per stage)")
    blocks: int = Field(1, ge=1, le=8, description="residual blocks per encoder stage")
    feature_channels: int = Field(16, ge=1, le=512, description="channels of the representation")
    epochs: int = Field(8, ge=1, le=1000)
    batch: int = Field(32, ge=1, le=4096)
    lr: float = Field(2e-3, gt=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1, description="fraction of train scenes held out for early stopping")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tasks: list[str] | Literal["all"] = Field("all", description="source tasks to train; 'all' = every data task")
    task_epochs: dict[str, int] = Field(default_factory=dict,
                                        description="epochs for the named tasks instead of `epochs` (stage I and "
                                                    "scratch networks), e.g. global heads, which cost a third of a "
                                                    "dense network per epoch")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str] | str) -> list[str] | str:
        return _registered(value, "task")

    @field_validator("task_epochs")
    @classmethod
    def _known_task_epochs(cls, value: dict[str, int]) -> dict[str, int]:
        names = _distinct(list(value), "task", lambda name: registry.get(registry.validate_name(name)).name)
        for name, epochs in value.items():
            if not 1 <= epochs <= 1000:
                raise ValueError(f"{name}: expected 1 to 1000 epochs, got {epochs}")
        return dict(zip(names, value.values()))

    def epochs_for(self, task: str) -> int:
        """The epochs `task`'s network trains for: its `task_epochs` entry, else `epochs`."""
        return self.task_epochs.get(task, self.epochs)

    def stamp(self, task: str) -> dict[str, Any]:
        """What defines `task`'s network, for its checkpoint's hash: every setting but the task list and the
        device, with `task_epochs` resolved, so an override of one task leaves every other network's hash alone."""
        dump = self.model_dump(mode="json", exclude={"tasks", "device", "task_epochs"})
        return {**dump, "epochs": self.epochs_for(task)}


EncoderKind = Literal["visualpriors", "export", "torchscript", "timm", "torchvision"]
ENCODER_KINDS: tuple[str, ...] = get_args(EncoderKind)


class EncoderConfig(_Strict):
    """A pretrained frozen encoder as a source (extract/encoders.py): its kind, local file and input. Unset input
    settings take the kind's defaults: 256 px and [-1, 1] for visualpriors, 224 px and ImageNet's mean/std else."""

    kind: EncoderKind
    file: str = Field(description="local path: a .pt2 program, a TorchScript file or a weights file; never fetched")
    sha256: str | None = Field(None, description="hex prefix (8-64 digits) the file's sha256 must start with")
    input_size: int | None = Field(None, ge=16, le=1024, description="images are resized to this square size")
    mean: tuple[float, float, float] | None = Field(None, description="per-channel mean of [0, 1] RGB inputs")
    std: tuple[float, float, float] | None = Field(None, description="per-channel std of [0, 1] RGB inputs")
    output: int | str | None = Field(None, description="index or key into a tuple/dict output (timm: feature level)")
    model: str | None = Field(None, description="timm/torchvision architecture name, e.g. resnet50")
    layer: str | None = Field(None, description="timm/torchvision: the named module whose output is cached")

    @field_validator("sha256")
    @classmethod
    def _hex_prefix(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{8,64}", value.lower()):
            raise ValueError(f"expected 8 to 64 hex digits of the file's sha256, got {value!r}")
        return None if value is None else value.lower()

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and not all(v > 0 for v in value):
            raise ValueError(f"expected three standard deviations > 0, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _model_and_layer_for_backbones(self) -> EncoderConfig:
        backbone = self.kind in ("timm", "torchvision")
        if backbone != (self.model is not None):
            raise ValueError("a timm or torchvision encoder names its model (e.g. resnet50); the other kinds do not")
        if self.layer is not None and not backbone:
            raise ValueError("only timm and torchvision encoders take a layer; export the layer's output instead")
        return self


def encoder_entry(raw: dict[str, Any], source: str) -> EncoderConfig:
    """One encoder entry validated like a config file's, a bad value refused in one line naming `source`."""
    try:
        return EncoderConfig.model_validate(raw)
    except ValidationError as err:
        raise TaskonomyError(_one_line(err, source).replace(": <root>:", ":", 1)) from None


class ExtractConfig(_Strict):
    """The feature cache: every frozen encoder run once over every split."""

    batch: int = Field(256, ge=1, le=65536)
    chunk_images: int | Literal["auto"] = "auto"
    taskonomy_encoders: dict[str, str] = Field(
        default_factory=dict, description="extra sources: name -> local path of a visualpriors encoder checkpoint")
    taskonomy_size: int = Field(256, ge=16, le=1024, description="input size of those encoders (they expect 256)")
    encoders: dict[str, EncoderConfig] = Field(
        default_factory=dict, description="extra sources: name -> a pretrained encoder of any kind (EncoderConfig)")

    @field_validator("taskonomy_size")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"expected a multiple of 16 (the ResNet-50 trunk downsamples by 16), got {value}")
        return value

    @field_validator("taskonomy_encoders", "encoders")
    @classmethod
    def _names_are_store_paths(cls, value: dict[str, Any], info) -> dict[str, Any]:
        for name in value:
            try:
                registry.validate_name(name)
            except registry.TaskonomyError as err:
                raise ValueError(str(err)) from None
            if info.field_name == "encoders" and name in info.data.get("taskonomy_encoders", {}):
                raise ValueError(f"{name!r} is also in extract.taskonomy_encoders; a source has one encoder")
        return value


class AhpConfig(_Strict):
    """Stage III: the tournament per target, its power iteration and the bootstrap over test images."""

    resamples: int = Field(200, ge=0, le=100_000, description="bootstrap resamples of the test images; 0 disables")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the bootstrap percentile intervals")
    tolerance: float = Field(1e-12, gt=0, lt=1, description="power iteration stops when the L1 change is below")
    max_iter: int = Field(10_000, ge=1, le=10_000_000, description="power iteration cap; reaching it is reported")


def _distinct(value: list[str], what: str, lookup) -> list[str]:
    """`lookup(name)` of every name (a TaskonomyError becomes the validation message), each listed once."""
    names = []
    for name in value:
        try:
            name = lookup(name)
        except registry.TaskonomyError as err:
            raise ValueError(str(err)) from None
        if name in names:
            raise ValueError(f"{what} {name!r} is listed twice")
        names.append(name)
    return names


def _task_names(value: list[str], what: str) -> list[str]:
    """Valid, distinct task names with the original release's aliases resolved (targets may be user tasks)."""
    return _distinct(value, what, lambda name: registry.resolve_alias(registry.validate_name(name)))


def _registered(value: list[str] | str, what: str) -> list[str] | str:
    """'all', or registered tasks (aliases resolved), each listed once: stage I and II run only those."""
    if value == "all":
        return value
    if not value:
        raise ValueError("expected at least one task, or 'all'")
    return _distinct(value, what, lambda name: registry.get(registry.validate_name(name)).name)


class TaxonomyConfig(_Strict):
    """Stage IV: the BIP over the affinities. Controls (random, pixels) are sources only when listed in `sources`."""

    budget: float = Field(3.0, ge=0, allow_inf_nan=False, description="total label cost of the supervised sources")
    max_order: int = Field(3, ge=1, le=8, description="most sources one transfer may read")
    solver: Literal["cbc", "highs"] = "cbc"
    time_limit: float = Field(60.0, gt=0, le=86400, description="seconds per BIP solve")
    importance: dict[str, float] = Field(default_factory=dict, description="target -> weight (default 1)")
    cost: dict[str, float] = Field(default_factory=dict, description="source -> label cost (default 1, controls 0)")
    sources: list[str] | Literal["all"] = Field("all", description="tasks that may be supervised")
    targets: list[str] | Literal["all"] = Field("all", description="tasks that need a transfer in")

    @field_validator("importance", "cost")
    @classmethod
    def _non_negative_weights(cls, value: dict[str, float], info) -> dict[str, float]:
        for name, weight in value.items():
            if not (weight >= 0 and weight != float("inf")):
                raise ValueError(f"{info.field_name} of {name!r} must be a finite number >= 0, got {weight!r}")
        return dict(zip(_task_names(list(value), info.field_name), value.values()))

    @field_validator("sources", "targets")
    @classmethod
    def _task_list(cls, value: list[str] | str, info) -> list[str] | str:
        if value == "all":
            return value
        if not value:
            raise ValueError("expected at least one task, or 'all'")
        return _task_names(value, info.field_name.rstrip("s"))


# transfer/estimate.py's estimators (config is the base layer: tests/transfer/test_screen.py checks the two agree)
SCREEN_ESTIMATORS = ("logme", "hscore", "rsa", "parc", "ridge")


class ScreenConfig(_Strict):
    """transfer.screen: stage II trains only the readouts a transferability estimator ranks best
    (transfer/screen.py); the rest are recorded as screened out."""

    estimator: Literal[SCREEN_ESTIMATORS] = Field(description="transfer/estimate.py's estimator that ranks them")
    keep: int = Field(ge=1, le=1000, description="first-order sources per target trained, the controls besides")
    beam: int = Field(ge=0, le=1000, description="higher-order beam sets per target trained")


class TransferConfig(_Strict):
    """Stage II: readouts from frozen features to every target, trained on the transfer split."""

    epochs: int = Field(20, ge=1, le=10000)
    batch: int = Field(32, ge=1, le=65536)
    lr: float = Field(1e-2, gt=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0, lt=1)
    hidden: int = Field(32, ge=1, le=1024, description="channels of a readout's convolutions")
    max_order: int = Field(3, ge=1, le=8, description="largest number of sources of one transfer")
    beam: int = Field(5, ge=1, le=32, description="higher orders combine the target's best first-order sources")
    targets: list[str] | Literal["all"] = Field("all", description="targets; 'all' = every data task that can be one")
    scratch: bool = Field(True, description="also train the scratch baseline (encoder + readout on the transfer split)")
    scheduler: str | None = Field(None, description="dask.distributed scheduler address; none = in process")
    validation: float = Field(0.2, ge=0, lt=1, description="fraction of the transfer split's scenes held out from "
                              "readout training; the beam ranks first-order sources on them")
    screen: ScreenConfig | None = Field(None, description="{estimator, keep, beam}: train only the readouts the "
                                        "estimator ranks best; none = every readout")
    seed: int | None = Field(None, ge=0, lt=2**63, description="seed of the readouts and scratch networks "
                             "(initialisation, batch order); none = the run's seed. Scenes, splits, the validation "
                             "part and stage I keep the run's seed")

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: list[str] | str) -> list[str] | str:
        return _registered(value, "target")

    @model_validator(mode="after")
    def _validation_for_the_beam(self) -> TransferConfig:
        if self.validation == 0 and self.max_order > 1:
            raise ValueError("validation 0 leaves nothing to rank the beam's sources on (never the test images); "
                             "set transfer.validation > 0 or transfer.max_order 1")
        return self

    @model_validator(mode="after")
    def _validation_for_ridge(self) -> TransferConfig:
        if self.screen is not None and self.screen.estimator == "ridge" and self.validation == 0:
            raise ValueError("screen.estimator ridge scores on the validation part and validation 0 holds out "
                             "none; set transfer.validation > 0 or another estimator")
        return self


class StorageConfig(_Strict):
    """Where data.zarr, features.zarr and transfers.zarr live: the run folder (url none) or an object-storage
    prefix; the small files and the lock stay in the run folder. Credentials come from the environment as s3fs
    reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...), never from the config."""

    url: str | None = Field(None, description="s3://bucket/prefix: the stores are <url>/data.zarr, ...; none = the "
                            "run folder")
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the file system (s3fs), e.g. "
                                    "{endpoint_url: http://localhost:9000} for MinIO; no secrets here")

    @field_validator("url")
    @classmethod
    def _an_s3_prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/]+)*", value):
            raise ValueError(f"expected s3://bucket or s3://bucket/prefix, got {value!r}")
        return value

    @field_validator("options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        # config.yaml is saved in the run folder and hashed into nothing, but it is copied around: keep keys out
        secret = [k for k in value if k in ("key", "secret", "token", "aws_access_key_id", "aws_secret_access_key",
                                            "aws_session_token")]
        if secret:
            raise ValueError(f"{secret[0]} is a credential: set it in the environment (AWS_ACCESS_KEY_ID, "
                             f"AWS_SECRET_ACCESS_KEY), not in the config")
        return value


class Config(_Strict):
    """A whole run's configuration; its defaults are configs/default.yaml's (tests/taskonomy/test_config.py)."""

    name: str = "default"
    seed: int = Field(0, ge=0, lt=2**63)
    threads: int | None = Field(None, ge=1, description="threads for torch, Numba and Dask; default all cores")
    scheduler: str | None = Field(None, description="dask.distributed scheduler address: stage I, the feature cache "
                                  "and stage II run there (transfer.scheduler, when set, wins for stage II); none = "
                                  "in process. Changes no result, so never saved")
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    extract: ExtractConfig = ExtractConfig()
    transfer: TransferConfig = TransferConfig()
    ahp: AhpConfig = AhpConfig()
    taxonomy: TaxonomyConfig = TaxonomyConfig()
    storage: StorageConfig = StorageConfig()  # where the stores are, not what they hold: in no stamp

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        # the name becomes runs/<name>: letters, digits, '-', '_', '.', not starting with '.'
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError(f"expected 1-64 letters, digits, '_', '-' or '.', not starting with '.', got {value!r}")
        return value


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}"
    msg = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if isinstance(given, dict) or "got" in msg else f" (got {given!r})"
    return f"{source}: {key}: {msg}{shown}"


def parse_setting(text: str) -> tuple[tuple[str, ...], Any]:
    """`--set KEY=VALUE`: the dotted key's parts and VALUE parsed as YAML (`5`, `0.01`, `[normal, depth_zbuffer]`)."""
    key, sep, value = text.partition("=")
    parts = tuple(part.strip() for part in key.split("."))
    if not sep or not all(parts):
        raise TaskonomyError(f"--set {text}: expected KEY=VALUE with a dotted key, e.g. --set transfer.epochs=5")
    try:
        return parts, yaml.safe_load(value)
    except yaml.YAMLError:
        raise TaskonomyError(f"--set {text}: the value is not valid YAML") from None


def _apply_setting(raw: dict[str, Any], text: str) -> None:
    """One `--set` into the raw (unvalidated) mapping, in place; a key into a value that is not a section is
    refused, naming it."""
    parts, value = parse_setting(text)
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TaskonomyError(f"--set {text}: {'.'.join(parts[:depth + 1])} is a value, not a section of keys")
        node[part] = child = dict(child)  # copied: the caller's mapping is not changed under it
        node = child
    node[parts[-1]] = value


def _validate(raw: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise TaskonomyError(_one_line(err, source)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                settings: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at `path` (its stem is the default name), then `overrides` (top-level keys),
    then `settings` (`KEY=VALUE` strings of `--set`, dotted keys, YAML values), each validated like the file:
    a bad key or value is one line naming its source (the file, or the `--set` that brought it)."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise TaskonomyError(f"cannot read config {path}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise TaskonomyError(f"{path}: not valid YAML (not UTF-8 text: byte {err.start})") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise TaskonomyError(f"{path}: not valid YAML{where}") from None
        if not isinstance(raw, dict):
            raise TaskonomyError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
        raw.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        raw[key] = value
    config = _validate(raw, source)
    for text in settings:  # one at a time, so that an error names the --set that caused it
        _apply_setting(raw, text)
        config = _validate(raw, f"--set {text}")
    return config


# Every key belongs to the stage whose stored output it changes; None: nothing stored (the name; storage.*, which
# says where the stores are, not what they hold); EPHEMERAL sections change no stored result (solve and evaluate
# write their settings into their own outputs).
STAGES = ("data", "train", "extract", "transfer", "ahp")
EPHEMERAL = ("threads", "scheduler", "taxonomy")


def stage_of(key: str) -> str | None:
    """The stage whose output a dotted key changes ('data' for seed and data.*), 'ephemeral' for threads and
    taxonomy.*, None for the name."""
    top = key.split(".", 1)[0]
    if top == "seed":
        return "data"
    if top in STAGES:
        return top
    return "ephemeral" if top in EPHEMERAL else None


def flat_keys(config: Config) -> dict[str, Any]:
    """{dotted key: value as JSON} for every setting, sections flattened (data.splits.test, ...); a mapping
    value such as taxonomy.importance is one key."""
    flat: dict[str, Any] = {}

    def walk(model: BaseModel, dumped: dict[str, Any], prefix: str) -> None:
        for name in type(model).model_fields:
            value, kind = getattr(model, name), type(model).model_fields[name].annotation
            # a section is flattened; an optional one (transfer.screen: None or set) is one key, as a mapping is
            if isinstance(value, BaseModel) and isinstance(kind, type) and issubclass(kind, BaseModel):
                walk(value, dumped[name], f"{prefix}{name}.")
            else:
                flat[prefix + name] = dumped[name]

    walk(config, config.model_dump(mode="json"), "")
    return flat


def changed_keys(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every setting that differs, in the config's order."""
    before, after = flat_keys(old), flat_keys(new)
    return [(key, before[key], value) for key, value in after.items() if before[key] != value]


def content_hash(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts (configs, versions), for up-to-date checks."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
