"""Transferability estimators: each against an independent reference computed another way at small sizes, a planted
source that every estimator must rank first, and `taskonomy estimate` on the shared small run (transfer split only,
one-line refusals)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zarr
from scipy import optimize, stats
from scipy.spatial.distance import pdist

from _faults import cli, copy_run, one_line
from taskonomy import tasks as registry
from taskonomy.cli import main
from taskonomy.runfolder import RunFolder
from taskonomy.transfer.estimate import (ESTIMATORS, hscore, kmeans, label_matrix, logme, parc, parse_estimators,
                                         pool_features, rdm_upper, read_estimates, ridge, rsa, standardise)


def _log_evidence(x: np.ndarray, y: np.ndarray, log_alpha: float, log_beta: float) -> float:
    """log p(y | alpha, beta) / n of y ~ N(x w, 1/beta), w ~ N(0, 1/alpha), written with the d x d matrices."""
    n, d = x.shape
    alpha, beta = math.exp(log_alpha), math.exp(log_beta)
    a = alpha * np.eye(d) + beta * x.T @ x
    m = beta * np.linalg.solve(a, x.T @ y)
    return float(d / 2 * log_alpha + n / 2 * log_beta - beta / 2 * np.sum((y - x @ m) ** 2) - alpha / 2 * m @ m
                 - np.linalg.slogdet(a)[1] / 2 - n / 2 * math.log(2 * math.pi)) / n


def _logme_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The evidence maximised over (log alpha, log beta) by scipy.optimize, per column, averaged."""
    best = []
    for column in y.T:
        result = optimize.minimize(lambda p, c=column: -_log_evidence(x, c, *p), x0=[0.0, 0.0], method="BFGS",
                                   options={"gtol": 1e-9})
        best.append(-result.fun)
    return float(np.mean(best))


@pytest.mark.parametrize("n, d", [(80, 6), (15, 24)])  # more images than features, and fewer
def test_logme_is_the_evidence_maximised_by_scipy(n, d):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, d))
    y = x @ rng.standard_normal((d, 3)) + 0.5 * rng.standard_normal((n, 3))
    expected = _logme_reference(x, y)
    assert logme(x, y) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert logme(x, y, backend="numpy") == pytest.approx(logme(x, y), rel=1e-12)


def test_logme_of_labels_the_features_cannot_explain_approaches_its_supremum():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((60, 5)), rng.standard_normal((60, 3))
    # for noise the evidence may grow all the way to alpha -> infinity (w = 0), where it tends to that of
    # y ~ N(0, 1/beta) at beta = n / |y|^2; the optimiser climbs one way or the other, the fixed point must too
    limit = np.mean([0.5 * math.log(60 / (c @ c)) - 0.5 - 0.5 * math.log(2 * math.pi) for c in y.T])
    expected = np.mean([max(_logme_reference(x, c[:, None]), 0.5 * math.log(60 / (c @ c)) - 0.5
                            - 0.5 * math.log(2 * math.pi)) for c in y.T])
    assert logme(x, y) == pytest.approx(expected, abs=1e-5)
    assert logme(x, y) >= limit - 1e-5


def test_hscore_is_the_trace_formula():
    rng = np.random.default_rng(2)
    classes = rng.integers(0, 4, 50)
    x = rng.standard_normal((50, 6)) + np.eye(4, 6)[classes] * 2.0
    means = np.array([x[classes == c].mean(0) for c in range(4)])[classes]  # E[f | y] per image
    expected = np.trace(np.linalg.pinv(np.cov(x.T, bias=True)) @ np.cov(means.T, bias=True))
    assert hscore(x, classes) == pytest.approx(expected, rel=1e-9)


