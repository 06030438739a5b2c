"""lidmem.models.load_model: lidmem checkpoints, diffusers folders (pixel, latent, text-to-image)
and entry points, against ground truth built in the test (no download)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lidmem.cli.main import app
from lidmem.data.images import load_digits_images, write_png_folder
from lidmem.diffusion.score import ScoreModel
from lidmem.diffusion.sde import DDPMSchedule
from lidmem.estimators import flipd, jacobian_rank
from lidmem.models import EDMDenoiser, GeneratorSpec, LatentScoreModel, load_model, sample_ddim

runner = CliRunner()
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

# --- tiny models, built from configs ------------------------------------------------------------


def _tiny_unet(in_channels: int = 1, sample_size: int = 8, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels, block_out_channels=(16, 32),
                       layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()


def _pixel_folder(root, prediction_type: str, *, index: bool = True):
    from diffusers import DDIMPipeline, DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    folder = root / f"ddim_{prediction_type}"
    DDIMPipeline(unet=_tiny_unet(), scheduler=sched).save_pretrained(folder)
    if not index:
        (folder / "model_index.json").unlink()
    return folder


def _vq():
    from diffusers import VQModel

    torch.manual_seed(1)
    return VQModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                   up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), layers_per_block=1,
                   latent_channels=2, num_vq_embeddings=32, norm_num_groups=8, sample_size=8, scaling_factor=0.7).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Pixel DDIM folders (one per prediction type), an LDM folder (vqvae/) and a folder with vae/
    but no model_index.json, plus 120 digits as training images."""
    from diffusers import AutoencoderKL, DDIMScheduler, LDMPipeline

    root = tmp_path_factory.mktemp("models")
    out = {p: _pixel_folder(root, p) for p in PREDICTION_TYPES}
    ldm = root / "ldm"
    LDMPipeline(vqvae=_vq(), unet=_tiny_unet(in_channels=2, sample_size=4, seed=2),
                scheduler=DDIMScheduler(num_train_timesteps=1000, clip_sample=False)).save_pretrained(ldm)
    out["ldm"] = ldm
    kl = root / "kl"
    torch.manual_seed(3)
    AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), latent_channels=2,
                  norm_num_groups=8, sample_size=8, scaling_factor=0.5).save_pretrained(kl / "vae")
    _tiny_unet(in_channels=2, sample_size=4, seed=4).save_pretrained(kl / "unet")
    DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction", clip_sample=False).save_pretrained(kl / "scheduler")
    out["kl"] = kl
    imgs, _ = load_digits_images()
    write_png_folder(imgs[:120], root / "train")
    out["train"] = root / "train"
    return out


# --- pixel pipelines --------------------------------------------------------------------------


@pytest.mark.parametrize("ptype", PREDICTION_TYPES)
def test_pixel_score_is_the_converted_unet_output(folders, ptype, one_thread):
    """s(x, k/999) == conversion of unet(x, k) with the scheduler's own alpha-bar at k (float64)."""
    from diffusers import DDIMScheduler, UNet2DModel

    model = load_model(folders[ptype], dtype=torch.float64)
    assert model.info.kind == "score_model" and model.info.source == "diffusers_pixel" and model.info.space == "pixel"
    unet = UNet2DModel.from_pretrained(folders[ptype], subfolder="unet", torch_dtype=torch.float64).eval()
    ab_table = DDIMScheduler.from_pretrained(folders[ptype], subfolder="scheduler").alphas_cumprod.double()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k in (3, 250, 999):
        with torch.no_grad():
            out = unet(x, torch.full((3,), k, dtype=torch.float64)).sample
            s = model(x, torch.full((3,), k / 999, dtype=torch.float64))
        ab = ab_table[k]
        if ptype == "epsilon":
            eps = out
        elif ptype == "v_prediction":
            eps = ab.sqrt() * out + (1 - ab).sqrt() * x
        else:
            eps = (x - ab.sqrt() * out) / (1 - ab).sqrt()
        expected = -eps / (1 - ab).sqrt()
        torch.testing.assert_close(s, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ptype", PREDICTION_TYPES)
def test_ddim_sampling_reproduces_ddim_pipeline(folders, ptype, one_thread):
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline.from_pretrained(folders[ptype])
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=10, eta=0.0, output_type="np").images
    model = load_model(folders[ptype])
    noise = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    x = sample_ddim(model, noise, 10)
    ours = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() <= 1e-4


