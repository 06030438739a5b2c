"""``lidmem demo vonmises``: the paper's Fig. 4 properties, read back from the files the demo
writes (shipped weights; and ``--retrain`` from scratch as a slow test)."""

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lidmem.cli.main import app
from lidmem.experiments.vonmises import angular_isolation, vonmises_data

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def neighbours_on_circle(xy, radius=0.25):
    """Independent re-implementation for the check: other circle points within `radius` rad."""
    r = np.linalg.norm(xy, axis=1)
    on = np.abs(r - 1) < 0.1
    th = np.arctan2(xy[:, 1], xy[:, 0])
    d = np.abs((th[:, None] - th[None] + np.pi) % (2 * np.pi) - np.pi)
    np.fill_diagonal(d, np.inf)
    return np.where(on, ((d <= radius) & on[None]).sum(1), -1), on


def check_fig4_properties(out):
    samples = pd.read_csv(out / "samples.csv")
    training = pd.read_csv(out / "training.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert list(samples.columns) == ["x", "y", "lid_theta"]
    assert list(training.columns) == ["x", "y", "lid_star", "lid_theta", "mmh_class"] and len(training) == 100
    assert (out / "figure.png").stat().st_size > 10_000
    assert summary["settings"]["flipd"]["t0"] == 0.005 and "od_margin" in summary["settings"]["mmh"]
    # samples: LID_theta ~ 0 at the point mass, ~ 1 on the circle
    r = np.hypot(samples.x, samples.y)
    near_origin, near_circle = r < 0.1, np.abs(r - 1) < 0.1
    assert near_origin.sum() >= 20 and near_circle.sum() >= 200
    assert samples.lid_theta[near_origin].median() < 0.3
    assert 0.7 <= samples.lid_theta[near_circle].median() <= 1.3
    # training points at the origin are DD-Mem
    xy = training[["x", "y"]].to_numpy()
    at_origin = np.linalg.norm(xy, axis=1) < 1e-6
    assert at_origin.sum() == 15 and (training.mmh_class[at_origin] == "dd_mem").all()
    # OD-Mem on the circle, and only at isolated training points: every od_mem point is one of
    # the 5 circle points with the fewest neighbours within 0.25 rad (ties included)
    n_nb, on = neighbours_on_circle(xy)
    od = (training.mmh_class == "od_mem").to_numpy()
    assert od.sum() >= 1 and on[od].all()
    fifth_fewest = np.sort(n_nb[on])[4]
    assert (n_nb[od] <= fifth_fewest).all(), (n_nb[od], np.sort(n_nb[on])[:8])
    # and the single most isolated point (no neighbour within 0.25 rad) is among them
    assert od[np.argmin(np.where(on, n_nb, 10**6))]
    return summary


def test_isolation_helper_matches_data():
    data = vonmises_data()
    n_nb, gap = angular_isolation(data.points)
    ref, on = neighbours_on_circle(data.points)
    assert np.array_equal(np.isnan(n_nb), ~on) and np.array_equal(n_nb[on], ref[on])
    # seed 42 has exactly one circle point with no neighbour within 0.25 rad (gap 0.54 rad)
    assert (n_nb == 0).sum() == 1 and np.nanmax(gap) == pytest.approx(0.537, abs=0.01)


def test_demo_from_shipped_weights(tmp_path):
    start = time.perf_counter()
    res = runner.invoke(app, ["demo", "vonmises", "--out", str(tmp_path), "--no-progress"])
    elapsed = time.perf_counter() - start
    assert res.exit_code == 0, res.output
    summary = check_fig4_properties(tmp_path)
    print(f"demo from shipped weights: {elapsed:.1f} s; {summary['summary']['timings_s']}")


@pytest.mark.slow
def test_demo_retrain_reproduces(tmp_path):
    res = runner.invoke(app, ["demo", "vonmises", "--out", str(tmp_path), "--retrain", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "model.safetensors").is_file()
    check_fig4_properties(tmp_path)
