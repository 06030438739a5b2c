"""Prompt memorization detectors (lidmem.text2image.detectors) and ``lidmem benchmark detectors``.

The peer metrics are checked against values computed by hand on a stub UNet whose conditional and
unconditional outputs are set analytically:

    eps(x; tau, e) = a(e) tanh(x) + b(e) (tau / 1000) P

with a(e), b(e) scalar functions of the prompt embedding and P a fixed pattern. Then
eps_Delta = (a_c - a_u) tanh(x) + (b_c - b_u) (tau/1000) P, d eps_Delta / dx = (a_c - a_u) sech^2(x)
(diagonal), and with s = -eps / sigma: H_Delta s_Delta = (a_c - a_u) sech^2(x) * eps_Delta / sigma^2.
The DDIM trajectory of the "all steps" sharpness is re-run in numpy from the scheduler's table.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lidmem.cli.main import app
from lidmem.text2image import TextToImageModel, prompt_metrics
from lidmem.text2image.detectors import (
    DETECTORS,
    anisotropy_score,
    anisotropy_terms,
    benchmark_detectors,
    detector_names,
    run_detector,
    sharpness_score,
    sharpness_step1_score,
)
from lidmem.text2image.testing import tiny_components

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 4


class StubUNet(nn.Module):
    """eps(x; tau, e) = a(e) tanh(x) + b(e) (tau / 1000) P, counting the rows it evaluates."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(sample_size=SIDE, in_channels=1, out_channels=1)
        g = torch.Generator().manual_seed(3)
        self.register_buffer("pattern", torch.randn(1, 1, SIDE, SIDE, generator=g))
        self.dummy = nn.Parameter(torch.zeros(()))  # device / dtype of the model
        self.rows = 0

    @staticmethod
    def a(e: torch.Tensor) -> torch.Tensor:
        return 1.0 + 0.5 * torch.tanh(3.0 * e[:, :, 0].mean(dim=1))

    @staticmethod
    def b(e: torch.Tensor) -> torch.Tensor:
        return torch.tanh(2.0 * e[:, :, 1].mean(dim=1))

    def forward(self, x: torch.Tensor, tau: torch.Tensor, encoder_hidden_states: torch.Tensor) -> SimpleNamespace:
        self.rows += x.shape[0]
        a = self.a(encoder_hidden_states).reshape(-1, 1, 1, 1)
        b = self.b(encoder_hidden_states).reshape(-1, 1, 1, 1)
        tt = (tau.reshape(-1, 1, 1, 1) / 1000.0).to(x.dtype)
        return SimpleNamespace(sample=a * torch.tanh(x) + b * tt * self.pattern + 0.0 * self.dummy)


@pytest.fixture(scope="module")
def stub_model() -> TextToImageModel:
    c = tiny_components(seed=0, latent=False)
    return TextToImageModel(StubUNet(), c["text_encoder"], c["tokenizer"], c["scheduler"]).eval()


@pytest.fixture(scope="module")
def tiny_model() -> TextToImageModel:
    c = tiny_components(seed=0, latent=False)
    return TextToImageModel(c["unet"], c["text_encoder"], c["tokenizer"], c["scheduler"]).eval()


PROMPTS = ["a red cat", "zqx house zqx", "the big dog"]


def _coefs(model: TextToImageModel, prompts: list[str]) -> tuple[np.ndarray, np.ndarray, float, float]:
    cond, uncond = model.encode_prompt(prompts)
    a_c, b_c = StubUNet.a(cond).double().numpy(), StubUNet.b(cond).double().numpy()
    a_u, b_u = float(StubUNet.a(uncond[:1])), float(StubUNet.b(uncond[:1]))
    return np.stack([a_c, b_c]), np.array([a_u, b_u]), a_u, b_u


def _eps(x: np.ndarray, a: float, b: float, k: float, P: np.ndarray) -> np.ndarray:
    return a * np.tanh(x) + b * (k / 1000.0) * P


