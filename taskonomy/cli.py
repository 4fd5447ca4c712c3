"""The `taskonomy` command: one subcommand per stage, all sharing --config, --set and --run-dir.

    taskonomy --config configs/tiny.yaml data --preview contact.png
    taskonomy --run-dir runs/tiny --set taxonomy.budget=2 solve     # the folder's own config, one key changed

Every problem with the user's input ends in one line on stderr and exit status 2 and leaves the run folder as
it was. A run folder knows its config: <run-dir>/config.yaml, saved when a command succeeds, is what a command
without --config uses; a --config or --set that changes a key of a stored result the command does not rebuild
is refused (`Context.open`). The folder's format version is checked before anything else (run.json).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from taskonomy import TaskonomyError
from taskonomy.config import ENCODER_KINDS, STAGES as BUILT, Config, changed_keys, flat_keys, load_config, stage_of
from taskonomy.runfolder import FILES, FORMAT_VERSION, RunFolder, check_format, format_version, write_format, write_text

__all__ = ["main"]


# The stages whose stored output each command rebuilds (any other command rebuilds none): a changed key of
# another stage is refused where that stage's output exists (taskonomy.config.stage_of: which key is whose).
REBUILDS = {"data": ("data",), "train": ("train",), "extract": ("extract",), "transfer": ("transfer",),
            "ahp": ("ahp",), "run": BUILT, "add-target": ("extract", "transfer"),
            "add-source": ("extract", "transfer")}
OUTPUTS = {"data": ("data",), "train": ("models",), "extract": ("features",), "transfer": ("transfers",),
           "ahp": ("affinity", "ahp_stamp")}  # each stage's stored output (names of runfolder.FILES)
CREATES = ("data", "run", "published")  # the commands that may make a run folder; the others refuse a missing one
# the commands that make or change a run's own results: refused on a folder of the release's published numbers
OWN_RESULTS = ("data", "train", "extract", "transfer", "add-target", "add-source", "ahp", "run", "estimate")


@dataclass
class _Options:
    """The global options as given; the subcommand resolves them into a Context once its own options parsed."""

    config_path: str | None
    run_dir: str | None
    settings: tuple[str, ...]
    threads: int | None
    progress: bool


def _shown(value) -> str:
    import json

    return value if isinstance(value, str) and value else json.dumps(value)


def _put(doc: dict, key: str, value) -> None:
    *sections, leaf = key.split(".")
    for section in sections:
        doc = doc[section]
    doc[leaf] = value


@dataclass
class Context:
    config: Config
    run_dir: Path
    progress: bool
    command: str = ""
    stored: Config | None = None  # the folder's config.yaml as it stands; None: it has none yet
    resolved: Config | None = None  # the global options' config, before a command's own options change it
    created: Path | None = None  # the outermost folder this command made (removed if it fails on its input)

    @classmethod
    def open(cls, options: _Options, command: str) -> Context:
        """The run folder and config of `command`, checked before anything is read from the folder, written,
        created or locked: the folder's format; a missing folder (only `data` and `run` make one); the config:
        --config's, else the folder's config.yaml, else the built-in defaults, with --threads and every --set on
        top; and no changed key of a stored result the command does not rebuild."""
        overrides = {"threads": options.threads} if options.threads else None
        given = load_config(options.config_path, overrides, options.settings) if options.config_path else None
        if options.run_dir:
            run_dir = Path(options.run_dir)
        elif given is not None:
            run_dir = Path("runs") / given.name
        else:  # the default name, or the one a --set name=... gives
            named = [s for s in options.settings if s.partition("=")[0].strip() == "name"]
            run_dir = Path("runs") / (load_config(None, None, named[-1:]).name)
        if run_dir.is_dir():
            if command != "upgrade" or (format_version(run_dir) or 0) > FORMAT_VERSION:
                check_format(run_dir)
        elif command not in CREATES:
            example = f"--config {options.config_path}" if options.config_path else "--config FILE"
            where = f" --run-dir {run_dir}" if options.run_dir else ""
            raise TaskonomyError(f"run folder {run_dir} does not exist; make it with `taskonomy {example}{where} run` "
                                 f"(or `data`)")
        if command in OWN_RESULTS and (run_dir / FILES["published"]).is_file():
            raise TaskonomyError(f"{run_dir} holds the published Taskonomy results ({FILES['published']}); "
                                 f"`taskonomy {command}` makes a run's own results: choose another --run-dir")
        stored_path = run_dir / FILES["config"]
        stored = load_config(stored_path) if stored_path.is_file() else None
        config = given or load_config(stored_path if stored else None, overrides, options.settings)
        context = cls(config, run_dir, options.progress, command, stored, config)
        context.refuse_conflicts()
        return context

    def output_of(self, stage: str) -> str | None:
        """The name of `stage`'s stored output in the folder (a store: under the folder's storage.url when it has
        one), or None when it has none there."""
        run = RunFolder(self.run_dir, (self.stored or self.config).storage)
        for name in OUTPUTS[stage]:
            if getattr(run, name).exists():
                return FILES[name] + ("/" if name == "models" else "")
        return None

    def refuse_conflicts(self) -> None:
        """One line for the first key that differs from the folder's config.yaml and belongs to a stage whose
        output is in the folder but which this command does not rebuild."""
        if self.stored is None:
            return
        rebuilt = REBUILDS.get(self.command, ())
        for key, old, new in changed_keys(self.stored, self.config):
            stage = stage_of(key)
            if stage not in BUILT or stage in rebuilt or (output := self.output_of(stage)) is None:
                continue
            raise TaskonomyError(f"{key} is {_shown(old)} in {self.run_dir / FILES['config']}, {_shown(new)} here; "
                                 f"`taskonomy {self.command}` does not rebuild {output}: run `taskonomy {stage}` "
                                 f"(or `taskonomy run`) with it")

    def start(self) -> None:
        """Lock the folder (when it exists) and cap the threads."""
        self.hold()
        from taskonomy.runtime import cap_threads

        cap_threads(self.config.threads)

    def prepare_run_dir(self) -> Path:
        """The run folder, locked: `data` and `run` make it when it is missing (and prove it writable by
        locking it). The config is saved only when the command succeeds (`save_config`)."""
        if not self.run_dir.is_dir():
            if self.command not in CREATES:
                raise TaskonomyError(f"run folder {self.run_dir} does not exist")
            top = self.run_dir
            while not top.parent.exists() and top.parent != top:
                top = top.parent
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise TaskonomyError(f"cannot write run folder {self.run_dir}: {err.strerror or err}") from None
            self.created = self.created or top
        self.hold()
        return self.run_dir

    def discard(self) -> None:
        """After a failure on input: remove the folder this command made, if it holds nothing but the lock."""
        if self.created is None:
            return
        folder = self.run_dir
        try:
            if any(p.name != FILES["lock"] for p in folder.iterdir()):
                return
            (folder / FILES["lock"]).unlink(missing_ok=True)
            while True:
                folder.rmdir()
                if folder == self.created:
                    break
                folder = folder.parent
        except OSError:
            pass
        self.created = None

    def save_config(self, done) -> None:
        """After a command (or a stage of `run`) succeeded: config.yaml (atomically, and only when it changes)
        and run.json (when missing). Kept from the folder's config.yaml: threads and taxonomy.* (never saved:
        they change no stored result), and the keys of a stage not in `done` whose output the folder holds; a
        folder with no config.yaml yet gets the whole config of the global options."""
        if not self.run_dir.is_dir():
            return
        doc = self.config.model_dump(mode="json")
        kept = flat_keys(self.stored or self.resolved or self.config)
        for key in kept:
            stage = stage_of(key)
            if stage == "ephemeral" or (self.stored is not None and stage in BUILT and stage not in done
                                        and self.output_of(stage) is not None):
                _put(doc, key, kept[key])
        if self.stored is None or doc != self.stored.model_dump(mode="json"):
            write_text(self.run_dir / FILES["config"], yaml.safe_dump(doc, sort_keys=False))
            self.stored = Config.model_validate(doc)
        if not (self.run_dir / FILES["format"]).is_file():
            write_format(self.run_dir)

    def hold(self) -> None:
        """Hold <run-dir>/.lock until the current command ends: a second writer on this folder is refused."""
        click_ctx = click.get_current_context(silent=True)
        if click_ctx is None or not self.run_dir.is_dir():  # not the CLI, or nothing there yet to protect
            return
        from taskonomy.lock import acquire, release

        acquire(self.run_dir, f"taskonomy {click_ctx.info_name}", self.config.storage)  # + storage.url's lease
        click_ctx.call_on_close(lambda: release(self.run_dir))


class _RunCommand(click.Command):
    """A subcommand: it resolves the global options against the run folder (Context.open), holds the folder's
    lock while it runs, saves the config when it succeeds, and when a read fails, reports a damaged store of
    the run by name instead of a traceback."""

    def invoke(self, ctx: click.Context):
        if isinstance(ctx.obj, _Options):
            local = ctx.params.pop("run_dir", None)  # a command's own --run-dir (`taskonomy published --run-dir R`)
            if local and ctx.obj.run_dir and Path(local) != Path(ctx.obj.run_dir):
                raise TaskonomyError(f"two run folders: --run-dir {ctx.obj.run_dir} and {self.name} --run-dir {local}")
            ctx.obj.run_dir = local or ctx.obj.run_dir
            ctx.obj = Context.open(ctx.obj, self.name)
        run: Context = ctx.obj
        try:
            run.start()
            result = super().invoke(ctx)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except TaskonomyError:
            run.discard()
            raise
        except Exception:  # e.g. Zarr's crc32c codec: "Stored and computed checksum do not match"
            from taskonomy.store import damage_error

            error = damage_error(run.run_dir)
            if error is None:
                raise
            run.discard()
            raise error from None
        run.save_config(REBUILDS.get(run.command, ()))
        return result


class _Cli(click.Group):
    command_class = _RunCommand


def _say(ctx: Context, message: str) -> None:
    if ctx.progress:
        click.echo(message, err=True)


def _report(ctx: Context, stage: str, outcome: dict[str, str], store: Path, start: float) -> None:
    """What a stage did per source or target, then its store and wall time."""
    for name, state in outcome.items():
        _say(ctx, f"{stage}: {name:<18} {state}")
    _say(ctx, f"{stage}: {store} ({time.perf_counter() - start:.1f} s)")


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config (defaults apply to every key it leaves out).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: runs/<config name>]; without --config, its config.yaml is the config.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Change one config key, e.g. --set transfer.epochs=5 (repeatable; VALUE is YAML). Saved in the "
                   "run folder's config.yaml when the command succeeds, except threads and taxonomy.*.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Override the config's thread cap.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status lines.")
@click.version_option(package_name="taskonomy-engine")
@click.pass_context
def cli(click_ctx: click.Context, config_path: str | None, run_dir: str | None, settings: tuple[str, ...],
        threads: int | None, quiet: bool) -> None:
    """A Taskonomy engine: task transfer affinities and the supervision taxonomy, over cached features."""
    click_ctx.obj = _Options(config_path, run_dir, settings, threads, not quiet)  # resolved by the subcommand


@cli.command()
@click.option("--force", is_flag=True, help="Rebuild data.zarr even if it exists or was made from another config.")
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Also write a contact sheet PNG: scenes as rows, every task's label as columns.")
@click.option("--rows", type=click.IntRange(1, 32), default=4, show_default=True, help="Scenes in the preview.")
@click.option("--export-taskonomy", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the data set in Taskonomy's folder layout and PNG encodings.")
@click.option("--from-taskonomy", "import_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Build data.zarr by reading a Taskonomy-layout folder (streamed, resumable) instead of generating.")
@click.option("--from-arrays", "arrays_path", type=click.Path(exists=True), default=None,
              help="Build data.zarr from an images array: a .npy file or Zarr array, (N, H, H, 3) uint8 or float in "
                   "[0, 1]; with --labels and --building-ids.")
@click.option("--labels", "label_paths", multiple=True, metavar="TASK=PATH",
              help="With --from-arrays: one task's labels, a .npy file or Zarr array in image order (repeatable).")
@click.option("--building-ids", type=click.Path(exists=True), default=None,
              help="With --from-arrays: a (N,) array of building (scene) ids, integers or strings; splits by them.")
@click.option("--buildings", default=None, metavar="A,B,...",
              help="With --from-taskonomy or --from-arrays: import only these buildings.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="With --from-taskonomy or --from-arrays: at most this many images, taken building by building.")
@click.pass_obj
def data(ctx: Context, force: bool, preview: str | None, rows: int, export_dir: str | None,
         import_dir: str | None, arrays_path: str | None, label_paths: tuple[str, ...], building_ids: str | None,
         buildings: str | None, limit: int | None) -> None:
    """Generate the scenes and every task's labels into <run-dir>/data.zarr (or import real data)."""
    importing = import_dir or arrays_path
    if not importing and (label_paths or building_ids or buildings or limit):
        raise TaskonomyError("--labels, --building-ids, --buildings and --limit go with --from-taskonomy or "
                             "--from-arrays")
    if import_dir and arrays_path:
        raise TaskonomyError("--from-taskonomy and --from-arrays: choose one")
    if arrays_path and not building_ids:
        raise TaskonomyError("--from-arrays needs --building-ids: one building (scene) id per image, for the splits")
    if import_dir and (label_paths or building_ids):
        raise TaskonomyError("--labels and --building-ids go with --from-arrays (a Taskonomy folder has its own)")
    labels = {}
    for value in label_paths:
        task, _, label_path = value.partition("=")
        if not task.strip() or not label_path.strip():
            raise TaskonomyError(f"--labels expects TASK=PATH, got {value!r}")
        labels[task.strip()] = label_path.strip()
    chosen = [b.strip() for b in buildings.split(",") if b.strip()] if buildings is not None else None
    if chosen == []:
        raise TaskonomyError(f"--buildings names no building (got {buildings!r}); expected A,B,...")
    run_dir = ctx.prepare_run_dir()
    path = RunFolder(run_dir).data
    start = time.perf_counter()
    fractions = (ctx.config.data.splits.test, ctx.config.data.splits.transfer)
    chunk = ctx.config.data.chunk_images if ctx.config.data.chunk_images != "auto" else None
    selection = {"buildings": chosen, "limit": limit, "splits": fractions, "chunk_images": chunk, "force": force,
                 "progress": ctx.progress}
    if import_dir:
        from taskonomy.scenes.taskonomy_read import read_taskonomy

        state = read_taskonomy(import_dir, path, size=ctx.config.data.image_size, **selection)
        state += f" from {import_dir}"
    elif arrays_path:
        from taskonomy.scenes.arrays import read_arrays

        state = read_arrays(arrays_path, labels, building_ids, path, ctx.config.data.image_size, **selection)
        state += f" from {arrays_path}"
    else:
        from taskonomy.scenes.dataset import build_data, is_imported

        if not force and is_imported(path):  # `taskonomy run` on imported data: the import is the data stage
            state = "kept (imported data; --force generates a data set instead)"
        else:
            state = build_data(ctx.config, path, force=force, progress=ctx.progress)
    _say(ctx, f"data: {path} {state} ({time.perf_counter() - start:.1f} s)")
    if preview:
        from taskonomy.scenes.preview import contact_sheet

        _say(ctx, f"data: contact sheet {contact_sheet(path, preview, n_rows=rows)}")
    if export_dir:
        from taskonomy.scenes.taskonomy_format import export_taskonomy

        count = export_taskonomy(path, export_dir, progress=ctx.progress)
        _say(ctx, f"data: exported {count} images to {export_dir}")