def test_rdms_rsa_and_parc_match_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((30, 7)), rng.standard_normal((30, 5))
    b[:, :3] += a[:, :3]
    da, db = pdist(a, metric="correlation"), pdist(b, metric="correlation")
    np.testing.assert_allclose(rdm_upper(a), da, atol=1e-12)
    assert rsa(rdm_upper(a), rdm_upper(b)) == pytest.approx(stats.spearmanr(da, db).statistic, rel=1e-9)
    assert parc(rdm_upper(a), rdm_upper(b)) == pytest.approx(stats.pearsonr(da, db).statistic, rel=1e-9)


def test_ridge_is_the_least_squares_solution_of_the_augmented_system():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((70, 5))
    y = x @ rng.standard_normal((5, 2)) + 3.0 + 0.3 * rng.standard_normal((70, 2))
    fit, val, penalty = slice(0, 50), slice(50, 70), 4.0
    # [x 1; sqrt(penalty) I 0] [w; b] = [y; 0]: the intercept is not penalised
    augmented = np.block([[x[fit], np.ones((50, 1))], [math.sqrt(penalty) * np.eye(5), np.zeros((5, 1))]])
    coef = np.linalg.lstsq(augmented, np.vstack([y[fit], np.zeros((5, 2))]), rcond=None)[0]
    predicted = np.hstack([x[val], np.ones((20, 1))]) @ coef
    expected = 1 - ((y[val] - predicted) ** 2).sum() / ((y[val] - y[fit].mean(0)) ** 2).sum()
    assert ridge(x[fit], y[fit], x[val], y[val], penalty) == pytest.approx(expected, rel=1e-9)


def test_labels_and_features_are_pooled_as_stated():
    rng = np.random.default_rng(5)
    depth = rng.random((3, 1, 16, 16)).astype(np.float16)
    expected = depth.astype(np.float64).reshape(3, 1, 4, 4, 4, 4).mean(axis=(3, 5)).reshape(3, -1)
    np.testing.assert_allclose(label_matrix(registry.get("depth_zbuffer"), depth), expected, rtol=1e-6)
    semantic = rng.integers(0, registry.N_SEMANTIC, (3, 16, 16)).astype(np.uint8)
    shares = label_matrix(registry.get("segment_semantic"), semantic).reshape(3, registry.N_SEMANTIC, 16)
    np.testing.assert_allclose(shares.sum(1), 1.0)  # class shares of each of the 4 x 4 cells
    np.testing.assert_array_equal(label_matrix(registry.get("class_scene"), np.array([2, 0], np.uint8)),
                                  np.eye(len(registry.ROOM_TYPES))[[2, 0]])
    features = rng.random((2, 4, 4, 4)).astype(np.float16)
    np.testing.assert_allclose(pool_features(features),
                               features.astype(np.float64).reshape(2, 4, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, -1),
                               rtol=1e-6)
    ids = kmeans(np.vstack([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))]), 2)
    assert len(set(ids[:20])) == 1 and len(set(ids[20:])) == 1 and ids[0] != ids[-1]


@pytest.mark.parametrize("kind", ["regression", "classes"])
def test_a_source_linear_in_the_label_scores_best_for_every_estimator(kind):
    rng = np.random.default_rng(6)
    n = 240
    if kind == "classes":
        classes = rng.integers(0, 5, n)
        y = standardise(np.eye(5)[classes], None)
    else:
        y = standardise(rng.standard_normal((n, 6)), None)
        classes = kmeans(y, 8)
    planted = y @ rng.standard_normal((y.shape[1], 12))  # a linear function of the label
    others = {"random": rng.standard_normal((n, 12)),
              "half": 0.4 * planted + rng.standard_normal((n, 12)),  # related, but noisier
              "pixels": rng.standard_normal((n, 3))}
    sources = {"planted": planted, **others}
    sources = {k: standardise(v) for k, v in sources.items()}
    # the target's own representation (rsa's reference): its network represents the label, with noise (under another
    # random linear map the order of the distances between classes would be a coin toss for any source)
    own = standardise(y + 0.3 * rng.standard_normal(y.shape))
    held = np.arange(n) % 5 == 0
    scores = {
        "logme": {k: logme(x, y) for k, x in sources.items()},
        "hscore": {k: hscore(x, classes) for k, x in sources.items()},
        "rsa": {k: rsa(rdm_upper(x), rdm_upper(own)) for k, x in sources.items()},
        "parc": {k: parc(rdm_upper(x), rdm_upper(y)) for k, x in sources.items()},
        "ridge": {k: ridge(x[~held], y[~held], x[held], y[held]) for k, x in sources.items()},
    }
    assert set(scores) == set(ESTIMATORS)
    for estimator, values in scores.items():
        assert max(values, key=values.get) == "planted", (estimator, values)
        assert values["half"] > values["random"], (estimator, values)


