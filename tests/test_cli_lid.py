"""`lidmem lid` end to end: .npy, .csv and an image folder in, one row per point out."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lidmem.cli.main import app
from lidmem.data.manifolds import affine_subspace, von_mises_mixture

runner = CliRunner()


def test_npy_to_csv(tmp_path):
    s = affine_subspace(200, dim=2, ambient_dim=6, seed=0)
    np.save(tmp_path / "x.npy", s.points)
    out = tmp_path / "lid.csv"
    res = runner.invoke(app, ["lid", str(tmp_path / "x.npy"), "--k", "20", "--tau", "fo", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["index", "lid"]
    assert table["index"].tolist() == list(range(200))
    assert (table["lid"] == 2).all()


def test_csv_to_parquet_point_mass(tmp_path):
    s = von_mises_mixture(100, seed=0)
    pd.DataFrame(s.points, columns=["x", "y"]).to_csv(tmp_path / "vm.csv", index=False)
    out = tmp_path / "lid.parquet"
    res = runner.invoke(app, ["lid", str(tmp_path / "vm.csv"), "--k", "20", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out)
    assert (table["lid"].to_numpy()[s.lid == 0] == 0).all()
    assert (table["lid"].to_numpy()[s.lid == 1] >= 1).all()


def test_image_folder_with_duplicates(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    imgs[25:] = imgs[0]  # image_000 copied five times
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(folder / f"image_{i:03d}.png")
    out = tmp_path / "lid.csv"
    res = runner.invoke(app, ["lid", str(folder), "--k", "10", "--radius", "0", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert table["name"].tolist() == [f"image_{i:03d}.png" for i in range(30)]
    dup = table["name"].isin(["image_000.png"] + [f"image_{i:03d}.png" for i in range(25, 30)])
    assert (table.loc[dup, "lid"] == 0).all()
    assert (table.loc[~dup, "lid"] > 0).all()


@pytest.mark.parametrize("search", ["exact", "faiss", "auto"])
def test_search_option(tmp_path, search):
    """--search faiss (blocked IVF neighbours) gives the exact-search LID on a plane with copies."""
    if search == "faiss":
        pytest.importorskip("faiss")
    s = affine_subspace(1500, dim=2, ambient_dim=8, noise=1e-3, seed=3)
    x = np.concatenate([s.points, s.points[:1], s.points[:1]])
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "lid.csv"
    res = runner.invoke(app, ["lid", str(tmp_path / "x.npy"), "--k", "30", "--search", search, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"search={'exact' if search == 'auto' else search}" in res.output  # auto: 2.3e6 pairs < 5e7 -> exact
    lid = pd.read_csv(out)["lid"].to_numpy()
    dup = np.zeros(len(x), dtype=bool)
    dup[[0, 1500, 1501]] = True
    assert (lid[dup] == 0).all() and (lid[~dup] == 2).all()


def test_skdim_estimator_to_stdout(tmp_path):
    pytest.importorskip("skdim")
    s = affine_subspace(120, dim=2, ambient_dim=5, seed=1)
    np.save(tmp_path / "x.npy", s.points)
    res = runner.invoke(app, ["lid", str(tmp_path / "x.npy"), "-e", "mle", "--k", "15", "--no-progress"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln and ln[0].isdigit()]
    assert len(lines) == 120
    assert abs(np.median([float(ln.split(",")[1]) for ln in lines]) - 2) < 0.5


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.npy"], "does not exist"),
        (["{x}", "--estimator", "pca"], "--estimator='pca'"),
        (["{x}", "--k", "50"], "k=50"),
        (["{x}", "--out", "lid.txt"], ".csv or .parquet"),
        (["{empty}"], "empty"),
        (["{x}", "--search", "annoy"], "--search='annoy'"),
    ],
)
def test_errors_exit_2(tmp_path, args, message):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((50, 3)))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    argv = ["lid"] + [a.format(x=tmp_path / "x.npy", empty=tmp_path / "empty.npy") for a in args]
    res = runner.invoke(app, argv)
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
