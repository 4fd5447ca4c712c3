"""The `taskonomy` command: one subcommand per stage, all sharing --config and --run-dir.

    taskonomy --config configs/tiny.yaml data --preview contact.png

Every problem with the user's input ends in one line on stderr and exit status 2; the resolved config
is saved as <run-dir>/config.yaml so a run folder says how it was made.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from taskonomy import TaskonomyError
from taskonomy.config import Config, load_config

__all__ = ["main"]


@dataclass
class Context:
    config: Config
    run_dir: Path
    progress: bool

    def prepare_run_dir(self) -> Path:
        """Create the run folder, lock it, prove it is writable, and save the resolved config in it."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.hold()
            tmp = self.run_dir / ".config.yaml.tmp"
            tmp.write_text(yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False))
            os.replace(tmp, self.run_dir / "config.yaml")
        except OSError as err:
            raise TaskonomyError(f"cannot write run folder {self.run_dir}: {err.strerror or err}") from None
        return self.run_dir

    def hold(self) -> None:
        """Hold <run-dir>/.lock until the current command ends: a second writer on this folder is refused."""
        click_ctx = click.get_current_context(silent=True)
        if click_ctx is None or not self.run_dir.is_dir():  # not the CLI, or nothing there yet to protect
            return
        from taskonomy.lock import acquire, release

        acquire(self.run_dir, f"taskonomy {click_ctx.info_name}")
        click_ctx.call_on_close(lambda: release(self.run_dir))


class _RunCommand(click.Command):
    """A subcommand: it writes into the run folder, so it holds the folder's lock while it runs; and when a
    read fails, a damaged store of the run is reported by name instead of a traceback."""

    def invoke(self, ctx: click.Context):
        ctx.obj.hold()
        try:
            return super().invoke(ctx)
        except (TaskonomyError, click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception:  # e.g. Zarr's crc32c codec: "Stored and computed checksum do not match"
            from taskonomy.store import damage_error

            error = damage_error(ctx.obj.run_dir)
            if error is None:
                raise
            raise error from None


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
              help="Run folder [default: runs/<config name>].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Override the config's thread cap.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status lines.")
@click.version_option(package_name="taskonomy-engine")
@click.pass_context
def cli(click_ctx: click.Context, config_path: str | None, run_dir: str | None, threads: int | None,
        quiet: bool) -> None:
    """A Taskonomy engine: task transfer affinities and the supervision taxonomy, over cached features."""
    overrides = {"threads": threads} if threads else None
    config = load_config(config_path, overrides)
    click_ctx.obj = Context(config, Path(run_dir) if run_dir else Path("runs") / config.name, not quiet)
    from taskonomy.runtime import cap_threads

    cap_threads(config.threads)
    if (click_ctx.obj.run_dir / "added_targets.json").is_file():  # targets added from the cache earlier
        from taskonomy.transfer.add_target import load_added_targets

        load_added_targets(click_ctx.obj.run_dir)