_SCHEDULER_HELP = "Run its jobs on an existing dask.distributed cluster (overrides scheduler and transfer.scheduler)."


@cli.command()
@click.option("--force", is_flag=True, help="Retrain every network even if its checkpoint is up to date.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help=_SCHEDULER_HELP)
@click.pass_obj
def train(ctx: Context, force: bool, scheduler: str | None = None) -> None:
    """Stage I: train one network per source task; writes models/ and stage1_quality.csv."""
    from taskonomy.extract.pipeline import train_all

    config = _with_scheduler(ctx.config, scheduler, "train")
    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    rows = train_all(config, run_dir, force=force, progress=ctx.progress)
    _say(ctx, f"{'task':<18} {'test loss':>10} {'baseline':>10} {'ratio':>7} {'win rate':>9}  status")
    for row in rows:
        verdict = "" if row["beats_baseline"] else "  DOES NOT BEAT ITS BASELINE"
        _say(ctx, f"{row['task']:<18} {row['test_loss']:>10.4f} {row['baseline_loss']:>10.4f} "
                  f"{row['ratio']:>7.3f} {row['win_rate']:>9.3f}  {row['status']}{verdict}")
    _say(ctx, f"train: {len(rows)} networks in {run_dir / 'models'} ({time.perf_counter() - start:.1f} s)")


@cli.command()
@click.option("--force", is_flag=True, help="Recompute every source's features even if they are up to date.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help=_SCHEDULER_HELP)
@click.pass_obj
def extract(ctx: Context, force: bool, scheduler: str | None = None) -> None:
    """Run every frozen encoder once over every split into features.zarr."""
    from taskonomy.extract.pipeline import extract_all

    config = _with_scheduler(ctx.config, scheduler, "extract")
    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    outcome = extract_all(config, run_dir, force=force, progress=ctx.progress)
    _report(ctx, "extract", outcome, RunFolder(run_dir).features, start)


@cli.command()
@click.option("--force", is_flag=True, help="Retrain every transfer even if its stamp is unchanged.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Train on an existing dask.distributed cluster (overrides transfer.scheduler).")
@click.pass_obj
def transfer(ctx: Context, force: bool, scheduler: str | None) -> None:
    """Stage II: readouts from cached features to every target -> transfers.zarr (per-image test losses)."""
    from taskonomy.transfer.stage import run_transfer

    config = _with_scheduler(ctx.config, scheduler, "transfer")
    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    outcome = run_transfer(config, run_dir, force=force, progress=ctx.progress)
    if config.transfer.screen:
        _say(ctx, f"transfer: screened by {config.transfer.screen.estimator} in {outcome.screen_seconds:.1f} s, "
                  f"{sum(outcome.screened.values())} transfers screened out (see {RunFolder(run_dir).screen})")
    _report(ctx, "transfer", {t: outcome.describe(t) for t in outcome.trained}, RunFolder(run_dir).transfers, start)


def _with_scheduler(config: Config, scheduler: str | None, stage: str | None = None) -> Config:
    """The config with --scheduler ADDRESS over both `scheduler` and `transfer.scheduler` (the command's own; never
    saved); with `stage`, a scheduler without the distributed package is refused before any work."""
    if scheduler:
        config = config.model_copy(update={"scheduler": scheduler, "transfer": config.transfer.model_copy(
            update={"scheduler": scheduler})})
    if stage:
        from taskonomy.cluster import require_distributed, scheduler_of

        require_distributed(scheduler_of(config, stage))
    return config


@cli.command("add-target")
@click.argument("name")
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=True),
              help="A .npy file or Zarr array: one label per data.zarr image, in image order.")
