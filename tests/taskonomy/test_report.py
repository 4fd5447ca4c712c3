"""`taskonomy report`: the static HTML page of a run folder, on real stage output, and opened in headless Chromium."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from PIL import Image

from _taxonomy_run import write_run
from conftest import ROOT
from taskonomy.cli import main
from taskonomy.report import REPORT_DIR
from taskonomy.runfolder import RunFolder

TARGETS = ["normal", "class_scene", "egomotion"]
REAL_IMAGES = {"contact_sheet.png", "affinity_heatmap.png", "taxonomy_graph.png", "taxonomy_budget_1.png",
               "taxonomy_budget_5.png", "evaluation_curves.png", "evaluation_taxonomies.png", "task_tree.png",
               "affinity_distance.png"}


class Page(HTMLParser):
    """What a reader sees of index.html: its sections, each table's body rows and text, and every <img>."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.section: str | None = None
        self.sections: list[str] = []
        self.tables: list[dict] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._body = 0
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs["id"]
            self.sections.append(self.section)
        elif tag == "table":
            self.tables.append({"section": self.section, "rows": 0, "text": []})
        elif tag == "tbody":
            self._body += 1
        elif tag == "tr" and self._body:
            self.tables[-1]["rows"] += 1
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag in ("a", "link", "script"):
            self.links.append(attrs.get("href") or attrs.get("src") or "")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._body -= 1

    def handle_data(self, data):
        self.text.append(data)
        if self.tables and self._body:
            self.tables[-1]["text"].append(data)

    def tables_in(self, section: str) -> list[dict]:
        return [t for t in self.tables if t["section"] == section]

    def section_text(self) -> str:
        return " ".join(self.text)


def _config(tmp_path: Path) -> str:
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["transfer"] = {"epochs": 2, "targets": TARGETS, "max_order": 2}
    config["taxonomy"] = {"max_order": 2}
    config["ahp"] = {"resamples": 100}
    path = tmp_path / "report.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def reported(tiny_run, tmp_path_factory) -> tuple[list[str], Path]:
    """The trained tiny run after transfer (3 targets), ahp, solve (budget 3), evaluate and report (read-only)."""
    tmp = tmp_path_factory.mktemp("report")
    run_dir = tmp / "run"
    shutil.copytree(tiny_run, run_dir)
    args = ["-q", "--config", _config(tmp), "--run-dir", str(run_dir)]
    for stage in ("transfer", "ahp", "solve", "evaluate", "report"):
        assert main([*args, stage]) == 0, stage
    return args, run_dir


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def test_report_of_a_real_run_holds_every_table_and_picture(reported):
    _, run_dir = reported
    index = run_dir / REPORT_DIR / "index.html"
    page = Page(index)
    assert page.sections == ["data", "stage1", "affinity", "top", "published", "tree", "taxonomy", "evaluation",
                             "metadata"]
    # pictures: copied or rendered into report/, referenced by bare file names, so the folder moves as a unit
    assert set(page.images) == REAL_IMAGES and len(page.images) == len(REAL_IMAGES)
    for src in page.images:
        assert "/" not in src and _is_png(run_dir / REPORT_DIR / src), src
    # the taxonomies at budgets 1 and 5 are the ones `evaluate` drew; budget 3 at max order 2 is the run's own
    run = RunFolder(run_dir)
    assert [e["budget"] for e in json.loads(run.budget_taxonomies.read_text())["taxonomies"]] == [1, 3, 5]
    for budget in (1, 5):
        assert (run_dir / REPORT_DIR / f"taxonomy_budget_{budget}.png").read_bytes() == \
            run.budget_taxonomy(budget).read_bytes()
    assert not any(re.match(r"(https?:)?//", link) for link in page.links)  # nothing from the network
    # stage I: one row per trained network, as in stage1_quality.csv
    with (run_dir / "stage1_quality.csv").open() as handle:
        quality = list(csv.DictReader(handle))
    [stage1] = page.tables_in("stage1")
    assert stage1["rows"] == len(quality) and quality[0]["task"] in stage1["text"]
    # top sources: one row per target, each naming three first-order sources with their intervals
    [top] = page.tables_in("top")
    assert top["rows"] == len(TARGETS)
    assert all(t in top["text"] for t in TARGETS) and sum("[" in s for s in top["text"]) == 3 * len(TARGETS)
    [saved] = page.tables_in("evaluation")
    assert saved["rows"] == sum(1 for _ in (run_dir / "supervision_saved.csv").open()) - 1
    machine, versions = page.tables_in("metadata")[:2]
    assert importlib.metadata.version("torch") in versions["text"] and "CPU" in " ".join(machine["text"])
    text = page.section_text()
    assert "name: tiny" in text  # the resolved config
    assert "Time per stage: not available" in text  # stages were run one by one: no run_timings.json
    assert "not available" not in text.replace("Time per stage: not available", "")
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(f".{REPORT_DIR}")) == []