def test_stub_coefficients_differ(stub_model):
    """The conditional branch differs from the unconditional one for every prompt (else every
    metric below would be trivially 0)."""
    (ac, bc), (au, bu), _, _ = _coefs(stub_model, PROMPTS)
    assert np.all(np.abs(ac - au) > 1e-3) and np.all(np.abs(bc - bu) > 1e-3)


def test_anisotropy_matches_hand_computation(stub_model):
    n_gen, steps, seed = 3, 10, 5
    (ac, bc), (au, bu), _, _ = _coefs(stub_model, PROMPTS)
    sch = stub_model.ddim_scheduler(steps)
    k_hi, k_lo = float(sch.timesteps[0]), float(sch.timesteps[-3])
    x = stub_model.initial_noise(n_gen, seed).double().numpy()  # x_T, pure noise
    P = stub_model.unet.pattern.double().numpy()
    want_norm, want_cos = [], []
    for j in range(len(PROMPTS)):
        e_d = _eps(x, ac[j], bc[j], k_hi, P) - _eps(x, au, bu, k_hi, P)
        want_norm.append(np.linalg.norm(e_d.reshape(n_gen, -1), axis=1).mean())
        eu = _eps(x, au, bu, k_lo, P).reshape(n_gen, -1)
        ed = (_eps(x, ac[j], bc[j], k_lo, P) - _eps(x, au, bu, k_lo, P)).reshape(n_gen, -1)
        want_cos.append(((eu * ed).sum(1) / np.linalg.norm(eu, axis=1) / np.linalg.norm(ed, axis=1)).mean())
    norm, cos = anisotropy_terms(stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps, seed=seed, batch_size=2)
    np.testing.assert_allclose(norm, want_norm, rtol=1e-5)
    np.testing.assert_allclose(cos, want_cos, rtol=1e-5, atol=1e-6)
    assert np.ptp(cos) > 0.01  # the cosines really differ between prompts
    got = anisotropy_score(stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps, seed=seed, gamma_norm=1.5, gamma_cos=-0.5)
    np.testing.assert_allclose(got, 1.5 * np.array(want_norm) - 0.5 * np.array(want_cos), rtol=1e-5)
    # the registry's default weights are the authors' SD v1.4 ones (1, 2)
    np.testing.assert_allclose(run_detector("anisotropy", stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps, seed=seed),
                               np.array(want_norm) + 2.0 * np.array(want_cos), rtol=1e-5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        anisotropy_score(stub_model, PROMPTS, num_inference_steps=2)


def _hs(x: np.ndarray, a_c: float, b_c: float, a_u: float, b_u: float, k: float, P: np.ndarray, sigma: float) -> np.ndarray:
    """||H_Delta s_Delta|| per row, by hand: (a_c - a_u) sech^2(x) eps_Delta / sigma^2."""
    e_d = _eps(x, a_c, b_c, k, P) - _eps(x, a_u, b_u, k, P)
    v = (a_c - a_u) / np.cosh(x) ** 2 * e_d / sigma**2
    return np.linalg.norm(v.reshape(x.shape[0], -1), axis=1)


def test_sharpness_step1_matches_hand_computation(stub_model):
    n_gen, steps, seed = 2, 8, 1
    (ac, bc), (au, bu), _, _ = _coefs(stub_model, PROMPTS)
    sch = stub_model.ddim_scheduler(steps)
    k = float(sch.timesteps[0])
    sigma = float(stub_model.sde.sigma(torch.tensor(stub_model.timestep_to_time(sch.timesteps[0]), dtype=torch.float64)))
    x = stub_model.initial_noise(n_gen, seed).double().numpy()
    P = stub_model.unet.pattern.double().numpy()
    want = [_hs(x, ac[j], bc[j], au, bu, k, P, sigma).mean() for j in range(len(PROMPTS))]
    got = sharpness_step1_score(stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps, seed=seed, batch_size=2)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # the guidance scale does not enter the first step
    np.testing.assert_allclose(sharpness_step1_score(stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps, seed=seed, guidance_scale=1.0), got, rtol=1e-6)


def test_sharpness_all_steps_matches_hand_ddim(stub_model):
    """||H_Delta s_Delta|| averaged over every state of a DDIM (eta = 0) CFG trajectory re-run in numpy."""
    n_gen, steps, seed, lam = 2, 4, 0, 3.0
    (ac, bc), (au, bu), _, _ = _coefs(stub_model, PROMPTS)
    sch = stub_model.ddim_scheduler(steps)
    abar = sch.alphas_cumprod.double().numpy()
    final = float(sch.final_alpha_cumprod)
    ks = [int(k) for k in sch.timesteps]
    P = stub_model.unet.pattern.double().numpy()
    want = []
    for j in range(len(PROMPTS)):
        x = stub_model.initial_noise(n_gen, seed).double().numpy()
        vals = []
        for i, k in enumerate(ks):
            sigma = np.sqrt(1 - abar[k])
            vals.append(_hs(x, ac[j], bc[j], au, bu, k, P, sigma))
            eu, ec = _eps(x, au, bu, k, P), _eps(x, ac[j], bc[j], k, P)
            eps = eu + lam * (ec - eu)
            x0 = (x - np.sqrt(1 - abar[k]) * eps) / np.sqrt(abar[k])
            a_prev = abar[ks[i + 1]] if i + 1 < len(ks) else final
            x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
        want.append(np.mean(vals))
    got = sharpness_score(stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps, guidance_scale=lam, seed=seed)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # the first max_steps states only
    got2 = sharpness_score(stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps, guidance_scale=lam, seed=seed, max_steps=1)
    np.testing.assert_allclose(got2, sharpness_step1_score(stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps, seed=seed), rtol=1e-6)
    assert not np.allclose(got, got2)


def test_model_calls_count_unet_rows(stub_model):
    """The registry's cost = the UNet rows each detector evaluates per prompt (no JVP here)."""
    n_gen, steps = 3, 6
    for name in ("anisotropy", "wen", "a_cfg"):
        stub_model.unet.rows = 0
        run_detector(name, stub_model, PROMPTS, n_generations=n_gen, num_inference_steps=steps)
        assert stub_model.unet.rows == len(PROMPTS) * DETECTORS[name].model_calls(stub_model, n_gen, steps), name


def test_registry_runs_every_detector_on_tiny_pipeline(tiny_model):
    prompts = ["a red cat", "zqx house", "a red cat"]  # a repeated prompt gets the same score (shared noise)
    kw = dict(n_generations=1, num_inference_steps=6, guidance_scale=4.0, seed=0, batch_size=2)
    names = detector_names()
    assert set(names) == {"a_cfg", "a_scfg", "a_flipd", "wen", "sharpness", "sharpness_step1", "anisotropy"}
    for name in names:
        det = DETECTORS[name]
        s = run_detector(name, tiny_model, prompts, **kw)
        assert s.shape == (3,) and np.isfinite(s).all(), name
        np.testing.assert_allclose(s[0], s[2], rtol=1e-5, err_msg=name)
        assert isinstance(det.higher_is_memorized, bool) and det.paper and det.model_calls(tiny_model, 1, 6) > 0
    # the wrapped metrics are lidmem's own prompt_metrics values
    ref = prompt_metrics(tiny_model, prompts, metrics=["a_cfg", "wen"], n_generations=1, num_inference_steps=6, guidance_scale=4.0, seed=0, batch_size=2, progress=False)
    for m in ("a_cfg", "wen"):
        np.testing.assert_allclose(run_detector(m, tiny_model, prompts, **kw), ref[m].to_numpy(), rtol=1e-6)


def test_benchmark_table_and_validation(stub_model):
    table, scores = benchmark_detectors(stub_model, PROMPTS[:2], ["the big dog", "a photo of the cat"], detectors=["wen", "anisotropy"],
                                        n_generations=2, num_inference_steps=6, seed=0)
    assert list(table.detector) == ["wen", "anisotropy"]
    assert {"auroc", "tpr_at_1pct_fpr", "model_calls_per_prompt", "seconds_per_prompt", "num_inference_steps", "n_generations", "guidance_scale"} <= set(table.columns)
    assert list(scores.memorized) == [True, True, False, False]
    np.testing.assert_allclose(scores["wen"], run_detector("wen", stub_model, list(scores.prompt), n_generations=2, num_inference_steps=6))
    assert table.model_calls_per_prompt.tolist() == [2 * 6 * 2, 4 * 2]
    with pytest.raises(ValueError, match="detectors"):
        benchmark_detectors(stub_model, ["a"], ["b"], detectors=["nope"])
    with pytest.raises(ValueError, match="A\\^FLIPD"):
        benchmark_detectors(stub_model, ["a"], ["b"], detectors=["a_flipd"], num_inference_steps=2)


def test_cli_rejects_bad_options_before_loading(tmp_path):
    r = CliRunner().invoke(app, ["benchmark", "detectors", "--out", str(tmp_path / "o"), "--num-inference-steps", "2"])
    assert r.exit_code == 2 and "--num-inference-steps" in r.output
    r = CliRunner().invoke(app, ["benchmark", "detectors", "--out", str(tmp_path / "o"), "--prompts", "only_one.txt"])
    assert r.exit_code == 2 and "MEMORIZED,GENERIC" in r.output
    r = CliRunner().invoke(app, ["benchmark", "detectors", "--out", str(tmp_path / "o"), "--detectors", "wen,foo"])
    assert r.exit_code == 2 and "foo" in r.output
    r = CliRunner().invoke(app, ["benchmark", "detectors", "--out", str(tmp_path / "o"), "--memorized", str(tmp_path / "m.txt")])
    assert r.exit_code == 2 and "--generic" in r.output
    assert not (tmp_path / "o").exists()


def test_cli_prompt_files_on_shipped_model(tmp_path):
    (tmp_path / "mem.txt").write_text("the small number seven, drawn with thin strokes in the style of plonkar\n")
    (tmp_path / "gen.txt").write_text("a photo of the digit seven\n")
    r = CliRunner().invoke(app, ["benchmark", "detectors", "--memorized", str(tmp_path / "mem.txt"), "--generic", str(tmp_path / "gen.txt"),
                                 "--detectors", "wen,anisotropy", "--n-generations", "1", "--num-inference-steps", "4", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(tmp_path / "o" / "detectors.csv")
    assert list(t.detector) == ["wen", "anisotropy"] and (t.num_inference_steps == 4).all()
    # every AUROC carries its bootstrap interval; one prompt per class gets a note, not NaN
    assert (t.auroc_ci_low <= t.auroc).all() and (t.auroc <= t.auroc_ci_high).all()
    assert t.ci_note.str.contains("only 1 positive").all() and "AUROC [95% CI]" in r.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["prompts"]["memorized"].endswith("mem.txt") and s["settings"]["n_generations"] == 1


@pytest.mark.slow
def test_cli_end_to_end_shipped_model(tmp_path):
    out = tmp_path / "bench"
    r = CliRunner().invoke(app, ["benchmark", "detectors", "--n-generations", "1", "--num-inference-steps", "10", "--n-other-prompts", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out / "detectors.csv")
    assert list(t.detector) == list(detector_names())
    assert (t.n_memorized == 16).all() and (t.n_generic == 8).all()
    # planted memorization is found: every detector beats chance on the shipped model
    assert (t.auroc > 0.75).all(), t[["detector", "auroc"]]
    scores = pd.read_csv(out / "detector_scores.csv")
    assert len(scores) == 24 and set(detector_names()) <= set(scores.columns)
    png = (out / "detectors_auroc_vs_cost.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["num_inference_steps"] == 10 and s["settings"]["guidance_scale"] == 5.0
    assert "AUROC" in r.output and "sharpness_step1" in r.output