@click.option("--loss", required=True, help="A registered per-image loss: l1, l2, ce, ce_dense, soft_ce, bce.")
@click.option("--force", is_flag=True, help="Replace a target added earlier under the same name.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Train its readouts on an existing dask.distributed cluster (overrides transfer.scheduler).")
@click.pass_obj
def add_target_command(ctx: Context, name: str, labels_path: str, loss: str, force: bool,
                       scheduler: str | None) -> None:
    """A new target from the cached features: its network, scratch and readouts train; no encoder runs."""
    from taskonomy.transfer.add_target import add_target, read_labels

    labels = read_labels(labels_path)
    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    outcome = add_target(_with_scheduler(ctx.config, scheduler), run_dir, name, loss, labels=labels,
                         origin=labels_path, force=force, progress=ctx.progress)
    _say(ctx, f"add-target: {name} {outcome.describe(name)} ({time.perf_counter() - start:.1f} s)")


def _encoder_entry(encoder: str | None, kind: str | None, file: str | None, **entry) -> str | dict:
    """add-source's encoder: --encoder FILE (a visualpriors checkpoint) or --kind KIND --file FILE [...]."""
    if (encoder is None) == (kind is None):
        raise TaskonomyError("add-source takes either --encoder FILE (visualpriors) or --kind KIND --file FILE")
    if encoder is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in {"file": file, **entry}.items() if v is not None]
        if given:
            raise TaskonomyError(f"add-source --encoder takes no {', '.join(given)}; use --kind KIND --file FILE")
        return encoder
    if file is None:
        raise TaskonomyError(f"add-source --kind {kind} needs --file FILE (a local file; nothing is downloaded)")
    for option in ("mean", "std"):
        if entry[option] is not None:
            try:
                entry[option] = [float(v) for v in entry[option].split(",")]
            except ValueError:
                raise TaskonomyError(f"--{option} {entry[option]}: expected three numbers, e.g. 0.485,0.456,0.406") \
                    from None
    output = entry["output"]
    entry["output"] = int(output) if output is not None and output.lstrip("-").isdigit() else output
    return {"kind": kind, "file": file, **entry}