def test_run_redoes_the_report_with_this_runs_stage_times(reported, tmp_path, capsys):
    args, run_dir = reported
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    args = [a if a != str(run_dir) else str(copy) for a in args if a != "-q"]
    before = (copy / REPORT_DIR / "index.html").stat().st_mtime_ns
    assert main([*args, "run"]) == 0
    assert "report: " in capsys.readouterr().err
    assert (copy / REPORT_DIR / "index.html").stat().st_mtime_ns > before
    [timings] = Page(copy / REPORT_DIR / "index.html").tables_in("metadata")[2:3]
    assert [s for s in timings["text"] if s.isalpha()] == ["data", "train", "extract", "transfer", "ahp", "solve",
                                                           "evaluate", "total"]


def test_a_failed_report_leaves_the_previous_one_and_no_temporary_folder(reported, tmp_path, monkeypatch):
    _, run_dir = reported
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("data.zarr", "features.zarr", "models"))
    before = (copy / REPORT_DIR / "index.html").read_text()
    import taskonomy.report

    def broken(*_args):
        raise RuntimeError("killed midway")

    monkeypatch.setattr(taskonomy.report, "_evaluation_section", broken)
    with pytest.raises(RuntimeError, match="killed midway"):
        main(["-q", "--run-dir", str(copy), "report"])
    assert (copy / REPORT_DIR / "index.html").read_text() == before
    assert not [p for p in copy.iterdir() if p.name.startswith(f".{REPORT_DIR}")]
    monkeypatch.undo()
    assert main(["-q", "--run-dir", str(copy), "report"]) == 0  # no config: the run's config.yaml is used
    page = Page(copy / REPORT_DIR / "index.html")
    assert "contact_sheet.png" not in page.images and "Contact sheet: not available" in page.section_text()
    assert "name: tiny" in page.section_text()


def test_a_contact_sheet_that_cannot_be_rendered_is_a_not_available_line(reported, tmp_path, monkeypatch):
    _, run_dir = reported
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("features.zarr", "models", REPORT_DIR))
    import taskonomy.scenes.preview

    def old_store(*_args, **_kwargs):
        raise IndexError("arrays used as indices must be of integer type")  # a store from an older generator

    monkeypatch.setattr(taskonomy.scenes.preview, "contact_sheet", old_store)
    assert main(["-q", "--run-dir", str(copy), "report"]) == 0
    page = Page(copy / REPORT_DIR / "index.html")
    assert "contact_sheet.png" not in page.images and len(page.images) == len(REAL_IMAGES) - 1
    assert "Contact sheet: not available (cannot render it from data.zarr: IndexError: arrays" in page.section_text()


def test_missing_inputs_are_not_available_lines(tmp_path):
    run_dir = tmp_path / "synthetic"
    write_run(run_dir, max_order=2)  # transfers.zarr and affinity.csv only: no stage I, no ahp extras, no evaluate
    assert main(["-q", "--run-dir", str(run_dir), "report"]) == 0
    page = Page(run_dir / REPORT_DIR / "index.html")
    text = page.section_text()
    for what in ("Contact sheet", "stage1_quality.csv", "Affinity heatmap", "Top sources with intervals",
                 "The run's taxonomy (taxonomy.json and taxonomy_graph.png)",
                 "Taxonomies by budget (budget_taxonomies.json)", "evaluation_curves.png", "supervision_saved.csv",
                 "Time per stage", "config.yaml"):
        assert f"{what}: not available" in text, what
    assert "Taxonomies by budget (budget_taxonomies.json): not available (run `taskonomy evaluate`)" in text
    # the report draws nothing a stage did not, but the task tree it clusters from affinity.csv (no BIP)
    assert page.images == ["task_tree.png"]


