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
        """Create the run folder, prove it is writable, and save the resolved config in it."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / ".config.yaml.tmp"
            tmp.write_text(yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False))
            os.replace(tmp, self.run_dir / "config.yaml")
        except OSError as err:
            raise TaskonomyError(f"cannot write run folder {self.run_dir}: {err.strerror or err}") from None
        return self.run_dir


def _say(ctx: Context, message: str) -> None:
    if ctx.progress:
        click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    for name, state in outcome.items():
        _say(ctx, f"extract: {name:<18} {state}")
    _say(ctx, f"extract: {run_dir / 'features.zarr'} ({time.perf_counter() - start:.1f} s)")


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