def test_estimator_names_are_checked():
    assert parse_estimators(None) == list(ESTIMATORS)
    assert parse_estimators("ridge, logme,ridge") == ["ridge", "logme"]
    with pytest.raises(Exception, match="unknown estimator 'dds'"):
        parse_estimators("logme,dds")


# ---------------------------------------------------------------------------------------------------------------
# the command on the shared small run


def _corrupt_test_split(run_dir):
    """Noise into every test-split label and feature: an estimator that reads them changes its scores."""
    data = zarr.open_group(str(RunFolder(run_dir).data), mode="r+")
    test = np.asarray(data["splits/test"][:])
    rng = np.random.default_rng(7)
    for name in data["labels"]:
        array = data[f"labels/{name}"]
        values = np.asarray(array[...])
        noise = rng.integers(0, 2, values[test].shape) if values.dtype.kind in "iu" else \
            rng.random(values[test].shape)
        values[test] = noise.astype(values.dtype)
        array[...] = values
    features = zarr.open_group(str(RunFolder(run_dir).features), mode="r+")
    for source in features.group_keys():
        array = features[f"{source}/test"]
        array[...] = rng.random(array.shape).astype(array.dtype)


def test_estimate_writes_every_table_reads_no_test_image_and_measures_agreement(faults_run, tmp_path, capsys):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    run = RunFolder(run_dir)
    assert cli(config, run_dir, "estimate") == 0
    tables = {e: read_estimates(run_dir, e) for e in ESTIMATORS}
    for estimator, table in tables.items():
        assert table.columns == ["full", "depth_zbuffer", "normal", "class_scene", "random", "pixels"]
        assert table.targets == ["depth_zbuffer", "normal", "class_scene"]
        for i, target in enumerate(table.targets):
            row = table.values[i]
            assert math.isnan(row[table.columns.index(target)]), (estimator, target)  # the target itself: `full`
            assert np.isfinite(np.delete(row, table.columns.index(target))).all(), (estimator, target, row)
    timings = json.loads(run.estimate_timings.read_text())
    assert set(timings["estimators"]) == set(ESTIMATORS) and timings["higher_is_better"]
    assert timings["images"] == zarr.open_group(str(run.data), mode="r")["splits/transfer"].shape[0]
    doc = json.loads(run.estimate_agreement_json.read_text())
    assert [e["estimator"] for e in doc["estimators"]] == list(ESTIMATORS)
    assert run.estimate_agreement_csv.is_file() and run.estimate_agreement_figure.stat().st_size > 0
    _corrupt_test_split(run_dir)
    assert cli(config, run_dir, "estimate", "--estimators", "logme,ridge,rsa") == 0
    for estimator in ("logme", "ridge", "rsa"):
        np.testing.assert_array_equal(read_estimates(run_dir, estimator).values, tables[estimator].values)