def test_the_taxonomies_evaluate_drew_are_shown_with_captions_from_their_listing(tmp_path):
    run_dir = tmp_path / "synthetic"
    write_run(run_dir, tasks=["autoencoding", "depth_zbuffer", "normal", "reshading", "class_scene"], max_order=2)
    assert main(["-q", "--run-dir", str(run_dir), "evaluate", "--max-order", "2"]) == 0
    assert main(["-q", "--run-dir", str(run_dir), "report"]) == 0
    run = RunFolder(run_dir)
    listing = json.loads(run.budget_taxonomies.read_text())
    page = Page(run_dir / REPORT_DIR / "index.html")
    names = [run.budget_taxonomy(b).name for b in (1, 3, 5)]
    assert page.images == ["task_tree.png", *names, "evaluation_curves.png", "evaluation_taxonomies.png"]
    text = page.section_text()
    first = listing["taxonomies"][0]
    assert (f"Taxonomy at budget 1, max order 2: supervise {', '.join(first['supervised'])}; objective "
            f"{first['objective']:.3f} (optimal); targets coloured by quality.") in text
    # a budget without a policy is a line, and so is a listing that cannot be read
    listing["taxonomies"][1].update(file=None, status="infeasible", objective=None, supervised=[])
    run.budget_taxonomies.write_text(json.dumps(listing))
    assert main(["-q", "--run-dir", str(run_dir), "report"]) == 0
    page = Page(run_dir / REPORT_DIR / "index.html")
    assert names[1] not in page.images
    assert "Taxonomy at budget 3: not available (the BIP is infeasible at this budget)" in page.section_text()
    run.budget_taxonomies.write_text("{not json")
    assert main(["-q", "--run-dir", str(run_dir), "report"]) == 0
    page = Page(run_dir / REPORT_DIR / "index.html")
    assert not set(names) & set(page.images)
    assert "Taxonomies by budget (budget_taxonomies.json): not available (cannot read it: JSONDecodeError" in \
        page.section_text()


def test_a_run_without_affinities_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "never_made"  # the command line refuses a folder that is not there before the report
    assert main(["-q", "--run-dir", str(missing), "report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"taskonomy: error: run folder {missing} does not exist")
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-q", "--run-dir", str(empty), "report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"taskonomy: error: run folder {empty} has no affinity.csv: run `taskonomy ahp` first"
    assert not (empty / REPORT_DIR).exists()


# Chromium: the page as a reader opens it from disk. .ci/run installs Chromium where it can; on a machine
# without one of the binaries below this test skips.
_CHECK = """<script>
var errors = 0;
window.addEventListener("error", function () { errors++; }, true);  // capture: image load errors too
window.addEventListener("load", function () {
  var images = Array.from(document.images), d = document.createElement("div");
  d.id = "check";
  d.dataset.images = images.length;
  d.dataset.broken = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  d.dataset.wide = images.filter(function (i) { return i.getBoundingClientRect().right > innerWidth; }).length;
  d.dataset.errors = errors;
  d.dataset.overflow = document.documentElement.scrollWidth > innerWidth ? 1 : 0;
  document.body.appendChild(d);
});
</script>"""


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def browser_check(index: Path, chromium: str, profile: Path, width: int = 1400) -> dict[str, int]:
    """Open a copy of `index` (beside it, so relative pictures resolve) with a probe script; read its verdict."""
    probe = index.with_name("_check.html")
    probe.write_text(index.read_text(encoding="utf-8").replace("<head>", "<head>" + _CHECK, 1), encoding="utf-8")
    try:
        result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                                 f"--window-size={width},4000", "--virtual-time-budget=10000", "--dump-dom",
                                 probe.as_uri()], capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink()
    found = re.search(r'<div id="check"([^>]*)>', result.stdout)
    assert found, f"no verdict from chromium (exit {result.returncode}): {result.stderr[-2000:]}"
    return {k: int(v) for k, v in re.findall(r'data-(\w+)="(\d+)"', found.group(1))}


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (chromium, chromium-browser, google-chrome)")
def test_report_opens_in_chromium_with_every_picture_loaded(reported, tmp_path):
    _, run_dir = reported
    report = tmp_path / "moved_report"  # the folder works on its own, away from the run
    shutil.copytree(run_dir / REPORT_DIR, report)
    verdict = browser_check(report / "index.html", _chromium(), tmp_path / "profile")
    assert verdict == {"images": len(REAL_IMAGES), "broken": 0, "wide": 0, "errors": 0, "overflow": 0}
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,4000",
                    (report / "index.html").as_uri()], capture_output=True, timeout=180, check=True)
    with Image.open(shot) as image:
        assert image.size == (1400, 4000)
        colours = image.convert("RGB").resize((140, 400)).getcolors(maxcolors=100_000)
        assert colours is not None and len(colours) > 200  # text, tables and pictures, not a blank page