def test_model_index_is_optional(folders, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(folders["epsilon"], bare)
    (bare / "model_index.json").unlink()
    a, b = load_model(folders["epsilon"]), load_model(bare)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(a(x, 0.3), b(x, 0.3))
    assert b.info.details["pipeline"] == "(no model_index.json)"


# --- latent pipelines -------------------------------------------------------------------------


def test_latent_flipd_equals_latent_score_model_on_encoded_images(folders, one_thread):
    from diffusers import DDIMScheduler, UNet2DModel, VQModel

    from lidmem.models.wrappers import UNet2DFunction

    model = load_model(folders["ldm"])
    assert isinstance(model, LatentScoreModel) and model.info.space == "latent"
    assert model.info.data_shape == (2, 4, 4) and model.info.image_shape == (1, 8, 8)
    # ground truth built here: the VQ encoder's pre-quantisation latents times the scaling factor, and
    # a ScoreModel of the latent UNet under the scheduler's alpha-bar table
    vq = VQModel.from_pretrained(folders["ldm"], subfolder="vqvae").eval()
    unet = UNet2DModel.from_pretrained(folders["ldm"], subfolder="unet").eval()
    sched = DDIMScheduler.from_pretrained(folders["ldm"], subfolder="scheduler")
    latent_model = ScoreModel(UNet2DFunction(unet), DDPMSchedule.from_scheduler(sched), prediction="epsilon").eval()
    imgs = torch.from_numpy(load_digits_images()[0][:6])
    with torch.no_grad():
        z_ref = vq.encode(imgs).latents * 0.7
    z = model.encode(imgs)
    torch.testing.assert_close(z, z_ref)
    a = flipd(model, z, t0=0.05, trace="exact")
    b = flipd(latent_model, z_ref, t0=0.05, trace="exact")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        dec = model.decode(z)
        ref = vq.decode(z_ref / 0.7).sample.clamp(-1, 1)
    torch.testing.assert_close(dec, ref)


def test_vae_folder_without_index(folders):
    model = load_model(folders["kl"])
    assert model.info.source == "diffusers_latent" and model.info.prediction == "v"
    assert "AutoencoderKL" in model.info.details["autoencoder"]
    imgs = torch.from_numpy(load_digits_images()[0][:2])
    assert model.encode(imgs).shape == (2, 2, 4, 4) and model.decode(model.encode(imgs)).shape == (2, 1, 8, 8)


# --- entry points ---------------------------------------------------------------------------------
_P = torch.linalg.qr(torch.randn(64, 5, generator=torch.Generator().manual_seed(0)))[0]  # 5-dim subspace of R^64


class SubspaceDenoiser(torch.nn.Module):
    """Exact EDM denoiser of x0 = P z, z ~ N(0, I_5): E[x0 | x0 + sigma eps = x] = P P^T x / (1 + sigma^2)."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        proj = flat @ _P.to(x.dtype) @ _P.T.to(x.dtype)
        return (proj / (1 + sigma.reshape(-1, 1) ** 2)).reshape(x.shape)


def edm_factory() -> EDMDenoiser:
    return EDMDenoiser(SubspaceDenoiser(), sigma_min=0.002, sigma_max=80.0, data_shape=(1, 8, 8))


class RankThree(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.a = torch.nn.Parameter(torch.randn(64, 3, generator=g) @ torch.randn(3, 6, generator=g) / 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ self.a.T).reshape(len(z), 1, 8, 8)


def generator_factory() -> GeneratorSpec:
    return GeneratorSpec(RankThree(), latent_dim=6, data_shape=(1, 8, 8), latent="uniform")


def not_a_model() -> int:
    return 3


def test_edm_entry_point_score_and_flipd():
    model = load_model("test_models:edm_factory")
    assert model.info.source == "entry_point" and model.info.sde["type"] == "VESDE"
    assert math.isclose(model.info.sde["sigma_range"][0], 0.002) and math.isclose(model.info.sde["sigma_range"][1], 80.0)
    x = (_P @ torch.randn(5, 4, generator=torch.Generator().manual_seed(2))).T.reshape(4, 1, 8, 8)
    t = 0.3
    sigma = float(model.sde.sigma(torch.tensor(t)))
    flat = x.reshape(4, -1)
    # analytic score of N(0, P P^T + sigma^2 I): -(P P^T x / (1 + sigma^2) + (I - P P^T) x / sigma^2)
    proj = flat @ _P @ _P.T
    expected = -(proj / (1 + sigma**2) + (flat - proj) / sigma**2)
    torch.testing.assert_close(model(x, t).reshape(4, -1), expected, rtol=1e-4, atol=1e-4)
    lid = flipd(model, x, t0=0.01, trace="exact")
    assert torch.allclose(lid, torch.full((4,), 5.0), atol=0.05)


def test_generator_entry_point_jacobian_rank():
    gen = load_model("test_models:generator_factory")
    assert gen.info.kind == "generator" and gen.latent_dim == 6 and "U[-1, 1]" in gen.info.latent
    z = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    x = gen(z)
    assert x.shape == (8, 1, 8, 8) and x.abs().max() < 1
    rank = jacobian_rank(gen, z, threshold=1e-4)
    assert rank.tolist() == [3] * 8


# --- errors -----------------------------------------------------------------------------------


def test_errors_name_what_was_found(tmp_path, folders):
    (tmp_path / "a" / "unet").mkdir(parents=True)
    with pytest.raises(ValueError, match="has unet/ but no scheduler/"):
        load_model(tmp_path / "a")
    (tmp_path / "b" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="has images/ but no unet/"):
        load_model(tmp_path / "b")
    (tmp_path / "m.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="never unpickles"):
        load_model(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="returned a int"):
        load_model("test_models:not_a_model")
    with pytest.raises(ValueError, match="cannot import module"):
        load_model("no_such_module_xyz:f")
    import shutil

    from diffusers import ScoreSdeVeScheduler

    ve = tmp_path / "ve"
    shutil.copytree(folders["epsilon"], ve)
    shutil.rmtree(ve / "scheduler")
    ScoreSdeVeScheduler().save_pretrained(ve / "scheduler")
    with pytest.raises(ValueError, match="scheduler ScoreSdeVeScheduler .* cannot map it to an SDE"):
        load_model(ve)
    res = runner.invoke(app, ["inspect", str(tmp_path / "a")])
    assert res.exit_code == 2 and "no scheduler/" in res.output


# --- CLI: inspect, audit, mmh, score on every kind ---------------------------------------------


def test_inspect_prints_what_was_detected(folders):
    from diffusers import UNet2DModel

    res = runner.invoke(app, ["inspect", str(folders["v_prediction"]), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    n_params = sum(p.numel() for p in UNet2DModel.from_pretrained(folders["v_prediction"], subfolder="unet").parameters())
    assert info["kind"] == "score_model" and info["prediction"] == "v" and info["space"] == "pixel"
    assert info["data_shape"] == [1, 8, 8] and info["n_params"] == n_params
    assert info["sde"]["type"] == "DDPMSchedule" and info["sde"]["num_train_timesteps"] == 1000
    res = runner.invoke(app, ["inspect", str(folders["ldm"])])
    assert res.exit_code == 0 and "latent" in res.stdout and "VQModel" in res.stdout


def _audit(model: str, train, out, extra: tuple[str, ...] = ()) -> dict:
    res = runner.invoke(app, ["audit", "--model", model, "--train", str(train), "--out", str(out), "--num-samples", "6",
                              "--sampling-steps", "3", "--n-probes", "1", "--n-scores", "8", "--lpca-k", "10", "--no-report", *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("kind", ["epsilon", "ldm", "t2i", "edm", "generator", "checkpoint"])
def test_audit_mmh_score_end_to_end(folders, kind, tmp_path, one_thread):
    import pandas as pd

    from lidmem.experiments.digits import shipped_digits_checkpoints

    ref = {"epsilon": str(folders["epsilon"]), "ldm": str(folders["ldm"]), "edm": "test_models:edm_factory",
           "generator": "test_models:generator_factory", "checkpoint": str(shipped_digits_checkpoints()["unet"])}.get(kind)
    if kind == "t2i":
        from importlib.resources import files

        ref = str(files("lidmem") / "weights" / "text2image")
    # the EDM model's subspace is unrelated to the training images, so the label-free t0 (matched to
    # their nearest-neighbour gap) does not apply to it: a fixed t0 where FLIPD reads its dimension
    s = _audit(ref, folders["train"], tmp_path / "audit", ("--flipd-t0", "0.1") if kind == "edm" else ())
    df = pd.read_parquet(tmp_path / "audit" / "samples.parquet")
    assert len(df) == 6
    if kind == "generator":
        assert s["model_kind"] == "generator" and df["lid_theta_jacobian"].between(0, 6).all()
        return
    assert s["lid_space"] == ("latent" if kind == "ldm" else "pixel")
    assert np.isfinite(df["lid_theta_flipd"]).all()
    if kind == "edm":  # samples of the subspace model lie near the 5-dim subspace
        assert abs(df["lid_theta_flipd"].median() - 5) < 1.5
    res = runner.invoke(app, ["mmh", "--model", ref, "--data", str(folders["train"]), "--out", str(tmp_path / "mmh"), "--k", "10",
                              "--trace", "hutchinson", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "mmh" / "mmh.csv")) == 120
    res = runner.invoke(app, ["score", "--model", ref, "--data", str(folders["train"]), "--out", str(tmp_path / "score"),
                              "--metrics", "flipd_hutchinson", "--shard-size", "60", "--no-progress"])
    assert res.exit_code == 0, res.output
    scores = pd.read_parquet(tmp_path / "score" / "scores.parquet")
    assert len(scores) == 120 and np.isfinite(scores["flipd_hutchinson"]).all()


def test_generator_rejected_by_mmh(folders, tmp_path):
    res = runner.invoke(app, ["mmh", "--model", "test_models:generator_factory", "--data", str(folders["train"]),
                              "--out", str(tmp_path / "o"), "--k", "10"])
    assert res.exit_code == 2 and "needs a score model" in " ".join(res.output.split())


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny Stable Diffusion layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    from lidmem.text2image.testing import tiny_components

    root = tmp_path_factory.mktemp("sd") / "sd"
    comps = tiny_components(latent=True)
    for name, comp in comps.items():
        comp.save_pretrained(root / name)
    return root


def test_stable_diffusion_layout_is_the_empty_prompt_latent_score(sd_folder, tmp_path, one_thread):
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    model = load_model(sd_folder)
    assert isinstance(model, LatentScoreModel) and model.info.source == "text2image_unconditional"
    assert model.info.data_shape == (4, 8, 8) and model.info.image_shape == (3, 16, 16)
    # ground truth: epsilon of the UNet given the text encoder's output for "" at timestep 400
    tok = AutoTokenizer.from_pretrained(sd_folder, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(sd_folder, subfolder="text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet").eval()
    ab = DDIMScheduler.from_pretrained(sd_folder, subfolder="scheduler").alphas_cumprod[400].double()
    ids = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb = te(ids)[0].expand(2, -1, -1)
        eps = unet(x, torch.full((2,), 400.0), encoder_hidden_states=emb).sample
        s = model(x, 400 / 999)
    torch.testing.assert_close(s, (-eps / (1 - ab).sqrt()).float(), rtol=1e-4, atol=1e-4)
    train = np.random.default_rng(0).uniform(-1, 1, (20, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "train.npy", train)
    res = runner.invoke(app, ["audit", "--model", str(sd_folder), "--train", str(tmp_path / "train.npy"), "--out", str(tmp_path / "a"),
                              "--num-samples", "3", "--sampling-steps", "2", "--n-probes", "1", "--n-scores", "4",
                              "--lpca-k", "5", "--no-report"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["lid_space"] == "latent" and summary["image_shape"] == [3, 16, 16]


@pytest.mark.slow
def test_train_then_audit_and_resume_equals_uninterrupted(folders, tmp_path, one_thread):
    """lidmem train on 200 digits; 150 + 150 resumed steps == 300 uninterrupted steps, bit for bit."""
    from safetensors.torch import load_file

    train = tmp_path / "imgs"
    write_png_folder(load_digits_images()[0][:200], train)
    full, part = tmp_path / "full.safetensors", tmp_path / "part.safetensors"
    common = ["--data", str(train), "--checkpoint-every", "100", "--no-progress", "--batch-size", "32"]
    res = runner.invoke(app, ["train", *common, "--out", str(full), "--steps", "300", "--grid", "16", "--sampling-steps", "10"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "full.samples.png").is_file()
    # the end of train says how many grid samples stay in [-1, 1], and warns when too few do
    grid = json.loads((tmp_path / "full.samples.json").read_text())
    assert grid["in_range"]["n"] == 16 and grid["steps"] == 300 and "inside the data range" in res.output
    assert grid["too_weak_to_audit"] == (grid["in_range"]["fraction"] < 0.9) == ("too weak to audit" in res.output)
    assert runner.invoke(app, ["train", *common, "--out", str(part), "--steps", "150", "--grid", "0"]).exit_code == 0
    res = runner.invoke(app, ["train", *common, "--out", str(part), "--steps", "300", "--grid", "0"])
    assert res.exit_code == 0 and "resumed from step 150" in res.output
    a, b = load_file(str(full)), load_file(str(part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = load_model(full).info
    assert info.source == "lidmem_checkpoint" and info.data_shape == (1, 8, 8)
    s = _audit(str(full), train, tmp_path / "audit")
    assert s["n_train"] == 200


class _UnitGaussianEps(torch.nn.Module):
    """Exact epsilon network of N(0, I) data under a VP SDE: x_t ~ N(0, I), so eps_hat = sigma(t) x."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from lidmem.diffusion.sde import VPSDE

        return VPSDE().sigma(t).to(x.dtype)[:, None] * x


def network_factory():
    from lidmem.diffusion.sde import VPSDE
    from lidmem.models import ScoreNetwork

    return ScoreNetwork(_UnitGaussianEps(), VPSDE(), prediction="epsilon", data_shape=(4,))


def test_score_network_entry_point():
    model = load_model("test_models:network_factory")
    assert model.info.prediction == "epsilon" and model.info.data_shape == (4,)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x, 0.4), -x)  # score of N(0, I)
    # FLIPD = d + sigma^2 (tr grad s + |s|^2) at psi x; for N(0, I): 4 + sigma^2 (-4 + psi^2 |x|^2)
    psi, sigma = float(model.sde.psi(torch.tensor(0.01))), float(model.sde.sigma(torch.tensor(0.01)))
    expected = 4 + sigma**2 * (-4 + psi**2 * (x**2).sum(1))
    torch.testing.assert_close(flipd(model, x, t0=0.01, trace="exact"), expected, rtol=1e-5, atol=1e-5)


