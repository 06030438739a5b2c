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
from lidmem.memorization.audit import SAMPLE_COLUMNS, TrainingImages, audit_memorization

runner = CliRunner()


@pytest.fixture(scope="module")
def oracle_audit():
    # three point masses (each a training image duplicated 20x) + an 8-dim Gaussian (300 distinct
    # training images) in R^64 = 1x8x8 images; the exact score of the mixture is the model
    gm = GaussianMixtureOnSubspaces(dims=[0, 0, 0, 8], ambient_dim=64, weights=[0.1, 0.1, 0.1, 0.7], scales=0.5, offset_scale=0.3, seed=0)
    x, lid, comp = gm.sample(2000, seed=1)
    pm = gm.offsets[:3].to(torch.float32)
    train = torch.cat([pm.repeat_interleave(20, 0), x[comp == 3][:300]]).reshape(-1, 1, 8, 8).numpy()
    dup = np.r_[np.ones(60, bool), np.zeros(300, bool)]
    fresh = x[comp == 3][300:340]
    samples = torch.cat([pm.repeat(4, 1), fresh]).reshape(-1, 1, 8, 8).numpy()  # 12 copies, 40 new points
    tr = TrainingImages(train, [f"t{i}" for i in range(len(train))], dup)
    res = audit_memorization(gm, tr, samples=samples, flipd_t0=0.01, flipd_trace="exact", nb_t0=0.01, nb_scores=256, nb_threshold="gap",
                             lpca_k=30, lpca_radius=0.0, progress=False)
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
    paths = res.write(tmp_path)
    df = pd.read_parquet(paths["samples"])
    assert list(df.columns[: len(SAMPLE_COLUMNS)]) == SAMPLE_COLUMNS and len(df) == 52
    summary = json.loads(paths["summary"].read_text())
    assert summary["settings"]["flipd_t0"] == 0.01 and summary["detection"]
    html = paths["report"].read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table>" in html and "auroc" in html
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
                            "--lpca-k", "20", "--flipd-probes", "1", "--nb-scores", "16"])
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
    r = run("--model", str(ckpt), "--train", str(good))  # lpca_k=100 > 19 training images
    assert r.exit_code == 2 and "lpca_k=100" in r.output
    assert not (tmp_path / "o").exists()


def test_generator_checkpoint_audit(tmp_path):
    from lidmem.generators import load_generator, train_vae
    from lidmem.memorization.audit import check_audit_inputs, load_audit_model

    imgs, _ = load_digits_images()
    res = train_vae(imgs[:300], latent_dim=4, hidden=32, steps=200, seed=0, progress=False)
    path = res.save(tmp_path / "g.safetensors")
    gen, kind = load_audit_model(path)
    assert kind == "generator" and load_generator(path).latent_dim == 4
    out = audit_memorization(gen, imgs[:300], kind=kind, num_samples=40, lpca_k=20, progress=False)
    df = out.samples
    assert "lid_theta_jacobian" in df and df["lid_theta_flipd"].isna().all()
    # a decoder R^4 -> R^64 has Jacobian rank <= 4; tau is the 10th percentile, so some values fall below it
    assert df["lid_theta_jacobian"].between(0, 4).all() and df["lid_theta_jacobian"].max() == 4
    np.testing.assert_allclose(df["lid_theta_png"], df["lid_theta_jacobian"] / df["png_length"])
    with pytest.raises(ValueError, match="latent"):
        check_audit_inputs(gen, kind, imgs[:300], imgs[:5], lpca_k=20)
    with pytest.raises(ValueError, match="score_model"):
        from lidmem.memorization.audit import load_audit_model as lam
        from lidmem.diffusion.checkpoint import save_checkpoint
        from lidmem.diffusion.mlp import MLPScoreNet

        lam(save_checkpoint(tmp_path / "x.safetensors", MLPScoreNet(4, hidden=8, depth=1), kind="text2image"))