@cli.command("add-source")
@click.argument("name")
@click.option("--encoder", default=None, type=click.Path(dir_okay=False),
              help="A local visualpriors encoder checkpoint ({task}_encoder-{sha256}.pth), as in "
                   "extract.taskonomy_encoders.")
@click.option("--kind", type=click.Choice(list(ENCODER_KINDS)), default=None,
              help="An encoder of extract.encoders: export (.pt2, first choice), torchscript, visualpriors, "
                   "timm or torchvision (the last two: the .[backbones] extra).")
@click.option("--file", "file", default=None, type=click.Path(dir_okay=False),
              help="With --kind: the local .pt2 program, TorchScript file or weights file.")
@click.option("--sha256", default=None, metavar="PREFIX", help="Hex prefix the file's sha256 must start with.")
@click.option("--input-size", type=int, default=None, help="Square input size [224; visualpriors 256].")
@click.option("--mean", default=None, metavar="R,G,B", help="Mean of [0, 1] inputs [ImageNet's].")
@click.option("--std", default=None, metavar="R,G,B", help="Std of [0, 1] inputs [ImageNet's].")
@click.option("--output", default=None, metavar="N|KEY", help="Index or key of a tuple/dict output to cache.")
@click.option("--model", default=None, help="timm/torchvision: the architecture name, e.g. resnet50.")
@click.option("--layer", default=None, help="timm/torchvision: the named module whose output is cached.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Extract its features and train its readouts on an existing dask.distributed cluster "
                   "(overrides scheduler and transfer.scheduler).")
@click.pass_obj
def add_source_command(ctx: Context, name: str, encoder: str | None, scheduler: str | None, **entry) -> None:
    """A new frozen encoder joins a finished run: only its features are extracted, only its transfers train."""
    from taskonomy.transfer.add_source import add_source

    encoder = _encoder_entry(encoder, **entry)
    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    config, extracted, outcome = add_source(_with_scheduler(ctx.config, scheduler), run_dir, name, encoder,
                                            progress=ctx.progress)
    ctx.config = config.model_copy(update={"transfer": ctx.config.transfer})  # the source joins the run's config
    _report(ctx, "add-source", {s: f"features {state}" for s, state in extracted.items()},
            RunFolder(run_dir).features, start)
    _report(ctx, "add-source", {t: outcome.describe(t) for t in outcome.trained}, RunFolder(run_dir).transfers, start)


