"""The static HTML report of a run folder: one page that opens from disk, its pictures copied beside it.

    taskonomy --config configs/tiny.yaml report          # -> <run>/report/index.html

Reads what the stages wrote and only renders it: affinity.csv (stage III) is required; every other input is
shown when present and is a "not available" line when not. The taxonomies at a few budgets are the ones
`taskonomy evaluate` drew (budget_taxonomies.json lists them); nothing here solves a BIP, so this module imports
no solver. The page is built in a temporary folder and renamed into place, so a killed report leaves the
previous one, never half of a new one; it is rebuilt every time (about a second), so it always shows the run
folder as it is now.
"""

from __future__ import annotations

import csv
import html
import importlib.metadata
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from taskonomy import TaskonomyError
from taskonomy.artifacts import BASELINES, read_published
from taskonomy.config import Config, load_config
from taskonomy.runfolder import FILES, RunFolder, save_figure

__all__ = ["PACKAGES", "REPORT_DIR", "build_report", "top_sources"]

REPORT_DIR = FILES["report"]
PACKAGES = ("taskonomy-engine", "torch", "numpy", "numba", "zarr", "dask", "scipy", "pulp", "highspy", "matplotlib")
_TOP = 3  # sources per target in the table of top sources

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f6f6f3}
main{max-width:1240px;margin:0 auto;padding:16px 28px 48px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:2px solid #1f4e8c;
padding-bottom:3px}h3{font-size:15px;margin:18px 0 6px}
nav{font-size:13px;margin:6px 0 14px}nav a{margin-right:14px;color:#1f4e8c;text-decoration:none}
figure{margin:10px 0 18px}figure img{display:block;max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:12px;color:#555;margin-top:4px}
.scroll{overflow-x:auto;margin:6px 0 14px}
table{border-collapse:collapse;font-size:12.5px}th,td{padding:3px 9px;border-bottom:1px solid #e2e2e2;
text-align:right;white-space:nowrap}th{background:#eef2f8;position:sticky;top:0}td:first-child,
th:first-child{text-align:left}tbody tr:nth-child(even){background:#fafafa}tr.bad td{color:#b00020}
table.top td,td.text{text-align:left}td small{color:#666}
.na{color:#8a6d00;background:#fff8e0;padding:4px 8px;border-left:3px solid #e0b000}
.lede{max-width:900px}.hint{font-size:12px;color:#666}
pre{background:#f4f4f4;padding:10px;font-size:12px;overflow-x:auto;max-height:420px}
th[scope=row]{background:none;text-align:left;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _na(what: str, why: str = "") -> str:
    return f'<p class="na">{_e(what)}: not available{_e(" (" + why + ")") if why else ""}</p>'


def _fmt(cell: str) -> str:
    """A CSV cell for reading: integers as they are, other numbers to 4 significant digits."""
    try:
        value = float(cell)
    except ValueError:
        return cell
    if math.isnan(value) or math.isinf(value) or cell.strip().lstrip("-").isdigit():
        return cell
    return f"{value:.4g}"


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _table(header: list[str], rows: list[list[str]], bad: list[bool] | None = None, raw: bool = False,
           cls: str = "") -> str:
    """An HTML table; cells are escaped unless `raw` (then the caller escaped them)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f"<td>{c if raw else _e(_fmt(c))}</td>" for c in row)
        body.append(f'<tr{" class=bad" if bad and bad[i] else ""}>{cells}</tr>')
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _pairs(rows: list[list[str]]) -> str:
    """A two-column table of names and values, without a header row."""
    body = "".join(f'<tr><th scope="row">{_e(k)}</th><td class="text">{_e(v)}</td></tr>' for k, v in rows)
    return f'<div class="scroll"><table class="pairs"><tbody>{body}</tbody></table></div>'


def _csv_table(path: Path, what: str, how: str) -> str:
    if not path.is_file():
        return _na(what, how)
    header, rows = _read_csv(path)
    bad = [r.get("beats_baseline") == "False" for r in rows]
    return _table(header, [[r.get(h) or "" for h in header] for r in rows], bad)


def _guarded(what: str, section, *args) -> str:
    """A section whose optional input is malformed says so in one line instead of failing the report."""
    try:
        return section(*args)
    except (ValueError, KeyError, TypeError, csv.Error) as err:
        return _na(what, f"cannot read it: {type(err).__name__}: {err}")


def _figure(out: Path, source: Path | None, name: str, caption: str) -> str:
    """Copy `source` into the report as `name` (None: it is there already) and show it."""
    if source is not None:
        shutil.copyfile(source, out / name)
    return (f'<figure><a href="{_e(name)}"><img src="{_e(name)}" alt="{_e(caption)}"></a>'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _run_config(run: RunFolder, fallback: Config | None) -> Config:
    """The run folder's own resolved config (how it was made), else the caller's, else the defaults."""
    try:
        return load_config(run.config)
    except TaskonomyError:
        return fallback if fallback is not None else load_config(None)


def _intro(run: RunFolder, config: Config) -> str:
    doc = read_published(run.path)
    if doc is not None:
        return (f'<p class="lede">The original Taskonomy release\'s published affinities and win rates '
                f"({_e(doc.get('images'))} set, {_e(doc.get('source'))}), imported by `taskonomy published` in "
                f"this engine's task names. No data, networks or losses are in this folder: stage IV solved the "
                f"binary integer program over the published affinities and scored each policy by the published "
                f"win rates (gain against a network trained from pixels, quality against the task-specific "
                f"network).</p>")
    header, rows = _read_csv(run.affinity)
    transfers = [h for h in header[1:] if h not in BASELINES]
    order = max((t.count("+") + 1 for t in transfers), default=0)
    images = ""
    if run.ahp_summary.is_file():
        counts = {r.get("images") for r in _read_csv(run.ahp_summary)[1]}
        images = f" over {', '.join(sorted(c for c in counts if c))} test images"
    d, tx = config.data, config.taxonomy
    return (f'<p class="lede">This run generated {d.n_scenes * d.views_per_scene} images ({d.n_scenes} scenes, '
            f"{d.views_per_scene} views each, {d.image_size} px) with labels for "
            f"{len(d.task_names())} tasks, trained one network per task (stage I) and cached its frozen "
            f"representation, then trained small readouts from those representations, one source or a set of "
            f"up to {order} sources at a time, into each of {len(rows)} targets ({len(transfers)} distinct "
            f"transfers, stage II). Per-image test losses{_e(images)} became pairwise win rates and, by the "
            f"analytic hierarchy process, one affinity per transfer and target (stage III). Stage IV chose which "
            f"tasks to label under a supervision budget (the binary integer program; the run's own choice is for "
            f"budget {tx.budget:g} and max order {tx.max_order}) and scored each policy's gain (win rate against "
            f"training from scratch) and quality (win rate against full supervision).</p>")


def _data_section(run: RunFolder, out: Path) -> str:
    sheet, data = run.contact_sheet, run.data
    if sheet.is_file():
        return _figure(out, sheet, sheet.name, f"Contact sheet: test images as rows, every task's label as columns "
                                               f"({sheet.name} of the run folder).")
    if not data.exists():
        return _na("Contact sheet", f"no {sheet.name} and no {data.name} in the run folder")
    from taskonomy.scenes.preview import contact_sheet

    try:
        contact_sheet(data, out / sheet.name)
    except TaskonomyError as err:
        return _na("Contact sheet", str(err))
    except Exception as err:  # an optional picture of a store that another version wrote must not stop the report
        return _na("Contact sheet", f"cannot render it from {data.name}: {type(err).__name__}: {err}")
    return _figure(out, None, sheet.name, f"Contact sheet rendered from {data.name} for this report: test images "
                                          f"as rows, every task's label as columns.")


def _affinity_section(run: RunFolder, out: Path) -> str:
    main = run.heatmap.name  # first; then any other heatmap a stage or a user left beside it
    maps = sorted(run.path.glob("*heatmap*.png"), key=lambda p: (p.name != main, p.name))
    if not maps:
        return _na("Affinity heatmap", f"`taskonomy ahp` writes {main}")
    return "".join(_figure(out, p, p.name, f"{p.name}: targets as rows, first-order sources as columns, "
                                           f"clustered; grey cells were not tried.") for p in maps) + \
        _guarded("The affinity distance view", _distance_view, run, out)


def _distance_view(run: RunFolder, out: Path) -> str:
    """The paper's Figure 7 view of affinity_first_order.csv, exp(-beta P), drawn into the report."""
    import numpy as np

    from taskonomy.ahp.heatmap import affinity_distance_figure

    if not run.affinity_first_order.is_file():
        return ""
    header, rows = _read_csv(run.affinity_first_order)
    sources = header[1:]
    values = np.array([[float(r[s]) if r[s] else np.nan for s in sources] for r in rows])  # (targets, sources)
    path = save_figure(RunFolder(out).affinity_distance,
                       affinity_distance_figure([r[header[0]] for r in rows], sources, values))
    return _figure(out, None, path.name, "The same affinities P as the paper's Figure 7 shows them: the affinity "
                                         "distance exp(-20 P), lower = better transfer.")


def _own_taxonomy(run: RunFolder) -> tuple[float, int] | None:
    """(budget, max order) of the run's taxonomy.json when it and its graph are there."""
    try:
        doc = json.loads(run.taxonomy.read_text())
        return (float(doc["budget"]), int(doc["max_order"])) if run.taxonomy_graph.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _taxonomy_section(run: RunFolder, out: Path) -> str:
    own = _own_taxonomy(run)
    graph = run.taxonomy_graph
    if own is None:
        parts = [_na(f"The run's taxonomy ({run.taxonomy.name} and {graph.name})", "run `taskonomy solve`")]
    else:
        parts = [_figure(out, graph, graph.name, f"The run's own taxonomy (`taskonomy solve`, {run.taxonomy.name}): "
                                                 f"budget {own[0]:g}, max order {own[1]}.")]
    parts.append(_guarded(f"Taxonomies by budget ({run.budget_taxonomies.name})", _budget_taxonomies, run, out, own))
    return "".join(parts)


def _budget_taxonomies(run: RunFolder, out: Path, own: tuple[float, int] | None) -> str:
    """The taxonomies `taskonomy evaluate` drew at a few budgets, as budget_taxonomies.json lists them, but the
    one the run's own taxonomy already shows."""
    listing = run.budget_taxonomies
    if not listing.is_file():
        return _na(f"Taxonomies by budget ({listing.name})", "run `taskonomy evaluate`")
    doc = json.loads(listing.read_text())
    entries = [e for e in doc["taxonomies"] if (float(e["budget"]), int(e["max_order"])) != own]
    if not entries:
        return ""
    budgets = ", ".join(f"{float(e['budget']):g}" for e in entries)
    parts = [f"<h3>Budgets {_e(budgets)} (max order {_e(doc['max_order'])}), drawn by <code>taskonomy evaluate</code>"
             f"</h3>"]
    for entry in entries:
        budget, picture = float(entry["budget"]), run.budget_taxonomy(float(entry["budget"]))
        if entry["file"] is None:
            parts.append(_na(f"Taxonomy at budget {budget:g}", f"the BIP is {entry['status']} at this budget"))
        elif not picture.is_file():
            parts.append(_na(picture.name, "run `taskonomy evaluate`"))
        else:
            coloured = "; targets coloured by quality" if entry.get("scored") else ""
            parts.append(_figure(out, picture, picture.name, f"Taxonomy at budget {budget:g}, max order "
                                 f"{entry['max_order']}: supervise {', '.join(entry['supervised'])}; objective "
                                 f"{float(entry['objective']):.3f} ({entry['status']}){coloured}."))
    return "".join(parts)


def _evaluation_section(run: RunFolder, out: Path) -> str:
    parts = []
    for source, caption in ((run.evaluation_curves, "Mean gain and quality against the supervision budget per max "
                                                    "order, then per target (`taskonomy evaluate`)."),
                            (run.evaluation_taxonomies, "Taxonomies by budget (columns) and max order (rows).")):
        parts.append(_figure(out, source, source.name, caption) if source.is_file()
                     else _na(source.name, "run `taskonomy evaluate`"))
    parts.append("<h3>Supervision saved</h3>")
    saved = run.supervision_saved_csv
    parts.append(_csv_table(saved, saved.name, "run `taskonomy evaluate`"))
    return "".join(parts)


def top_sources(run_dir: str | Path, k: int = _TOP) -> list[tuple[str, list[dict[str, str]]]]:
    """Per target (file order), its `k` first-order sources of highest affinity, from affinity_ci.csv."""
    by_target: dict[str, list[dict[str, str]]] = {}
    for row in _read_csv(RunFolder(run_dir).affinity_ci)[1]:
        rows = by_target.setdefault(row["target"], [])
        if row.get("order") == "1":
            rows.append(row)
    return [(t, sorted(rows, key=lambda r: -float(r["affinity"] or "nan"))[:k]) for t, rows in by_target.items()]


def _top_section(run: RunFolder) -> str:
    if not run.affinity_ci.is_file():
        return _na("Top sources with intervals", f"`taskonomy ahp` writes {run.affinity_ci.name}")
    stability = {}
    if run.ahp_summary.is_file():
        stability = {r["target"]: r.get("top_source_stability", "") for r in _read_csv(run.ahp_summary)[1]}
    rows = []
    for target, best in top_sources(run.path):
        cells = [_e(target)]
        for r in best + [None] * (_TOP - len(best)):
            interval = f" [{_fmt(r['low'])}, {_fmt(r['high'])}]" if r and r.get("low") else ""
            cells.append(f"{_e(r['transfer'])}<br><small>{_e(_fmt(r['affinity']) + interval)}</small>" if r else "")
        share = stability.get(target, "")
        cells.append(_e(f"{float(share):.0%}") if share else "-")
        rows.append(cells)
    header = ["target", *[f"source {i + 1}: affinity [interval]" for i in range(_TOP)], "1st stays on top"]
    return ("<p>First-order sources ranked by affinity; the interval is the bootstrap percentile interval over "
            "resampled test images, and the last column how often the top source stays on top.</p>"
            + _table(header, rows, raw=True, cls="top"))


def _agreement_section(run: RunFolder) -> str:
    """This run's first-order affinities against the published 16k set (the 1k set for the 16k import itself),
    per target; computed from the shipped pickles (no BIP, a few milliseconds)."""
    from taskonomy.taxonomy.compare import agreement, mean_spearman, open_side

    published = read_published(run.path)
    reference = "published:1k" if published and published["images"] == "16k" else "published:16k"
    rows = agreement(open_side(str(run.path)), open_side(reference))
    if not rows:
        return _na("Agreement with the published results", "no target in common")

    def num(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.3f}"

    mean = mean_spearman(rows)
    top1 = sum(r.top1_agree for r in rows) / len(rows)
    table = [[r.target, str(r.sources), num(r.spearman), num(r.kendall), r.top1_a or "-", r.top1_b or "-",
              "yes" if r.top1_agree else "no"] for r in rows]
    return (f"<p>First-order affinities of this run against the original release's {_e(reference)} set, per "
            f"target over the sources both tried (full left out, random kept): mean Spearman {num(mean)} over "
            f"{len(rows)} targets, same top source for {top1:.0%}. For scale, the release's own 1k and 16k sets "
            f"agree at a mean Spearman of 0.68 over all 22 targets and 0.88 over the 18 single-image targets "
            f"of the default run. `taskonomy compare` adds the supervised sets and the task trees.</p>"
            + _table(["target", "sources", "Spearman", "Kendall", "top-1 (this run)", f"top-1 ({reference})",
                      "same"], table, [not r.top1_agree for r in rows]))


def _science_section(run: RunFolder) -> str:
    """The science goals `taskonomy science` measured (science.json): one row per goal, what misses."""
    doc = json.loads(run.science_json.read_text())

    def num(value: Any) -> str:
        return "-" if value is None else f"{float(value):.4g}"

    rows = [[g["key"], g["title"], num(g["value"]), num(g["threshold"]), "PASS" if g["passed"] else "MISS",
             ", ".join(g["misses"]) or "-"] for g in doc["goals"]]
    return (f"<p>The issue's science goals measured on this run by <code>taskonomy science</code> "
            f"({_e(run.science_json.name)}; every target's value in {_e(run.science_csv.name)}): "
            f"{_e(doc['goals_passed'])} of {len(rows)} pass.</p>"
            + _table(["goal", "what", "value", "threshold", "result", "misses"], rows,
                     [not g["passed"] for g in doc["goals"]]))


def _estimates_section(run: RunFolder, out: Path) -> str:
    """`taskonomy estimate`'s estimators against AHP (estimate_agreement.json): one row per estimator, the figure."""
    doc = json.loads(run.estimate_agreement_json.read_text())

    def num(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{float(value):.{digits}f}"

    rows = [[e["estimator"], num(doc["seconds"].get(e["estimator"]), 2), num(e["mean_spearman"]),
             num(e["mean_kendall"]), num(e["top1_agreement"], 2), num(e["mean_top3_overlap"], 2),
             num(e["published_mean_spearman"]), f"{e['budgets_same_set']} of {len(e['budgets'])} "
             f"({e.get('budgets_same_set_tournament', '-')} tournament)",
             " ".join(num(b["same_transfer"], 2) for b in e["budgets"])] for e in doc["estimators"]]
    return (f"<p>Readout-free transferability estimators on the feature cache's transfer split "
            f"(<code>taskonomy estimate</code>; scores in {_e(run.estimates.name)}/, higher = better), each against "
            f"this run's AHP first-order affinities: mean per-target Spearman and Kendall, how often the top source "
            f"is the same, the mean share of the top three; Spearman against the published set "
            f"({_e(doc['published'])}; AHP itself: {num(doc['ahp_vs_published_mean_spearman'])}); for scale, the "
            f"trained readouts' own validation losses rank the sources at "
            f"{num(doc.get('readouts_validation_mean_spearman'))} against AHP; and the BIP at "
            f"budgets 1..{_e(doc['budgets'])}, max order 1, on the estimator's scores normalised per target against "
            f"the BIP on AHP's: at how many budgets the supervised set is the same (also with rows normalised by AHP "
            f"run on the estimator's ranking, a one-image tournament), and per budget the share of targets given the "
            f"same transfer.</p>"
            + _table(["estimator", "seconds", "Spearman", "Kendall", "same top-1", "top-3 overlap",
                      "Spearman vs published", "same supervised set", "same transfer per budget"], rows)
            + _figure(out, run.estimate_agreement_figure, run.estimate_agreement_figure.name,
                      "Spearman correlation of each estimator with AHP, per target")
            if run.estimate_agreement_figure.is_file() else "")


def _tree_section(run: RunFolder, out: Path) -> str:
    """The paper's Figure 13: this run's task-similarity tree beside the published one (average linkage of the
    first-order affinities, as `taskonomy compare` builds them), drawn into the report; no BIP."""
    from taskonomy.taxonomy.compare import open_side, similarity_trees
    from taskonomy.taxonomy.graph import similarity_trees_figure

    published = read_published(run.path)
    reference = "published:1k" if published and published["images"] == "16k" else "published:16k"
    own, other = open_side(str(run.path)), open_side(reference)
    tasks, trees, correlation = similarity_trees(own, other)
    if len(tasks) < 3:
        return _na("Task-similarity tree", f"fewer than 3 tasks in common with {reference}")
    name = RunFolder(out).task_tree.name
    save_figure(RunFolder(out).task_tree, similarity_trees_figure(trees, tasks, ("this run", reference), correlation))
    shown = "n/a" if math.isnan(correlation) else f"{correlation:.2f}"
    return (f"<p>Tasks clustered by how they transfer out (the paper's Figure 13): average linkage over each "
            f"target's first-order affinities normalised over the {len(tasks)} tasks both sides share, this run on "
            f"the left, the original release's {_e(reference)} set on the right. The correlation of the two trees' "
            f"cophenetic distances is {_e(shown)} (1: the same tree).</p>"
            + _figure(out, None, name, f"Task-similarity trees: this run (left) and {reference} (right)."))


def _significance_section(run: RunFolder, out: Path) -> str:
    """`taskonomy significance`: the figure and, per max order, the budgets at which the taxonomy beats 95% of the
    random policies; the table of the highest max order."""
    header, rows = _read_csv(run.significance_csv)
    orders = sorted({int(r["max_order"]) for r in rows})
    lines = []
    for order in orders:
        mine = [r for r in rows if int(r["max_order"]) == order]
        hits = {m: [r["budget"] for r in mine if r[f"beats_{m}"] and float(r[f"beats_{m}"]) >= 0.95]
                for m in ("gain", "quality")}
        lines.append(f"max order {order} ({len(mine)} budgets): on gain at budgets {', '.join(hits['gain']) or 'none'}"
                     f"; on quality at budgets {', '.join(hits['quality']) or 'none'}")
    policies = max((int(r["policies"]) for r in rows), default=0)
    top = [r for r in rows if int(r["max_order"]) == orders[-1]] if orders else []

    def band(r: dict[str, str], m: str) -> str:
        return f"{_fmt(r[f'random_{m}_p5'])}-{_fmt(r[f'random_{m}_p95'])}" if r[f"random_{m}_p5"] else "-"

    def share(value: str) -> str:
        return f"{float(value):.1%}" if value else "-"

    table = [[r["budget"], r["supervised"] or r["status"], _fmt(r["gain"]), band(r, "gain"), share(r["beats_gain"]),
              _fmt(r["quality"]), band(r, "quality"), share(r["beats_quality"])] for r in top]
    figure = run.significance_figure
    return (f"<p>The taxonomy at each budget and max order against {policies} random feasible policies (a random "
            f"supervised set of as many tasks within the budget, then for each target a random transfer from it of "
            f"order up to the max order), all scored on the same per-image test losses "
            f"(<code>taskonomy significance</code>, {_e(run.significance_csv.name)}). It beats at least 95% of "
            f"them (ties count half):</p><ul>{''.join(f'<li>{_e(line)}</li>' for line in lines)}</ul>"
            + (_figure(out, figure, figure.name, "Mean gain and quality of the taxonomy against the random policies' "
                                                 "5-95% band, and the share it beats.") if figure.is_file() else "")
            + f"<h3>Max order {orders[-1] if orders else '-'}</h3>"
            + _table(["budget", "supervised", "gain", "random 5-95%", "beats", "quality", "random 5-95%", "beats"],
                     table, [bool(r["beats_quality"]) and float(r["beats_quality"]) < 0.95 for r in top]))


def _stability_section(run: RunFolder) -> str:
    """`taskonomy stability`: per budget how often the supervised set and the transfers recur over bootstrap
    resamples of the test images; per target at the run's own budget (taxonomy.json) or the first one."""
    doc = json.loads(run.stability_json.read_text())

    def pct(value: Any) -> str:
        return "-" if value is None else f"{float(value):.0%}"

    seeds = doc.get("readout_seeds") or []
    named = ", ".join(str(s) for s in seeds)

    def under_seeds(b: dict[str, Any]) -> list[str]:
        part = b.get("seeds") or {}
        return [pct(part.get("same_set")), pct(part.get("mean_same_transfer")),
                "; ".join(f"{', '.join(s['supervised'])}" for s in part.get("sets", [])
                          if s["supervised"] != b["supervised"]) or "-"] if seeds else []

    budgets = [[f"{float(b['budget']):g}", ", ".join(b["supervised"]) or b["status"], pct(b["same_set"]),
                pct(b["mean_same_transfer"]),
                "; ".join(f"{', '.join(s['supervised'])} {pct(s['share'])}" for s in b["sets"]
                          if s["supervised"] != b["supervised"]) or "-", *under_seeds(b)] for b in doc["budgets"]]
    own = _own_taxonomy(run)
    listed = [float(b["budget"]) for b in doc["budgets"]]
    chosen = own[0] if own and own[0] in listed else (listed[0] if listed else None)
    _, rows = _read_csv(run.stability_csv)
    per_target = [[r["target"], r["transfer"], pct(r["same_transfer"]),
                   f"{r['runner_up']} {pct(r['runner_up_share'])}" if r["runner_up"] else "-",
                   *([pct(r.get("same_transfer_seeds") or None), r.get("seeds_runner_up") or "-"] if seeds else [])]
                  for r in rows if chosen is not None and float(r["budget"]) == chosen]
    seed_columns = [f"same set, readout seeds {named}", f"same transfer, readout seeds {named}",
                    "sets under those seeds"] if seeds else []
    return (f"<p>The BIP solved again on each of {_e(doc['resamples'])} bootstrap resamples of the test images "
            f"(the resamples of the affinity intervals above; <code>taskonomy stability</code>, "
            f"{_e(run.stability_json.name)}): how often the supervised set and each target's transfer come out as "
            f"in the taxonomy. A resample on which the BIP finds no policy counts as a change."
            + (f" Also on stage II trained again under readout seed{'s' if len(seeds) > 1 else ''} {_e(named)} "
               f"(<code>--readout-seeds</code>: the readouts' and scratch networks' initialisation and batch order; "
               f"the same images and stage I networks): the share of those seeds that keep the set and the "
               f"transfers." if seeds else "") + "</p>"
            + _table(["budget", "supervised", "same set", "same transfer (mean over targets)", "other sets",
                      *seed_columns], budgets,
                     [b["same_set"] is not None and float(b["same_set"]) < 0.5 for b in doc["budgets"]])
            + (f"<h3>Per target at budget {chosen:g}</h3>" + _table(
                ["target", "transfer", "same transfer", "most frequent other",
                 *([f"same transfer, readout seeds {named}", "other under those seeds"] if seeds else [])],
                per_target, [float(r["same_transfer"]) < 0.5 for r in rows if float(r["budget"]) == chosen])
               if per_target else ""))


def _novel_section(run: RunFolder, out: Path) -> str:
    """`taskonomy novel`: per left-out task the others' supervised set, its all-for-one transfer and the scores
    of the four policies; the mean of each; the figure."""
    _, rows = _read_csv(run.novel_csv)
    policies = ("all_for_one", "best_source", "random", "pixels")

    def cell(r: dict[str, str], p: str) -> str:
        if not r[f"{p}_transfer"]:
            return "-"
        name = f"{r[f'{p}_transfer']}: " if p == "best_source" else ""
        return f"{name}{_fmt(r[f'{p}_gain'] or 'nan')} / {_fmt(r[f'{p}_quality'] or 'nan')}"

    def mean(p: str, c: str) -> str:
        values = [float(r[f"{p}_{c}"]) for r in rows if r[f"{p}_{c}"]]
        return f"{sum(values) / len(values):.3f}" if values else "-"

    table = [[r["task"], r["supervised"] or r["status"], r["all_for_one_transfer"] or "-",
              *[cell(r, p) for p in policies]] for r in rows]
    table.append(["mean", "", "", *[f"{mean(p, 'gain')} / {mean(p, 'quality')}" for p in policies]])
    figure = run.novel_figure
    return ("<p>Each task left out of the dictionary in turn (<code>taskonomy novel</code>, "
            f"{_e(run.novel_csv.name)}): every other target's AHP played again without it, the taxonomy solved for "
            "the others, and the task reached by all-for-one, the best transfer into it from their supervised "
            "set; gain / quality on the test images beside its best single source (chosen on validation), random "
            "and pixels.</p>"
            + _table(["left out", "others supervise", "all-for-one", "all-for-one gain / quality",
                      "best source", "random", "pixels"], table)
            + (_figure(out, figure, figure.name, "Gain and quality of all-for-one per left-out task beside its best "
                                                 "single source, random and pixels.") if figure.is_file() else ""))


def _versions() -> list[list[str]]:
    rows = [["python", sys.version.split()[0]]]
    for name in PACKAGES:
        try:
            rows.append([name, importlib.metadata.version(name)])
        except importlib.metadata.PackageNotFoundError:
            rows.append([name, "not installed"])
    return rows


def _device(config: Config) -> str:
    from taskonomy.torchutil import resolve_device
    from taskonomy.runtime import describe_device

    device = config.train.device
    try:
        device = resolve_device(device).type
        return describe_device(device, config.threads)
    except Exception as err:  # a CUDA driver that fails to answer must not stop the report
        return f"{device} ({type(err).__name__})"


def _timings(run: RunFolder, timings: dict[str, float] | None) -> str:
    if timings is None:
        try:
            timings = json.loads(run.run_timings.read_text())["seconds"]
        except (OSError, ValueError, KeyError, TypeError):
            return _na("Time per stage", f"{run.run_timings.name} is written by `taskonomy run`; the stages were "
                                         f"run one by one")
    rows = [[stage, f"{float(s):.1f}"] for stage, s in timings.items()]
    return _table(["stage", "seconds"], rows + [["total", f"{sum(float(s) for s in timings.values()):.1f}"]])


def _metadata_section(run: RunFolder, config: Config, timings: dict[str, float] | None) -> str:
    path = run.config
    resolved = f"<pre>{_e(path.read_text())}</pre>" if path.is_file() else _na(path.name, "not in the run folder")
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    machine = [["device (this machine)", _device(config)], ["platform", platform.platform()],
               ["report written", when]]
    return (f"<h3>Machine</h3>{_pairs(machine)}<h3>Package versions</h3>"
            f"{_pairs(_versions())}<h3>Time per stage</h3>{_timings(run, timings)}"
            f"<h3>Resolved config ({_e(path.name)})</h3>{resolved}")


def _page(run: RunFolder, config: Config, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{_e(title)}</h2>{content}</section>' for key, title, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Taskonomy report: {_e(config.name)}</title><style>{_CSS}</style></head>\n<body><main>"
            f"<h1>Taskonomy report: {_e(config.name)}</h1><p>Run folder <code>{_e(run.path.resolve())}</code></p>"
            f"<nav>{nav}</nav>{_intro(run, config)}<p class=\"hint\">Pictures are scaled to the page; click one "
            f"to open it at full size.</p>{body}</main></body></html>\n")


def _sections(run: RunFolder, config: Config, out: Path, timings: dict[str, float] | None) -> list[tuple[str, ...]]:
    """(anchor, title, HTML) of every section, in reading order; pictures land in `out`."""
    quality = partial(_csv_table, run.stage1_quality, run.stage1_quality.name, "run `taskonomy train`")
    # a folder of the published results has no data, networks or AHP outputs: those sections are left out
    published = run.published.is_file()
    sections = [
        ("data", "Data", None if published else _data_section(run, out)),
        ("stage1", "Stage I: network quality", None if published else _guarded(run.stage1_quality.name, quality)),
        ("affinity", "Stage III: affinities", None if published and not run.heatmap.is_file()
         else _affinity_section(run, out)),
        ("top", f"Top {_TOP} sources per target", None if published else
         _guarded(run.affinity_ci.name, _top_section, run)),
        ("published", "Agreement with the published Taskonomy results",
         _guarded("the published results", _agreement_section, run)),
        ("tree", "Task-similarity tree", _guarded("the task-similarity tree", _tree_section, run, out)),
        ("estimates", "Transferability estimators", _guarded(run.estimate_agreement_json.name, _estimates_section,
                                                              run, out)
         if run.estimate_agreement_json.is_file() else None),  # only where `taskonomy estimate` measured them
        ("taxonomy", "Stage IV: taxonomies", _taxonomy_section(run, out)),
        ("stability", "Stability of the taxonomy: resampled test images and readout seeds",
         _guarded(run.stability_json.name, _stability_section, run)
         if run.stability_json.is_file() else None),  # only where `taskonomy stability` measured it
        ("significance", "Is the taxonomy better than chance?",
         _guarded(run.significance_csv.name, _significance_section, run, out)
         if run.significance_csv.is_file() else None),  # only where `taskonomy significance` measured it
        ("novel", "Novel tasks: each task left out in turn",
         _guarded(run.novel_csv.name, _novel_section, run, out)
         if run.novel_csv.is_file() else None),  # only where `taskonomy novel` measured it
        ("science", "Science checks", _guarded(run.science_json.name, _science_section, run)
         if run.science_json.is_file() else None),  # only where `taskonomy science` measured the run
        ("evaluation", "Gain and quality", _guarded(run.supervision_saved_csv.name, _evaluation_section, run, out)),
        ("metadata", "Run metadata", _metadata_section(run, config, timings)),
    ]
    return [s for s in sections if s[2] is not None]


def build_report(run_dir: str | Path, config: Config | None = None,
                 timings: dict[str, float] | None = None) -> Path:
    """Write <run_dir>/report/index.html and its pictures; `timings` (stage -> seconds) beat run_timings.json."""
    run = RunFolder(run_dir)
    if not run.affinity.is_file():
        raise TaskonomyError(f"run folder {run.path} has no {run.affinity.name}: run `taskonomy ahp` first")
    config = _run_config(run, config)
    final = run.report
    try:
        for stale in run.path.glob(f".{final.name}.*"):  # left by a killed report
            shutil.rmtree(stale, ignore_errors=True)
        out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=run.path))
    except OSError as err:
        raise TaskonomyError(f"cannot write {final}: {err.strerror or err}") from None
    try:
        sections = _sections(run, config, out, timings)
        (out / "index.html").write_text(_page(run, config, sections), encoding="utf-8")
        out.chmod(0o755)  # mkdtemp makes it private; a report is for sharing
        _swap(out, final)
    except OSError as err:
        shutil.rmtree(out, ignore_errors=True)
        raise TaskonomyError(f"cannot write {final}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return final / "index.html"


def _swap(new: Path, final: Path) -> None:
    """Put the finished folder `new` at `final`: a directory cannot be renamed over a non-empty one, so the old
    report steps aside first (there is a moment with no report, never one with half a report)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