@cli.command()
@click.option("--force", is_flag=True, help="Rebuild data.zarr even if it exists or was made from another config.")
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Also write a contact sheet PNG: scenes as rows, every task's label as columns.")
@click.option("--rows", type=click.IntRange(1, 32), default=4, show_default=True, help="Scenes in the preview.")
@click.option("--export-taskonomy", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the data set in Taskonomy's folder layout and PNG encodings.")
@click.option("--from-taskonomy", "import_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Build data.zarr by reading a Taskonomy-layout folder instead of generating scenes.")
@click.pass_obj
def data(ctx: Context, force: bool, preview: str | None, rows: int, export_dir: str | None,
         import_dir: str | None) -> None:
    """Generate the scenes and every task's labels into <run-dir>/data.zarr."""
    run_dir = ctx.prepare_run_dir()
    path = run_dir / "data.zarr"
    start = time.perf_counter()
    if import_dir:
        from taskonomy.scenes.taskonomy_format import read_taskonomy

        if path.exists() and not force:
            raise TaskonomyError(f"{path} exists; pass --force to replace it with {import_dir}")
        read_taskonomy(import_dir, path, size=ctx.config.data.image_size, progress=ctx.progress)
        state = f"read from {import_dir}"
    else:
        from taskonomy.scenes.dataset import build_data

        state = build_data(ctx.config, path, force=force, progress=ctx.progress)
    _say(ctx, f"data: {path} {state} ({time.perf_counter() - start:.1f} s)")
    if preview:
        from taskonomy.scenes.preview import contact_sheet

        _say(ctx, f"data: contact sheet {contact_sheet(path, preview, n_rows=rows)}")
    if export_dir:
        from taskonomy.scenes.taskonomy_format import export_taskonomy

        count = export_taskonomy(path, export_dir, progress=ctx.progress)
        _say(ctx, f"data: exported {count} images to {export_dir}")


@cli.command()
@click.option("--force", is_flag=True, help="Retrain every network even if its checkpoint is up to date.")
@click.pass_obj
def train(ctx: Context, force: bool) -> None:
    """Stage I: train one network per source task; writes models/ and stage1_quality.csv."""
    from taskonomy.extract.pipeline import train_all

    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    rows = train_all(ctx.config, run_dir, force=force, progress=ctx.progress)
    _say(ctx, f"{'task':<18} {'test loss':>10} {'baseline':>10} {'ratio':>7} {'win rate':>9}  status")
    for row in rows:
        verdict = "" if row["beats_baseline"] else "  DOES NOT BEAT ITS BASELINE"
        _say(ctx, f"{row['task']:<18} {row['test_loss']:>10.4f} {row['baseline_loss']:>10.4f} "
                  f"{row['ratio']:>7.3f} {row['win_rate']:>9.3f}  {row['status']}{verdict}")
    _say(ctx, f"train: {len(rows)} networks in {run_dir / 'models'} ({time.perf_counter() - start:.1f} s)")


@cli.command()
@click.option("--force", is_flag=True, help="Recompute every source's features even if they are up to date.")
@click.pass_obj
def extract(ctx: Context, force: bool) -> None:
    """Run every frozen encoder once over every split into features.zarr."""
    from taskonomy.extract.pipeline import extract_all

    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    outcome = extract_all(ctx.config, run_dir, force=force, progress=ctx.progress)
    _report(ctx, "extract", outcome, run_dir / "features.zarr", start)


@cli.command()
@click.option("--force", is_flag=True, help="Retrain every transfer even if its stamp is unchanged.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Train on an existing dask.distributed cluster (overrides transfer.scheduler).")
@click.pass_obj
def transfer(ctx: Context, force: bool, scheduler: str | None) -> None:
    """Stage II: readouts from cached features to every target -> transfers.zarr (per-image test losses)."""
    from taskonomy.transfer.stage import run_transfer

    config = ctx.config
    if scheduler:
        config = config.model_copy(update={"transfer": config.transfer.model_copy(update={"scheduler": scheduler})})
    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    outcome = run_transfer(config, run_dir, force=force, progress=ctx.progress)
    _report(ctx, "transfer", outcome, run_dir / "transfers.zarr", start)


@cli.command("add-target")
@click.argument("name")
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=True),
              help="A .npy file or Zarr array: one label per data.zarr image, in image order.")
@click.option("--loss", required=True, help="A registered per-image loss: l1, l2, ce, ce_dense, soft_ce, bce.")
@click.option("--force", is_flag=True, help="Replace a target added earlier under the same name.")
@click.pass_obj
def add_target_command(ctx: Context, name: str, labels_path: str, loss: str, force: bool) -> None:
    """A new target from the feature cache alone: its readouts train, no encoder runs."""
    from taskonomy.transfer.add_target import add_target, read_labels

    run_dir = ctx.prepare_run_dir()
    start = time.perf_counter()
    state = add_target(ctx.config, run_dir, name, loss, labels=read_labels(labels_path), origin=labels_path,
                       force=force, progress=ctx.progress)
    _say(ctx, f"add-target: {name} {state} ({time.perf_counter() - start:.1f} s)")


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
    for row in outcome["summary"]:
        stays = f"{float(row['top_source_stability']):.0%}" if row["top_source_stability"] else "-"
        converged = "" if row["converged"] == "True" else "  DID NOT CONVERGE"
        affinity = f"{float(row['top_source_affinity']):.3f}" if row["top_source_affinity"] else "-"
        _say(ctx, f"{row['target']:<18} {row['top_source'] or '-':<18} {affinity:>8} {stays:>7} "
                  f"{float(row['consistency_ratio']):>7.3f} {row['iterations']:>6}{converged}")
    _say(ctx, f"ahp: {run_dir / 'affinity.csv'} {outcome['state']} ({time.perf_counter() - start:.1f} s)")


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


STAGES = ("data", "train", "extract", "transfer", "ahp", "solve", "evaluate", "report")


@cli.command()
@click.option("--force", is_flag=True, help="Redo every stage.")
@click.option("--redo", multiple=True, type=click.Choice(STAGES),
              help="Redo this stage even if it is up to date (repeatable); later stages follow their hashes.")
@click.pass_context
def run(click_ctx: click.Context, force: bool, redo: tuple[str, ...]) -> None:
    """Every stage in order, each skipped when its outputs are up to date; times go to run_timings.json."""
    import json

    ctx: Context = click_ctx.obj
    run_dir = ctx.prepare_run_dir()
    timings = {}
    for name in STAGES:
        _say(ctx, f"run: {name}")
        start = time.perf_counter()
        forced = {"force": True} if (force or name in redo) and name not in ("solve", "evaluate") else {}
        if name == "report":  # rebuilt every time; it shows the times of this run's stages so far
            forced = {"timings": dict(timings)}
        click_ctx.invoke(cli.commands[name], **forced)
        timings[name] = round(time.perf_counter() - start, 2)
    tmp = run_dir / ".run_timings.json.tmp"
    tmp.write_text(json.dumps({"seconds": timings, "total": round(sum(timings.values()), 2)}, indent=1))
    os.replace(tmp, run_dir / "run_timings.json")
    _say(ctx, "run: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


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