def test_estimate_refuses_bad_input_in_one_line(faults_run, tmp_path, capsys):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path, "features.zarr")
    capsys.readouterr()
    assert cli(config, run_dir, "estimate", "--estimators", "logme,dds") == 2
    assert "unknown estimator 'dds'" in one_line(capsys)
    assert cli(config, run_dir, "estimate") == 2
    assert "features.zarr does not exist" in one_line(capsys)
    assert not RunFolder(run_dir).estimates.exists() and not RunFolder(run_dir).estimate_agreement_csv.exists()
    damaged = copy_run(reference, tmp_path / "damaged")
    RunFolder(damaged).affinity.write_text("target,normal\nnormal,x\n")
    capsys.readouterr()
    assert cli(config, damaged, "estimate") == 2
    assert "affinity.csv" in one_line(capsys) and not RunFolder(damaged).estimates.exists()
    published = tmp_path / "published"
    assert main(["-q", "--run-dir", str(published), "published"]) == 0
    capsys.readouterr()
    assert main(["-q", "--run-dir", str(published), "estimate"]) == 2
    assert "holds the published Taskonomy results" in one_line(capsys)


def test_a_pair_target_reads_both_views_chunk_by_chunk(tmp_path):
    from taskonomy.transfer.estimate import read_features

    rng = np.random.default_rng(8)
    root = zarr.open_group(str(tmp_path / "features.zarr"), mode="w")
    views = {"s/transfer": rng.random((10, 2, 4, 4)), "s/views/egomotion/transfer": rng.random((10, 2, 4, 4)),
             "t/transfer": rng.random((10, 2, 4, 4))}  # t has no second view of egomotion: no cell there
    for path, values in views.items():
        root.create_array(path, shape=values.shape, chunks=(4, 2, 4, 4), dtype="f2")[...] = values.astype(np.float16)
    features = read_features(root, ["s", "t"], ["egomotion"])
    assert set(features.x) == {("s", None), ("t", None), ("s", "egomotion")} and features.images == 10
    both = np.concatenate([pool_features(views[p].astype(np.float16)) for p in ("s/transfer",
                                                                              "s/views/egomotion/transfer")], 1)
    np.testing.assert_allclose(features.x[("s", "egomotion")], standardise(both), atol=1e-12)


def test_a_target_added_from_the_cache_gets_the_label_based_estimators_only(faults_run, tmp_path, capsys):
    from taskonomy.artifacts import AddedTarget, labels_hash, write_added_target
    from taskonomy.scenes.dataset import data_hash, open_data
    from taskonomy.tasks import Task

    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    data = open_data(RunFolder(run_dir).data)
    labels = (np.asarray(data["labels/depth_zbuffer"][...]).mean(axis=(1, 2, 3)) > 3.0).astype(np.uint8)
    task = Task("far_room", "added", "rgb", "global", 2, "ce", "test", "uint8", 2, role="target")
    write_added_target(run_dir, AddedTarget(task, labels_hash(labels), data_hash(data), "test"), labels)
    capsys.readouterr()
    assert cli(config, run_dir, "estimate", "--estimators", "logme,rsa,hscore") == 0
    assert "no stage I features of far_room: rsa cells and full left empty" in capsys.readouterr().err
    for estimator in ("logme", "rsa", "hscore"):
        table = read_estimates(run_dir, estimator)
        row = table.values[table.targets.index("far_room")]
        assert math.isnan(row[0])  # no network of its own among the sources: no `full`
        assert np.isnan(row[1:]).all() if estimator == "rsa" else np.isfinite(row[1:]).all(), (estimator, row)


def test_a_label_value_that_never_varies_is_left_out():
    from taskonomy.transfer.estimate import read_target

    rng = np.random.default_rng(9)
    semantic = rng.integers(1, registry.N_SEMANTIC, (40, 16, 16)).astype(np.uint8)  # class 0 never appears
    y, classes = read_target(registry.get("segment_semantic"), [semantic[:25], semantic[25:]])
    assert y.shape == (40, (registry.N_SEMANTIC - 1) * 16) and len(classes) == 40
    np.testing.assert_allclose(y.std(0), 1.0)
    assert np.isfinite(logme(standardise(rng.standard_normal((40, 8))), y))