@cli.command()
@click.option("--force", is_flag=True, help="Recompute the affinities even if they are up to date.")
@click.pass_obj
def ahp(ctx: Context, force: bool) -> None:
    """Stage III: per-target tournaments over transfers.zarr -> affinity.csv, intervals, heatmap."""
    from taskonomy.ahp.stage import run_ahp

    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    outcome = run_ahp(ctx.config, run_dir, force=force)
    _say(ctx, f"{'target':<18} {'top source':<18} {'affinity':>8} {'on top':>7} {'CR':>7} {'iters':>6}")
    for row in outcome.summary:
        stays = "-" if math.isnan(row.top_source_stability) else f"{row.top_source_stability:.0%}"
        affinity = "-" if math.isnan(row.top_source_affinity) else f"{row.top_source_affinity:.3f}"
        converged = "" if row.converged else "  DID NOT CONVERGE"
        _say(ctx, f"{row.target:<18} {row.top_source or '-':<18} {affinity:>8} {stays:>7} "
                  f"{row.consistency_ratio:>7.3f} {row.iterations:>6}{converged}")
    _say(ctx, f"ahp: {RunFolder(run_dir).affinity} {outcome.state} ({time.perf_counter() - start:.1f} s)")


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _weights(values: tuple[str, ...], option: str) -> dict[str, float] | None:
    """task=w pairs of a repeated option, e.g. --importance normal=2 --importance depth_zbuffer=0.5."""
    weights = {}
    for value in values:
        name, _, weight = value.partition("=")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            raise click.BadParameter(f"expected TASK=NUMBER, got {value!r}", param_hint=option) from None
    return weights or None


def _taxonomy_options(command):
    """Options shared by solve and evaluate; each overrides the config's taxonomy section."""
    for decorator in reversed((
        click.option("--solver", type=click.Choice(["cbc", "highs"]), default=None, help="BIP solver [config]."),
        click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Seconds per solve [config]."),
        click.option("--targets", default=None, help="Comma-separated targets [config: all rows of affinity.csv]."),
        click.option("--sources", default=None,
                     help="Comma-separated tasks that may be supervised [config: all but the controls]."),
        click.option("--importance", multiple=True, metavar="TASK=W", help="Importance of a target (default 1)."),
        click.option("--cost", multiple=True, metavar="TASK=C", help="Label cost of a source (default 1)."),
    )):
        command = decorator(command)
    return command


def _override(ctx: Context, **values) -> Path:
    from taskonomy.taxonomy.stage import with_overrides

    values.update(targets=_names(values.get("targets")), sources=_names(values.get("sources")),
                  importance=_weights(values.get("importance", ()), "--importance"),
                  cost=_weights(values.get("cost", ()), "--cost"))
    ctx.config = with_overrides(ctx.config, **values)
    # stage IV reads a run folder made by the earlier stages: never create one just to report it is empty
    return ctx.prepare_run_dir() if ctx.run_dir.is_dir() else ctx.run_dir


@cli.command()
@click.option("--budget", type=click.FloatRange(min=0), default=None, help="Supervision budget [config: 3].")
@click.option("--max-order", type=click.IntRange(1, 8), default=None, help="Most sources per transfer [config: 3].")
@_taxonomy_options
@click.pass_obj
def solve(ctx: Context, **options) -> None:
    """Stage IV: the BIP over affinity.csv; writes taxonomy.json and taxonomy_graph.png."""
    from taskonomy.taxonomy.stage import run_solve

    run_dir = _override(ctx, **options)
    solution, paths = run_solve(ctx.config, run_dir)
    if solution.status == "feasible":
        click.echo("taskonomy: note: the time limit stopped the solver before it proved this policy optimal",
                   err=True)
    for target, transfer in solution.policy.items():
        _say(ctx, f"solve: {target:<18} <- {transfer.name:<36} affinity {transfer.affinity:.3f}")
    _say(ctx, f"solve: supervise {', '.join(solution.supervised)}; objective {solution.objective:.4f} "
              f"({solution.status}, {solution.seconds:.2f} s) -> {', '.join(str(p) for p in paths)}")


@cli.command()
@click.option("--max-order", type=click.IntRange(1, 8), default=None, help="Sweep max orders 1..K [config: 3].")
@click.option("--quality", "levels", multiple=True, type=click.FloatRange(0, 1),
              help="Average quality levels for the supervision saved [0.1 0.2 0.3 0.4 0.45 0.5].")
@_taxonomy_options
@click.pass_obj
def evaluate(ctx: Context, levels: tuple[float, ...], **options) -> None:
    """Sweep budgets and max orders; gain and quality per target, curves and the supervision saved."""
    from taskonomy.taxonomy.evaluate import QUALITY_LEVELS
    from taskonomy.taxonomy.stage import run_evaluate

    run_dir = _override(ctx, **options)
    _say(ctx, f"evaluate: {'budget':>6} {'order':>5} {'gain':>6} {'quality':>7}  supervised")

    def row(p) -> None:
        names = ", ".join(p.supervised) or p.status
        _say(ctx, f"evaluate: {p.budget:>6g} {p.max_order:>5} {p.mean_gain:>6.3f} {p.mean_quality:>7.3f}  "
                  f"{names if len(names) <= 70 else names[:67] + '...'}")

    points, paths = run_evaluate(ctx.config, run_dir, levels=levels or QUALITY_LEVELS, progress=row)
    _say(ctx, f"evaluate: {len(points)} policies -> {', '.join(str(p) for p in paths)}")


@cli.command(name="all-for-one")
@click.argument("target")
@click.option("--supervised", default=None, help="Comma-separated supervised sources [taxonomy.json's].")
@click.option("--max-order", type=click.IntRange(1, 8), default=None, help="Max orders 1..K [config: 3].")
@click.pass_obj
def all_for_one(ctx: Context, target: str, supervised: str | None, max_order: int | None) -> None:
    """The best transfer into a new target from a set of supervised sources (the paper's Figure 10)."""
    from taskonomy.taxonomy.stage import run_all_for_one

    rows, paths = run_all_for_one(ctx.config, ctx.run_dir, target, _names(supervised), max_order)
    for row in rows:
        _say(ctx, f"all-for-one: order <= {row['max_order']}: {target} <- {row['transfer']} "
                  f"(gain {row['gain']}, quality {row['quality']})")
    _say(ctx, f"all-for-one: -> {', '.join(str(p) for p in paths)}")


