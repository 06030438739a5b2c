"""Audit against planted truth with an exact score oracle, the CLI on PNG folders, and input validation."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lidmem.cli.main import app
from lidmem.data.analytic import GaussianMixtureOnSubspaces
from lidmem.data.images import load_digits_images, write_png_folder
from lidmem.estimators import FLIPD, LocalPCA, NormalBundle
from lidmem.memorization.audit import SAMPLE_COLUMNS, TrainingImages, audit_memorization

runner = CliRunner()


@pytest.fixture(scope="module")
def oracle_audit(point_mass_images):
    # three point masses (each a training image duplicated 20x) + an 8-dim Gaussian (300 distinct
    # training images) in R^64 = 1x8x8 images; the exact score of the mixture is the model
    gm, train, samples = point_mass_images  # 12 copies, 40 new points
    dup = np.r_[np.ones(60, bool), np.zeros(300, bool)]
    tr = TrainingImages(train, [f"t{i}" for i in range(len(train))], dup)
    res = audit_memorization(gm, tr, samples=samples, lid_theta=FLIPD(gm, t0=0.01, trace="exact", progress=False),
                             normal_bundle=NormalBundle(gm, t0=0.01, n_scores=256, threshold="gap", progress=False),
                             lid_star=LocalPCA(k=30, radius=0.0, progress=False), progress=False)
    return res, np.r_[np.ones(12, bool), np.zeros(40, bool)]


def test_oracle_audit_recovers_planted_truth(oracle_audit):
    res, is_copy = oracle_audit
    df = res.samples
    assert list(df.columns[: len(SAMPLE_COLUMNS)]) == SAMPLE_COLUMNS
    assert (df["copy_label"][is_copy] == "exact_copy").all()
    assert (df["copy_label"][~is_copy] == "none").mean() >= 0.9
    # FLIPD of the exact score: ~0 at the point masses, ~8 on the 8-dim component
    np.testing.assert_allclose(df["lid_theta_flipd"][is_copy], 0.0, atol=0.3)
    assert abs(df["lid_theta_flipd"][~is_copy].median() - 8) < 1.0
    assert (df["lid_theta_nb"][is_copy] == 0).all() and abs(df["lid_theta_nb"][~is_copy].median() - 8) <= 1
    assert (df["lid_star"][is_copy] == 0).all() and (df["lid_star"][~is_copy] > 0).all()
    assert (df["mmh_class"][is_copy] == "dd_mem").all()
    det = {(r["positive"], r["score"]): r for r in res.summary["detection"]}
    assert det[("exact_copy", "lid_theta_flipd")]["auroc"] >= 0.99
    assert det[("exact_copy", "lid_theta_nb")]["auroc"] >= 0.99
    pdup = res.summary["planted_duplicates"]
    assert pdup["distinct_planted_reproduced"] == 3 and pdup["lid_star_zero_frac_duplicated_train"] == 1.0


def test_outputs_written(oracle_audit, tmp_path):
    res, _ = oracle_audit
    from lidmem.workflows.audit import write_audit

    paths = write_audit(res, tmp_path)
    df = pd.read_parquet(paths["samples"])
    assert list(df.columns[: len(SAMPLE_COLUMNS)]) == SAMPLE_COLUMNS and len(df) == 52
    summary = json.loads(paths["summary"].read_text())
    assert summary["settings"]["flipd_t0"] == 0.01 and summary["detection"]
    html = paths["report"].read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table>" in html and "AUROC" in html
    assert "{" not in html.split("<body>")[1].split("<h2>Settings")[0]  # no dict reprs in the report text
    assert "FLIPD maps" in html
    # the memorization maps: their sums are FLIPD; the copies (point masses) are pinned everywhere
    maps = np.load(paths["maps"])
    assert paths["maps"].name == "maps.npy" and maps.shape == (52, 1, 8, 8)
    np.testing.assert_allclose(maps.reshape(52, -1).sum(1), df["lid_theta_flipd"], rtol=0, atol=1e-4)
    # (the 8-dim component lies on a random subspace: about 8 / 64 per pixel)
    assert np.abs(maps[:12]).max() < 0.01 and (maps[12:].reshape(40, -1).mean(1) > 0.1).all()


def _tiny_unet_checkpoint(path):
    pytest.importorskip("diffusers")
    from lidmem import VPSDE
    from lidmem.diffusion.checkpoint import save_checkpoint
    from lidmem.diffusion.unet import UNetScoreNet

    torch.manual_seed(0)
    net = UNetScoreNet(8, block_out_channels=(8, 16))
    return save_checkpoint(path, net, sde=VPSDE(), prediction="epsilon", data_shape=(1, 8, 8))


def test_cli_on_png_folders(tmp_path):
    imgs, _ = load_digits_images()
    train_dir, sample_dir = tmp_path / "train", tmp_path / "samples"
    write_png_folder(imgs[:150], train_dir)
    write_png_folder(np.concatenate([imgs[:5], imgs[1000:1020]]), sample_dir)  # 5 copies + 20 unseen digits
    ckpt = _tiny_unet_checkpoint(tmp_path / "unet.safetensors")
    out = tmp_path / "out"
    r = runner.invoke(app, ["audit", "--model", str(ckpt), "--train", str(train_dir), "--samples", str(sample_dir), "--out", str(out),
                            "--lpca-k", "20", "--n-probes", "1", "--n-scores", "16"])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out / "samples.parquet")
    assert len(df) == 25
    assert (df["copy_label"][:5] == "exact_copy").all() and df["nn_train_id"][:5].tolist() == [f"{i:05d}" for i in range(5)]
    assert (df["copy_label"][5:] == "none").mean() >= 0.8
    assert (out / "report.html").is_file() and (out / "summary.json").is_file()


def _fail_if_called(*args, **kwargs):
    raise AssertionError("the long work started before the inputs were validated")


def test_bad_inputs_stop_before_work(tmp_path, monkeypatch):
    import lidmem.memorization.audit as audit_mod
    from lidmem.diffusion.checkpoint import save_checkpoint
    from lidmem.diffusion.mlp import MLPScoreNet

    monkeypatch.setattr(audit_mod, "audit_memorization", _fail_if_called)
    imgs, _ = load_digits_images()
    good = tmp_path / "good"
    write_png_folder(imgs[:20], good)
    ckpt = _tiny_unet_checkpoint(tmp_path / "unet.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    mixed = tmp_path / "mixed"
    write_png_folder(imgs[:3], mixed)
    from PIL import Image

    Image.new("L", (16, 16)).save(mixed / "big.png")
    wrong = save_checkpoint(tmp_path / "t2i.safetensors", MLPScoreNet(4, hidden=8, depth=1), kind="text2image")

    class Out:
        def __init__(self, r):
            self.exit_code, self.output = r.exit_code, " ".join(r.output.split())  # undo rich's line wrapping

    def run(*args):
        return Out(runner.invoke(app, ["audit", *args, "--out", str(tmp_path / "o")]))

    r = run("--model", str(ckpt), "--train", str(empty))
    assert r.exit_code == 2 and "contains no images" in r.output
    r = run("--model", str(ckpt), "--train", str(mixed))
    assert r.exit_code == 2 and "mixed sizes" in r.output
    r = run("--model", str(wrong), "--train", str(good), "--lpca-k", "5")
    assert r.exit_code == 2 and "'text2image'" in r.output and "score_model" in r.output
    r = run("--model", str(ckpt), "--train", str(good), "--samples", str(empty))
    assert r.exit_code == 2 and "contains no images" in r.output
    r = run("--model", str(ckpt), "--train", str(good), "--lpca-k", "100")  # lpca_k=100 > 19 training images (the default adapts)
    assert r.exit_code == 2 and "--lpca-k=100" in r.output
    assert not (tmp_path / "o").exists()


def test_generator_checkpoint_audit(tmp_path):
    from lidmem.generators import load_generator, train_vae
    from lidmem.memorization.audit import check_audit_inputs
    from lidmem.workflows.audit import load_audit_model

    imgs, _ = load_digits_images()
    res = train_vae(imgs[:300], latent_dim=4, hidden=32, steps=200, seed=0, progress=False)
    path = res.save(tmp_path / "g.safetensors")
    gen, kind = load_audit_model(path)
    assert kind == "generator" and load_generator(path).latent_dim == 4
    out = audit_memorization(gen, imgs[:300], kind=kind, num_samples=40, lid_star=LocalPCA(k=20, progress=False), progress=False)
    df = out.samples
    assert "lid_theta_jacobian" in df and df["lid_theta_flipd"].isna().all()
    # a decoder R^4 -> R^64 has Jacobian rank <= 4; tau is the 10th percentile, so some values fall below it
    assert df["lid_theta_jacobian"].between(0, 4).all() and df["lid_theta_jacobian"].max() == 4
    np.testing.assert_allclose(df["lid_theta_png"], df["lid_theta_jacobian"] / df["png_length"])
    with pytest.raises(ValueError, match="latent"):
        check_audit_inputs(gen, kind, imgs[:300], imgs[:5], lpca_k=20)
    with pytest.raises(ValueError, match="score_model"):
        from lidmem.workflows.audit import load_audit_model as lam
        from lidmem.diffusion.checkpoint import save_checkpoint
        from lidmem.diffusion.mlp import MLPScoreNet

        lam(save_checkpoint(tmp_path / "x.safetensors", MLPScoreNet(4, hidden=8, depth=1), kind="text2image"))


def test_cli_duplicates_file_samples_npy_and_nb_max_dim(tmp_path):
    imgs, _ = load_digits_images()
    train = np.concatenate([imgs[:100], np.repeat(imgs[:2], 9, axis=0)])  # images 0 and 1 appear 10x each
    names = [f"{i:05d}" for i in range(100)] + [f"dup{j:02d}" for j in range(18)]
    train_dir = tmp_path / "train"
    write_png_folder(train, train_dir, names=names)
    samples = np.concatenate([imgs[:2], imgs[1000:1010]])
    np.save(tmp_path / "s.npy", samples)
    dup_file = tmp_path / "dups.txt"
    dup_file.write_text("# the planted duplicates\n00000\n00001\n" + "\n".join(f"dup{j:02d}" for j in range(18)) + "\n")
    ckpt = _tiny_unet_checkpoint(tmp_path / "unet.safetensors")
    out = tmp_path / "out"
    args = ["audit", "--model", str(ckpt), "--train", str(train_dir), "--samples", str(tmp_path / "s.npy"), "--out", str(out),
            "--lpca-k", "20", "--n-probes", "1", "--nb-max-dim", "0", "--flipd-sweep", "0.01,0.1", "--no-report"]
    r = runner.invoke(app, [*args, "--duplicates", str(dup_file)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    pdup = summary["planted_duplicates"]
    assert pdup["n_train_rows_duplicated"] == 20 and pdup["n_distinct_duplicated"] == 2
    assert pdup["exact_copies_of_planted"] == 2 and pdup["distinct_planted_reproduced"] == 2
    assert [row["t0"] for row in summary["flipd_t0_sweep"]] == [0.01, 0.1]
    df = pd.read_parquet(out / "samples.parquet")
    assert df["lid_theta_nb"].isna().all() and "normal bundle skipped" in r.output
    # samples.npy holds the audited images row by row and can be audited again
    np.testing.assert_allclose(np.load(out / "samples.npy"), samples, atol=1e-6)
    r2 = runner.invoke(app, [*args[:6], str(out / "samples.npy"), *args[7:8], str(tmp_path / "out2"), *args[9:]])
    assert r2.exit_code == 0, r2.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out2" / "samples.parquet"), df.drop(columns="train_duplicated"))
    # an entry that names no training image stops the CLI before any work
    bad = tmp_path / "bad.txt"
    bad.write_text("00000\nnot-an-image\n")
    r = runner.invoke(app, [*args, "--duplicates", str(bad)])
    assert r.exit_code == 2 and "not-an-image" in r.output


def test_image_range_checks(tmp_path):
    from lidmem.data.images import check_image_range
    from lidmem.memorization.audit import load_training_images

    from lidmem.data import load_image_folder

    imgs, _ = load_digits_images()  # values 2 v / 16 - 1 in [-1, 1]
    write_png_folder(imgs[:5], tmp_path / "png")
    back, _ = load_image_folder(tmp_path / "png")  # lidmem's one convention: [-1, 1]
    np.testing.assert_allclose(back, imgs[:5], atol=1.01 / 255)
    assert back.min() == -1.0 and back.max() == 1.0
    check_image_range(np.linspace(-1, 1, 10), "x")
    with pytest.raises(ValueError, match="train_images"):
        check_image_range(np.arange(256.0), "train_images")
    with pytest.warns(UserWarning, match=r"\[0, 1\]"):
        check_image_range(np.linspace(0, 1, 10), "x")
    np.save(tmp_path / "u8.npy", np.full((4, 1, 8, 8), 255.0))
    with pytest.raises(ValueError, match="u8.npy"):
        load_training_images(tmp_path / "u8.npy")


def test_out_of_range_samples_warn(oracle_audit):
    res, _ = oracle_audit
    train = res.train_images
    samples = res.sample_images * 5.0  # far outside the training images' range
    with pytest.warns(UserWarning, match="leave the training data's value range"):
        out = audit_memorization(GaussianMixtureOnSubspaces(dims=[0, 0, 0, 8], ambient_dim=64, weights=[0.1, 0.1, 0.1, 0.7], scales=0.5,
                                                            offset_scale=0.3, seed=0),
                                 train, samples=samples, lid_theta=FLIPD(None, t0=0.01, trace="hutchinson", n_probes=8), t0_sweep=None,
                                 nb_max_dim=0, lid_star=LocalPCA(k=30), progress=False)
    assert out.summary["samples_out_of_range"]["n_samples"] > 0.9 * len(samples)
    assert "flipd_t0_sweep" not in out.summary


def test_audit_estimator_objects_are_checked_before_work():
    """audit_memorization takes estimator objects; a wrong kind, another model's estimator or a bad
    normal_bundle value is refused (TypeError / ValueError) before any sampling or scoring."""
    from lidmem.estimators import JacobianRank

    gm = GaussianMixtureOnSubspaces(dims=[0, 8], ambient_dim=64, weights=[0.5, 0.5], seed=0)
    other = GaussianMixtureOnSubspaces(dims=[0, 8], ambient_dim=64, weights=[0.5, 0.5], seed=1)
    train = np.zeros((20, 1, 8, 8), np.float32)
    with pytest.raises(TypeError, match="lid_theta must be a lidmem.estimators.FLIPD"):
        audit_memorization(gm, train, samples=train, lid_theta=JacobianRank(gm))
    with pytest.raises(ValueError, match="lid_theta is a FLIPD of another model"):
        audit_memorization(gm, train, samples=train, lid_theta=FLIPD(other))
    with pytest.raises(ValueError, match="'auto'"):
        audit_memorization(gm, train, samples=train, lid_theta=FLIPD(gm, t0="knee"))
    with pytest.raises(ValueError, match="normal_bundle='yes'"):
        audit_memorization(gm, train, samples=train, normal_bundle="yes")
    with pytest.raises(TypeError, match="lid_star must be a lidmem.estimators.LocalPCA"):
        audit_memorization(gm, train, samples=train, lid_star=NormalBundle(gm))
    with pytest.raises(ValueError, match=r"lid_star.k=100 must be <= n_train - 1 = 19"):
        audit_memorization(gm, train, samples=train, lid_star=LocalPCA(k=100))
