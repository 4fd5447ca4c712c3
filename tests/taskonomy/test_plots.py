"""The plotting modules build figures on their own: importing them or drawing leaves matplotlib's backend alone
and never loads pyplot, so a notebook's inline plots keep working."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ROOT

_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import matplotlib

    matplotlib.use("svg")  # what a notebook or a user chose before importing us
    import numpy as np

    sys.path.insert(0, {tests!r})
    from _taxonomy_run import write_run

    import taskonomy.report
    import taskonomy.taxonomy.stage as stage
    from taskonomy.ahp.heatmap import affinity_heatmap_figure, plot_affinity_heatmap
    from taskonomy.cli import main
    from taskonomy.taxonomy.bip import Transfer
    from taskonomy.taxonomy.evaluate import SweepPoint
    from taskonomy.taxonomy.graph import evaluation_figure, taxonomy_figure, taxonomy_grid_figure

    out = Path({out!r})
    targets, sources = ["normal", "reshading", "curvature"], ["normal", "reshading", "jigsaw"]
    affinity = np.full((3, 3), 1 / 3)
    plot_affinity_heatmap(out / "heatmap.png", targets, sources, affinity, 1 + affinity)
    policy = {{"normal": Transfer(("normal",), "normal", 0.5), "reshading": Transfer(("normal",), "reshading", 0.3),
              "curvature": Transfer(("jigsaw", "normal"), "curvature", 0.2)}}
    scores = {{t: (0.6, 0.4) for t in targets}}
    points = [SweepPoint(b, k, "optimal", 1.0, ("jigsaw", "normal"), 2.0, policy, scores)
              for b in (1.0, 2.0) for k in (1, 2)]
    figures = [affinity_heatmap_figure(targets, sources, affinity, 1 + affinity, "heatmap"),
               taxonomy_figure(["jigsaw", "normal"], policy, "taxonomy", scores),
               taxonomy_grid_figure(points, [1.0, 2.0], [1, 2]), evaluation_figure(points, targets)]
    for i, figure in enumerate(figures):
        figure.savefig(out / f"figure_{{i}}.png", format="png")
    # the stages and the report save their own pictures the same way
    write_run(out / "run", tasks=["autoencoding", "normal", "reshading"], max_order=2)
    for command in (["solve", "--budget", "2"], ["evaluate", "--max-order", "2"], ["report"]):
        assert main(["-q", "--run-dir", str(out / "run"), *command]) == 0, command
    assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
    print("backend", matplotlib.get_backend())
""")


def test_plotting_keeps_the_callers_backend_and_never_imports_pyplot(tmp_path):
    script = _SCRIPT.format(tests=str(ROOT / "tests"), out=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["backend", "svg"]
    pictures = ["heatmap.png", *[f"figure_{i}.png" for i in range(4)], "run/taxonomy_graph.png",
                "run/evaluation_curves.png", "run/taxonomy_budget_1.png", "run/report/taxonomy_budget_1.png"]
    for name in pictures:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
    assert (tmp_path / "run" / "report" / "index.html").is_file()