@cli.command()
@click.pass_obj
def report(ctx: Context, timings: dict[str, float] | None = None) -> None:
    """The static HTML report <run-dir>/report/index.html: tables and pictures of every stage, opens from disk."""
    from taskonomy.report import build_report

    start = time.perf_counter()
    path = build_report(ctx.run_dir, ctx.config, timings=timings)  # `run` passes this run's stage times
    _say(ctx, f"report: {path} written ({time.perf_counter() - start:.1f} s)")


@cli.command()
@click.option("--images", type=click.Choice(["1k", "16k", "all"]), default="16k", show_default=True,
              help="Which set: transfers trained on 1k or 16k images, or `all`, the release's first set (orders 1-2).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="The folder to write (as the global --run-dir; either place).")
@click.pass_obj
def published(ctx: Context, images: str) -> None:
    """The original release's published affinities and win rates as a run folder: solve, evaluate, report on it."""
    from taskonomy.taxonomy.published import load_published, write_published

    start = time.perf_counter()
    result = load_published(images)  # read and checked before the folder is made
    run_dir = ctx.prepare_run_dir()
    paths = write_published(result, run_dir)
    counts = ", ".join(f"{n} {f['name']}" for n, f in zip((len(result.keys[k]) for k in result.keys),
                                                           result.files.values()))
    _say(ctx, f"published: {images}: imported {counts}; skipped {len(result.skipped)} keys")
    _say(ctx, f"published: -> {', '.join(str(p) for p in paths)} ({time.perf_counter() - start:.1f} s)")


@cli.command(cls=click.Command)
@click.argument("a")
@click.argument("b")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for compare.csv, compare.json, compare.png [A's run folder; the current folder when A is "
                   "published].")
@click.option("--budgets", "max_budget", type=click.IntRange(1, 30), default=5, show_default=True,
              help="Compare the supervised sets at budgets 1..K (max order 1).")
@click.pass_obj
def compare(options: _Options, a: str, b: str, out: str | None, max_budget: int) -> None:
    """How far two runs agree: A and B are run folders or published, published:1k, published:16k, published:all."""
    from taskonomy.lock import acquire, release
    from taskonomy.taxonomy.compare import default_out, open_side, run_compare

    folder = Path(out) if out else default_out(open_side(a))
    locked = (folder / FILES["config"]).is_file()  # writing into a run folder: hold its lock meanwhile
    if locked:
        acquire(folder, "taskonomy compare")
    try:
        result, paths = run_compare(a, b, folder, max_budget)
    finally:
        if locked:
            release(folder)
    echo = click.echo if options.progress else (lambda *_, **__: None)
    echo(f"compare: {'target':<18} {'sources':>7} {'spearman':>8} {'kendall':>7}  top-1 ({result.a} / {result.b})")
    for t in result.targets:
        echo(f"compare: {t.target:<18} {t.sources:>7} {t.spearman:>8.3f} {t.kendall:>7.3f}  "
             f"{t.top1_a} / {t.top1_b}{'' if t.top1_agree else '  differ'}")
    summary = result.summary()
    shown = {k: "-" if summary[k] is None else f"{summary[k]:.3f}" for k in
             ("mean_spearman", "mean_kendall", "top1_agreement", "mean_top3_overlap", "tree_correlation")}
    echo(f"compare: mean over {summary['targets']} targets: Spearman {shown['mean_spearman']}, Kendall "
         f"{shown['mean_kendall']}, top-1 agreement {shown['top1_agreement']}, top-3 overlap "
         f"{shown['mean_top3_overlap']}")
    for row in result.budgets:
        echo(f"compare: budget {row.budget}: {', '.join(row.supervised_a) or '-'} | "
             f"{', '.join(row.supervised_b) or '-'} (Jaccard {row.jaccard:.2f})")
    echo(f"compare: trees' cophenetic correlation {shown['tree_correlation']} -> "
         f"{', '.join(str(p) for p in paths)}")


def _budgets(value: str) -> list[float]:
    try:
        budgets = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected budgets like 3,4,5, got {value!r}", param_hint="--budgets") from None
    if not budgets or any(not math.isfinite(b) or b <= 0 for b in budgets):
        raise click.BadParameter(f"expected positive budgets like 3,4,5, got {value!r}", param_hint="--budgets")
    return budgets


@cli.command()
@click.option("--budgets", default="3,4,5", show_default=True, metavar="B,B,...",
              help="Budgets at which the taxonomy goal solves the BIP (at the run's highest order).")
@click.pass_obj
def science(ctx: Context, budgets: str) -> None:
    """The issue's science goals measured on a finished run: one line per goal, science.csv and science.json.
    Exit 0 whether the goals pass or miss; 2 for a folder that is not a finished run."""
    from taskonomy.taxonomy.science import line, per_target, run_science

    result, paths = run_science(ctx.config, ctx.run_dir, _budgets(budgets))
    echo = click.echo if ctx.progress else (lambda *_, **__: None)
    for goal in result.goals:
        echo(f"science: {line(goal)}")
        if goal.key == "published":
            echo(f"science:   per target: {per_target(goal)}")
    if result.timings:
        echo(f"science: stage timings ({FILES['run_timings']}): " + ", ".join(
            f"{k} {v:.1f} s" for k, v in result.timings.items()) + f"; total {sum(result.timings.values()):.1f} s")
    echo(f"science: {sum(g.passed for g in result.goals)} of {len(result.goals)} goals pass -> "
         f"{', '.join(str(p) for p in paths)}")


@cli.command()
@click.option("--policies", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Random feasible policies per budget and max order.")
@click.option("--budgets", default=None, metavar="B,B,...", help="Budgets to test [1..number of sources].")
@click.option("--max-order", type=click.IntRange(1, 8), default=None, help="Max orders 1..K [config: 3].")
@click.option("--seed", type=int, default=None, help="Seed of the random policies [config: seed].")
@click.pass_obj
def significance(ctx: Context, policies: int, budgets: str | None, max_order: int | None, seed: int | None) -> None:
    """The taxonomy against random feasible policies (the paper's Figure 11): significance.csv and .png."""
    from taskonomy.taxonomy.significance import beats, run_significance

    chosen = _budgets(budgets) if budgets is not None else None
    _say(ctx, f"significance: {'budget':>6} {'order':>5} {'gain':>6} {'random 5-95%':>13} {'beats':>6} "
              f"{'quality':>7} {'random 5-95%':>13} {'beats':>6}")

    def row(s) -> None:
        cells = [f"{s.taxonomy[k]:>{w}.3f} {s.band(m, 0.05):>6.3f}-{s.band(m, 0.95):.3f} {s.beaten(m):>6.1%}"
                 for k, m, w in ((0, "gain", 6), (1, "quality", 7))]
        _say(ctx, f"significance: {s.budget:>6g} {s.max_order:>5} {' '.join(cells)}{'  ' + s.note if s.note else ''}")

    results, paths = run_significance(ctx.config, ctx.run_dir, policies=policies, budgets=chosen,
                                      max_order=max_order, seed=seed, progress=row)
    for order, hits in beats(results).items():
        _say(ctx, f"significance: max order {order}: beats 95% of random policies on gain at budgets "
                  f"{_listed(hits['gain'])}, on quality at {_listed(hits['quality'])}")
    _say(ctx, f"significance: {len(results)} points -> {', '.join(str(p) for p in paths)}")


def _listed(budgets: list[float]) -> str:
    return ", ".join(f"{b:g}" for b in budgets) or "none"


@cli.command()
@click.option("--budget", type=click.FloatRange(min=0), default=None, help="Budget of the others' taxonomy [config].")
@click.option("--max-order", type=click.IntRange(1, 8), default=None, help="Max order [config: 3].")
@click.pass_obj
def novel(ctx: Context, budget: float | None, max_order: int | None) -> None:
    """Each task left out in turn (AHP recomputed without it), reached by all-for-one from the others' taxonomy
    (the paper's Figure 10): novel.csv and novel.png."""
    from taskonomy.taxonomy.novel import POLICIES, mean_scores, run_novel

    def row(r) -> None:
        cells = ", ".join(f"{p} {r.transfers[p] or '-'} {r.scores[p][0]:.3f}/{r.scores[p][1]:.3f}" for p in POLICIES)
        _say(ctx, f"novel: {r.task:<18} (others supervise {', '.join(r.supervised) or r.status}): {cells}")

    results, paths = run_novel(ctx.config, ctx.run_dir, budget=budget, max_order=max_order, progress=row)
    means = mean_scores(results)
    _say(ctx, "novel: mean gain/quality: " + ", ".join(f"{p} {g:.3f}/{q:.3f}" for p, (g, q) in means.items()))
    _say(ctx, f"novel: {len(results)} tasks -> {', '.join(str(p) for p in paths)}")


@cli.command()
@click.option("--resamples", type=click.IntRange(min=1), default=None,
              help="Bootstrap resamples of the test images [config: ahp.resamples].")
@click.option("--budgets", default=None, metavar="B,B,...", help="Budgets to solve [1..5].")
@click.option("--max-order", type=click.IntRange(1, 8), default=None, help="Max order [config: 3].")
@click.option("--readout-seeds", "seeds", default=None, metavar="S,S,...",
              help="Also train stage II again under these readout seeds (transfer.seed; into transfers.seed<S>.zarr) "
                   "and solve the BIP on each one's affinities.")
@click.pass_obj
def stability(ctx: Context, resamples: int | None, budgets: str | None, max_order: int | None,
              seeds: str | None) -> None:
    """The taxonomy solved again on bootstrap resamples of the test images (and on stage II under other readout
    seeds): how often the supervised set and each target's transfer stay the same; stability.csv and
    stability.json."""
    from taskonomy.taxonomy.stability import run_stability

    chosen = _budgets(budgets) if budgets is not None else None
    readout_seeds = _seeds(seeds) if seeds is not None else ()

    def row(s, under_seeds) -> None:
        shaky = sorted(s.same_transfer.items(), key=lambda item: item[1])[:3]
        _say(ctx, f"stability: budget {s.budget:g}: supervise {', '.join(s.supervised) or s.status}; same set in "
                  f"{s.same_set:.1%} of {s.resamples} resamples; same transfer {s.mean_same_transfer:.1%} on average"
                  + (f", least: {', '.join(f'{t} {v:.0%}' for t, v in shaky)}" if shaky else ""))
        if under_seeds is not None:
            _say(ctx, f"stability: budget {s.budget:g} under readout seeds {seeds}: same set in "
                      f"{under_seeds.same_set:.0%}, same transfer {under_seeds.mean_same_transfer:.0%} on average")

    results, paths = run_stability(ctx.config, ctx.run_dir, resamples=resamples, budgets=chosen,
                                   max_order=max_order, readout_seeds=readout_seeds, progress=row,
                                   train_progress=ctx.progress)
    _say(ctx, f"stability: {len(results)} budgets -> {', '.join(str(p) for p in paths)}")


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise TaskonomyError(f"--readout-seeds: expected a comma list of integers >= 0, got {value!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise TaskonomyError(f"--readout-seeds: expected distinct integers >= 0, got {value!r}")
    return seeds


@cli.command()
@click.option("--estimators", default=None, metavar="A,B,...",
              help="Comma list of logme, hscore, rsa, parc, ridge [all].")
@click.option("--budgets", "max_budget", type=click.IntRange(1, 30), default=5, show_default=True,
              help="Compare the BIP's taxonomies on AHP and on each estimator at budgets 1..K (max order 1).")
@click.pass_obj
def estimate(ctx: Context, estimators: str | None, max_budget: int) -> None:
    """Readout-free transferability estimators on the feature cache (transfer split only): estimates/<name>.csv,
    targets x sources, higher = better; where the run has affinity.csv, their agreement with AHP."""
    from taskonomy.transfer.estimate import compute_estimates, parse_estimators, write_estimates

    names = parse_estimators(estimators)  # refused before anything is read or written
    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    estimates = compute_estimates(ctx.config, run_dir, names, say=lambda m: _say(ctx, m))
    timings = estimates.timings()
    outputs = None
    if (run_dir / FILES["affinity"]).is_file():  # measured before anything is written: a bad affinity.csv changes
        from taskonomy.taxonomy.estimate_agreement import prepare_agreement, write_agreement  # nothing

        outputs = prepare_agreement(run_dir, [estimates.table(e) for e in names], timings, max_budget)
    paths = write_estimates(run_dir, estimates) + (write_agreement(run_dir, outputs) if outputs else [])
    for note in estimates.notes:
        click.echo(f"estimate: note: {note}", err=True)
    _say(ctx, f"estimate: read {timings['feature_arrays']} feature arrays x {timings['images']} transfer images in "
              f"{timings['read_seconds']:.2f} s ({timings['features_per_second']:.0f} features/s); " + ", ".join(
                  f"{e} {s:.2f} s" for e, s in timings["estimators"].items()))
    if outputs:
        scale = outputs.doc["readouts_validation_mean_spearman"]
        if scale is not None:
            _say(ctx, f"estimate: for scale, the trained readouts' validation losses vs AHP: mean Spearman {scale:.3f}")
        for e in outputs.results:
            s = e.summary()
            shown = {k: "-" if s[k] is None else f"{s[k]:.3f}" for k in
                     ("mean_spearman", "mean_kendall", "top1_agreement", "published_mean_spearman")}
            _say(ctx, f"estimate: {e.estimator:<7} vs AHP: mean Spearman {shown['mean_spearman']}, Kendall "
                      f"{shown['mean_kendall']}, same top-1 {shown['top1_agreement']}; vs published "
                      f"{shown['published_mean_spearman']}; same supervised set at {s['budgets_same_set']} of "
                      f"{len(e.budgets)} budgets ({s['budgets_same_set_tournament']} on tournament-normalised rows)")
    else:
        _say(ctx, f"estimate: no {FILES['affinity']} in {run_dir}: agreement with AHP not measured")
    _say(ctx, f"estimate: -> {', '.join(str(p) for p in paths)} ({time.perf_counter() - start:.1f} s)")


STAGES = ("data", "train", "extract", "transfer", "ahp", "solve", "evaluate", "report")


@cli.command()
@click.option("--force", is_flag=True, help="Redo every stage.")
@click.option("--redo", multiple=True, type=click.Choice(STAGES),
              help="Redo this stage even if it is up to date (repeatable); later stages follow their hashes.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run train, extract and transfer on an existing dask.distributed cluster (overrides scheduler "
                   "and transfer.scheduler).")
@click.pass_context
def run(click_ctx: click.Context, force: bool, redo: tuple[str, ...], scheduler: str | None) -> None:
    """Every stage in order, each skipped when its outputs are up to date; times go to run_timings.json."""
    import json

    ctx: Context = click_ctx.obj
    _with_scheduler(ctx.config, scheduler, "train")  # a scheduler without its package: refused before any stage
    run_dir = ctx.prepare_run_dir()
    timings, done = {}, []
    for name in STAGES:
        _say(ctx, f"run: {name}")
        start = time.perf_counter()
        forced = {"force": True} if (force or name in redo) and name not in ("solve", "evaluate") else {}
        if name == "report":  # rebuilt every time; it shows the times of this run's stages so far
            forced = {"timings": dict(timings)}
        if scheduler and name in ("train", "extract", "transfer"):
            forced["scheduler"] = scheduler
        click_ctx.invoke(cli.commands[name], **forced)
        timings[name] = round(time.perf_counter() - start, 2)
        done.append(name)
        ctx.save_config(done)  # the keys of the stages done so far; a later stage that fails keeps its old ones
    write_text(run_dir / FILES["run_timings"],
               json.dumps({"seconds": timings, "total": round(sum(timings.values()), 2)}, indent=1))
    _say(ctx, "run: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


@cli.command()
@click.pass_obj
def upgrade(ctx: Context) -> None:
    """Bring a run folder made by an older version to this version's format: verify its stores, record what this
    version needs (chunk inventories), then write run.json."""
    from taskonomy.store import REBUILD, is_complete, refresh_inventory

    run_dir = ctx.prepare_run_dir()
    if format_version(run_dir) == FORMAT_VERSION:
        _say(ctx, f"upgrade: {run_dir} is format {FORMAT_VERSION} already")
        return
    start = time.perf_counter()
    for key in ("data", "features", "transfers"):
        path = run_dir / FILES[key]
        if not path.exists():
            continue
        if not is_complete(path):  # its stage finishes it, and records the inventory when it does
            _say(ctx, f"upgrade: {path} is incomplete: `{REBUILD[path.name]}` finishes it")
            continue
        try:
            refresh_inventory(path)
        except TaskonomyError as err:
            raise TaskonomyError(f"{err} (once the folder is upgraded: remove {path} and run "
                                 f"`taskonomy --run-dir {run_dir} upgrade` again first)") from None
        _say(ctx, f"upgrade: {path} verified")
    write_format(run_dir)
    _say(ctx, f"upgrade: {run_dir} is format {FORMAT_VERSION} ({time.perf_counter() - start:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 with one line on stderr for any input problem."""
    try:
        cli.main(args=argv, prog_name="taskonomy", standalone_mode=False)
    except TaskonomyError as err:
        click.echo(f"taskonomy: error: {err}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("taskonomy: aborted", err=True)
        return 130
    except click.ClickException as err:
        click.echo(f"taskonomy: error: {err.format_message()}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("taskonomy: interrupted; run the same command again to resume", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
