"""``lidmem mmh`` end to end on a checkpoint of a registered network with an exact score
(planted DD-Mem duplicates and a planted OD-Mem point), and its error handling."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lidmem import VPSDE
from lidmem.cli.main import app
from lidmem.data.analytic import GaussianMixtureOnSubspaces
from lidmem.diffusion.checkpoint import save_checkpoint
from lidmem.diffusion.networks import register_network

runner = CliRunner()


class PlantedScore(nn.Module):
    """Exact score of a Gaussian on the x-axis plus point masses at (0, 3) and (2.5, 0)."""

    def __init__(self):
        super().__init__()
        self.config = {"type": "test_planted_gm"}
        gm = GaussianMixtureOnSubspaces(dims=[1, 0, 0], ambient_dim=2, weights=[0.8, 0.15, 0.05], scales=1.2, seed=0)
        gm.bases = [torch.tensor([[1.0], [0.0]], dtype=torch.float64), torch.zeros(2, 0, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.float64)]
        gm.offsets = torch.tensor([[0.0, 0.0], [0.0, 3.0], [2.5, 0.0]], dtype=torch.float64)
        self.gm = gm

    @classmethod
    def from_config(cls, config):
        return cls()

    def forward(self, x, t):
        return self.gm(x, t)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    try:
        register_network("test_planted_gm", PlantedScore.from_config)
    except ValueError:
        pass
    d = tmp_path_factory.mktemp("mmh")
    ckpt = save_checkpoint(d / "planted.safetensors", PlantedScore(), sde=VPSDE(), prediction="score", data_shape=[2])
    g = np.random.default_rng(0)
    data = np.concatenate([np.stack([g.uniform(-2, 2, 80), np.zeros(80)], 1), [[2.5, 0.0]], np.tile([[0.0, 3.0]], (12, 1))])
    csv = d / "data.csv"
    pd.DataFrame(data, columns=["a", "b"]).to_csv(csv, index=False)
    return ckpt, csv, d


def test_cli_mmh_finds_planted_memorization(planted):
    ckpt, csv, d = planted
    out = d / "out"
    res = runner.invoke(app, ["mmh", "--model", str(ckpt), "--data", str(csv), "--out", str(out), "--k", "10", "--tau", "fo",
                              "--radius", "0", "--t0", "0.01", "--no-progress"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "mmh.csv")
    assert list(table.columns) == ["index", "lid_theta", "lid_star", "od_gap", "mmh_class"] and len(table) == 93
    assert (table.mmh_class[81:] == "dd_mem").all()
    assert table.mmh_class[80] == "od_mem" and table.lid_theta[80] < 0.3 and table.lid_star[80] == 1
    assert (table.mmh_class[:80] == "none").mean() > 0.95
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["dd_mem"] == 12 and summary["counts"]["od_mem"] >= 1
    assert summary["settings"]["t0"] == 0.01 and summary["settings"]["mmh"]["od_margin"] == 0.5


def test_cli_mmh_default_t0_is_auto_from_the_training_data(planted):
    """The default --t0 is 'auto': t0_from_training_data on the points given (lidmem.defaults)."""
    from lidmem.estimators.t0 import t0_from_training_data

    ckpt, csv, d = planted
    res = runner.invoke(app, ["mmh", "--model", str(ckpt), "--data", str(csv), "--out", str(d / "auto"), "--k", "10", "--no-progress"])
    assert res.exit_code == 0, res.output
    expected = t0_from_training_data(VPSDE(), pd.read_csv(csv).to_numpy(np.float32))
    assert json.loads((d / "auto" / "summary.json").read_text())["settings"]["t0"] == pytest.approx(expected, rel=1e-9)
    assert 0.0 < expected < 1.0


def _text(res):
    return " ".join(res.output.split())  # rich wraps long lines


def test_cli_mmh_errors(planted, tmp_path):
    ckpt, csv, d = planted
    res = runner.invoke(app, ["mmh", "--model", str(tmp_path / "missing.safetensors"), "--data", str(csv), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in _text(res)
    res = runner.invoke(app, ["mmh", "--model", str(ckpt), "--data", str(csv), "--out", str(tmp_path / "o"), "--k", "500", "--no-progress"])
    assert res.exit_code == 2 and "500" in _text(res)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 3)))
    res = runner.invoke(app, ["mmh", "--model", str(ckpt), "--data", str(bad), "--out", str(tmp_path / "o"), "--k", "2", "--no-progress"])
    assert res.exit_code == 2 and "3 features" in _text(res)