def test_train_defaults_and_readers_agree(tmp_path):
    import io

    import pandas as pd
    from PIL import Image

    from lidmem.workflows.train import read_training_images, train_defaults

    assert train_defaults(8).block_out_channels == (32, 64) and train_defaults(8).steps == 4000
    assert train_defaults(28).block_out_channels == (32, 64, 64)
    assert train_defaults(30).block_out_channels == (32, 64)  # 30 is not divisible by 4
    assert train_defaults(64).block_out_channels == (32, 64, 128, 128)
    imgs = load_digits_images()[0][:10]
    write_png_folder(imgs, tmp_path / "f")
    pngs = []
    for im in imgs:
        buf = io.BytesIO()
        Image.fromarray(((im[0] + 1) * 127.5).round().astype(np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    pd.DataFrame({"image": pngs}).to_parquet(tmp_path / "d.parquet")
    a, _ = read_training_images(tmp_path / "f")
    b, desc = read_training_images(tmp_path / "d.parquet")
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, imgs, atol=1 / 127.5 + 1e-6)  # 8-bit quantisation in [-1, 1]
    assert desc["kind"] == "parquet" and desc["n"] == 10
    with pytest.raises(ValueError, match="square"):
        np.save(tmp_path / "r.npy", np.zeros((3, 1, 8, 6), np.float32))
        read_training_images(tmp_path / "r.npy")


def test_latent_ddim_then_decode_reproduces_ldm_pipeline(folders, one_thread):
    from diffusers import LDMPipeline

    pipe = LDMPipeline.from_pretrained(folders["ldm"])
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=8, eta=0.0, output_type="np").images
    model = load_model(folders["ldm"])
    noise = torch.randn((2, 2, 4, 4), generator=torch.Generator().manual_seed(3))
    ours = (model.decode(sample_ddim(model, noise, 8)) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() <= 1e-4 and ref.std() > 0.01


def test_train_presets(tmp_path, one_thread):
    """--preset recipes: named, validated, digits defaults untouched, and a v-prediction checkpoint
    loads back as v-prediction."""
    from lidmem.data.images import load_patches_with_duplicates
    from lidmem.diffusion.checkpoint import load_score_model
    from lidmem.workflows.train import TRAIN_PRESETS, train_defaults, train_image_model, train_settings

    assert train_settings(8) == train_defaults(8) and train_defaults(8).prediction == "epsilon"  # the digits recipe
    assert train_defaults(16).prediction == "v" and train_defaults(32).prediction == "v"
    assert set(TRAIN_PRESETS) == {"photo16", "photo32"}
    assert train_settings(16, "photo16").prediction == "v" and train_settings(32, "photo32").block_out_channels == (32, 64, 64)
    assert train_settings(30, "photo32").block_out_channels == (32, 64)  # levels cut to what the side allows
    with pytest.raises(ValueError, match="preset"):
        train_settings(16, "photo64")
    imgs = load_patches_with_duplicates(n_images=20, n_duplicated=2, n_copies=3).images
    res = train_image_model(imgs, tmp_path / "p.safetensors", preset="photo16", steps=2, batch_size=4, block_out_channels=(8, 16), progress=False)
    model = load_score_model(tmp_path / "p.safetensors")
    assert model.prediction == "v" and res.settings["prediction"] == "v"
    assert res.settings["log_uniform_fraction"] == TRAIN_PRESETS["photo16"].log_uniform_fraction
