"""Prompt memorization detectors behind one interface: lidmem's own metrics and two peers.

Every detector is a function ::

    detector(model, prompts, *, n_generations, num_inference_steps, guidance_scale, seed,
             batch_size, n_probes, progress) -> numpy array of shape (len(prompts),)

registered in :data:`DETECTORS` with its metadata (:class:`Detector`: name, paper, direction,
UNet evaluations per prompt). All detectors start from the same initial noise for every prompt
(``model.initial_noise(n_generations, seed)``, common random numbers) and average over the
``n_generations`` draws, so their numbers are comparable prompt by prompt.

Notation (score s = -eps / sigma(t), both CFG branches from one ``[uncond, cond]`` UNet batch):
s_Delta(x; t) = s(x; t, c) - s(x; t, empty) (the guidance direction), eps_Delta likewise, and
H_Delta(x; t) = d s_Delta / dx = Hess log p_t(x | c) - Hess log p_t(x) (the Hessian difference).

=================== ===================================================== ==========================
name                per-prompt value (mean over generations)              where
=================== ===================================================== ==========================
``a_cfg``           lidmem A^CFG (eq. 24), :func:`prompt_metrics`          all DDIM steps
``a_scfg``          lidmem A^{s_CFG} (eq. 25)                              all DDIM steps
``a_flipd``         lidmem A^FLIPD (eq. 26-28), small = memorized          steps with t in [0.01, 0.2]
``wen``             Wen et al. (ICLR 2024) ||eps_c - eps_empty||           all DDIM steps
``sharpness``       Jeon et al. ||H_Delta s_Delta|| (Sec. 4-5)             all DDIM steps
``sharpness_step1`` Jeon et al. ||H_Delta s_Delta|| at x_T (Sec. 5)        first step only (no denoising)
``anisotropy``      Asthana & Belagiannis: ||eps_Delta(x_T; T)||           x_T at t = T and at the
                    + gamma cos(eps_empty, eps_Delta)(x_T; t_low)          3rd-last DDIM timestep
=================== ===================================================== ==========================

Sources: the stored copies of the two peer papers (arXiv HTML) gave their abstracts and section
structure but not the method equations, so the docstrings cite sections; timesteps, weights and
norms follow the papers' text and the authors' public detection code (docs/detectors.md).

Cost (``model_calls``): UNet evaluations per prompt, one sample through the UNet once = 1, a
forward-mode JVP = 2 (primal and tangent; one JVP costs about two forward passes, measured 1.96x
on an MLP in /work/shared/NOTES.md). Both CFG branches of one sample = 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_finite, check_positive_int
from ..utils import progress as _progress
from .adapters import TextToImageModel
from ..memorization.metrics import higher_is_memorized
from .prompt_metrics import metric_time_support, prompt_metrics

__all__ = [
    "Detector",
    "DETECTORS",
    "detector_names",
    "run_detector",
    "sharpness_score",
    "sharpness_step1_score",
    "anisotropy_score",
    "benchmark_detectors",
    "plot_detector_benchmark",
    "shipped_prompt_sets",
]

#: Asthana & Belagiannis' weights of the norm and cosine terms for Stable Diffusion v1.4
#: (epsilon prediction; their official ``detect_eval.py``: gamma_1 = 1, gamma_2 = 2).
ANISOTROPY_GAMMA_NORM = 1.0
ANISOTROPY_GAMMA_COS = 2.0


@dataclass(frozen=True)
class Detector:
    """One registered prompt memorization detector.

    Attributes
    ----------
    name : str
        Registry key (also the column name in benchmark tables).
    label : str
        Short human-readable name.
    paper : str
        Where the definition comes from (authors, venue, arXiv id, equation/section).
    higher_is_memorized : bool
        The direction: True when a larger score means "memorized" (read from
        :func:`lidmem.memorization.metrics.higher_is_memorized`, where it is stated once).
    steps_used : str
        Which sampler states the detector evaluates (for the table).
    fn : callable
        ``fn(model, prompts, *, n_generations, num_inference_steps, guidance_scale, seed,
        batch_size, n_probes, progress) -> ndarray (len(prompts),)``.
    cost : callable
        ``cost(model, n_generations, num_inference_steps, n_probes) -> int``: UNet evaluations
        per prompt (module docstring for the convention).
    """

    name: str
    label: str
    paper: str
    higher_is_memorized: bool
    steps_used: str
    fn: Callable[..., np.ndarray]
    cost: Callable[[TextToImageModel, int, int, int], int]

    def model_calls(self, model: TextToImageModel, n_generations: int, num_inference_steps: int, n_probes: int = 1) -> int:
        """UNet evaluations per prompt at these settings."""
        return int(self.cost(model, n_generations, num_inference_steps, n_probes))

    @property
    def larger_is_memorized(self) -> bool:
        """Deprecated alias of :attr:`higher_is_memorized`."""
        import warnings

        warnings.warn("Detector.larger_is_memorized is deprecated; use higher_is_memorized", DeprecationWarning, stacklevel=2)
        return self.higher_is_memorized


# ------------------------------------------------------------------------------------- helpers
def _check_prompts(prompts: Any) -> list[str]:
    p = [prompts] if isinstance(prompts, str) else list(prompts) if isinstance(prompts, (list, tuple)) else None
    if not p or not all(isinstance(q, str) for q in p):
        raise TypeError("prompts must be a string or a non-empty list of strings")
    return p


def _sigma(model: TextToImageModel, t: float) -> float:
    return float(model.sde.sigma(torch.tensor(float(t), dtype=torch.float64)))


def _batches(prompts: list[str], batch_size: int) -> list[list[str]]:
    b = check_positive_int(batch_size, "batch_size")
    return [prompts[i : i + b] for i in range(0, len(prompts), b)]


def _prompt_rows(model: TextToImageModel, batch: list[str], n_gen: int) -> torch.Tensor:
    """Prompt-major conditioning: prompt j's generations are rows j*n_gen .. (j+1)*n_gen - 1."""
    return model.encode_prompt(batch)[0].repeat_interleave(n_gen, dim=0)


def _score_difference(model: TextToImageModel, x: torch.Tensor, t: float, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """s_Delta(x; t) = s(x; t, c) - s(x; t, empty), shape of ``x`` (one ``[uncond, cond]`` batch)."""
    out_u, out_c = model.branch_outputs(x, t, cond, uncond)
    return model.output_to_score(out_c, x, t) - model.output_to_score(out_u, x, t)


def hessian_difference_product(
    model: TextToImageModel, x: torch.Tensor, t: float, cond: torch.Tensor, uncond: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """H_Delta(x; t) v = (d s_Delta / dx) v by one forward-mode JVP (``torch.func.jvp``) through
    both CFG branches; shape of ``x``, through the same JVP as FLIPD
    (:func:`lidmem.estimators._autodiff.jvp`)."""
    from ..estimators import _autodiff

    x = x.detach().contiguous()
    v = v.detach().to(x.dtype).contiguous()
    # the core's JVP: minimal forward-mode rules under no_grad, math attention (as FLIPD)
    with torch.no_grad():
        _, hv = _autodiff.jvp(lambda inp: _score_difference(model, inp, t, cond, uncond), model, x, v)
    return hv


def _check_common(n_generations: int, num_inference_steps: int, guidance_scale: float, batch_size: int, n_probes: int) -> tuple[int, int, float]:
    n_gen = check_positive_int(n_generations, "n_generations")
    steps = check_positive_int(num_inference_steps, "num_inference_steps")
    lam = check_finite(guidance_scale, "guidance_scale")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(n_probes, "n_probes")
    return n_gen, steps, lam


# ------------------------------------------------------------------ Jeon, Kim & No (ICML 2025)
def sharpness_score(
    model: TextToImageModel,
    prompts: str | Sequence[str],
    *,
    n_generations: int = 4,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    batch_size: int = 8,
    n_probes: int = 1,
    max_steps: int | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Jeon, Kim & No's sharpness metric ||H_Delta(x_t) s_Delta(x_t)|| along CFG sampling.

    Jeon, Kim & No, "Understanding and Mitigating Memorization in Generative Models via Sharpness
    of Probability Landscapes", ICML 2025, arXiv 2412.04140 (v3). Sec. 4 shows that Wen et al.'s
    score-difference norm ||s_Delta|| measures the sharpness (large negative Hessian eigenvalues of
    log p(x | c) relative to log p(x)); Sec. 5 sharpens it into the Hessian-score product
    H_Delta s_Delta, whose norm weights s_Delta by the curvature along it (the detection metric of
    their Table 1, computed with a JVP in their official ``detect_mem.py``; n = ``n_generations``,
    "steps" = the number of sampler steps averaged). Per state x_t of the DDIM CFG trajectory
    (eta = 0, lambda = ``guidance_scale``)::

        value(x_t) = || H_Delta(x_t; t) s_Delta(x_t; t) ||_2,
        s_Delta = s(., c) - s(., empty),  H_Delta v = d/de s_Delta(x_t + e v) at e = 0,

    computed exactly with one ``torch.func.jvp`` through both branches (no finite difference).
    The score is the mean over the first ``max_steps`` steps (default all
    ``num_inference_steps``) and over generations; larger = memorized (sharper).

    The norm is not squared (the official implementation averages the unsquared norm).
    ``n_probes`` is accepted for the common signature and unused (the metric is deterministic).

    Returns
    -------
    ndarray of shape (len(prompts),), float64
    """
    prompts_l = _check_prompts(prompts)
    n_gen, steps, lam = _check_common(n_generations, num_inference_steps, guidance_scale, batch_size, n_probes)
    k_max = steps if max_steps is None else min(check_positive_int(max_steps, "max_steps"), steps)
    noise = model.initial_noise(n_gen, seed)
    uncond = model.unconditional_embeds(1)
    out = []
    for batch in _progress(_batches(prompts_l, batch_size), desc="sharpness", disable=None if progress is None else not progress):
        P = len(batch)
        cond = _prompt_rows(model, batch, n_gen)
        sums = torch.zeros(P, dtype=torch.float64)
        count = 0

        def callback(state: dict[str, Any]) -> None:
            nonlocal count
            if state["step"] >= k_max:
                return
            t = state["t"]
            # the sampler's own branch predictions give s_Delta = -(eps_c - eps_u) / sigma: no extra UNet call
            s_delta = -(state["eps_cond"] - state["eps_uncond"]) / _sigma(model, t)
            hv = hessian_difference_product(model, state["x"], t, cond, uncond, s_delta)
            sums.add_(hv.detach().double().flatten(1).norm(dim=1).cpu().reshape(P, n_gen).sum(1))
            count += n_gen

        if k_max == steps:
            model.sample(cond, uncond, n=P * n_gen, num_inference_steps=steps, guidance_scale=lam,
                         latents=noise.repeat(P, *([1] * (noise.ndim - 1))), callback=callback, progress=False)
        else:
            _sample_first_steps(model, cond, uncond, noise.repeat(P, *([1] * (noise.ndim - 1))), steps, k_max, lam, callback)
        out.append((sums / count).numpy())
    return np.concatenate(out)


def _sample_first_steps(
    model: TextToImageModel, cond: torch.Tensor, uncond: torch.Tensor, x: torch.Tensor, steps: int, k_max: int, lam: float,
    callback: Callable[[dict[str, Any]], None],
) -> None:
    """The first ``k_max`` steps of :meth:`TextToImageModel.sample` (same states, same callback
    dict), stopping there instead of running the whole trajectory."""
    sch = model.ddim_scheduler(steps)
    x = x.to(device=model.device, dtype=model.dtype) * sch.init_noise_sigma
    for i, k in enumerate(sch.timesteps[:k_max]):
        t = model.timestep_to_time(k)
        with torch.no_grad():
            out_u, out_c = model.branch_outputs(x, t, cond, uncond)
            guided = out_u + lam * (out_c - out_u)
        callback({"step": i, "timestep": int(k), "t": t, "x": x, "eps_uncond": model.output_to_epsilon(out_u, x, t),
                  "eps_cond": model.output_to_epsilon(out_c, x, t), "eps": model.output_to_epsilon(guided, x, t)})
        if i + 1 < k_max:
            x = sch.step(guided, k, x, eta=0.0).prev_sample


def sharpness_step1_score(
    model: TextToImageModel,
    prompts: str | Sequence[str],
    *,
    n_generations: int = 4,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    batch_size: int = 8,
    n_probes: int = 1,
    progress: bool | None = None,
) -> np.ndarray:
    """Jeon et al.'s initial-stage ("step-one") sharpness ||H_Delta(x_T) s_Delta(x_T)|| on pure noise.

    arXiv 2412.04140 (v3), Sec. 5: the sharpness metric evaluated at the initial noise x_T ~ N(0, I)
    and the first DDIM timestep T of a ``num_inference_steps`` grid, before any denoising (their
    Table 1 with steps = 1). Same quantity as :func:`sharpness_score` with ``max_steps=1``:
    2 branch evaluations for s_Delta plus one JVP through both branches per generation.
    Independent of ``guidance_scale`` (no step is taken); larger = memorized.

    Returns
    -------
    ndarray of shape (len(prompts),), float64
    """
    return sharpness_score(model, prompts, n_generations=n_generations, num_inference_steps=num_inference_steps,
                           guidance_scale=guidance_scale, seed=seed, batch_size=batch_size, n_probes=n_probes,
                           max_steps=1, progress=progress)


# ------------------------------------------------------- Asthana & Belagiannis (ICLR 2026)
def anisotropy_terms(
    model: TextToImageModel,
    prompts: str | Sequence[str],
    *,
    n_generations: int = 4,
    num_inference_steps: int = 20,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The two terms of Asthana & Belagiannis' metric, each averaged over generations.

    ``(norm, cos)`` with, for the pure-noise input x_T ~ N(0, I) (no denoising step):
    norm = ||eps(x_T; T, c) - eps(x_T; T, empty)||_2 at the first DDIM timestep T (the isotropic,
    high-noise term), and cos = cos(eps(x_T; t_low, empty), eps(x_T; t_low, c) -
    eps(x_T; t_low, empty)) at the low-noise timestep t_low = the third-to-last DDIM timestep of the
    ``num_inference_steps`` grid, the same x_T fed at that time (the anisotropic term: alignment
    of the guidance vector with the unconditional score; cos(s_empty, s_Delta) equals the
    epsilon form since s = -eps / sigma). The cosine is over the whole flattened vector.
    """
    prompts_l = _check_prompts(prompts)
    n_gen = check_positive_int(n_generations, "n_generations")
    steps = check_positive_int(num_inference_steps, "num_inference_steps")
    if steps < 3:
        raise ValueError(f"num_inference_steps={steps} must be >= 3: the anisotropy metric reads the third-to-last DDIM timestep")
    sch = model.ddim_scheduler(steps)
    t_hi = model.timestep_to_time(sch.timesteps[0])
    t_lo = model.timestep_to_time(sch.timesteps[-3])
    noise = model.initial_noise(n_gen, seed) * sch.init_noise_sigma
    uncond = model.unconditional_embeds(1)
    norms, coss = [], []
    for batch in _progress(_batches(prompts_l, batch_size), desc="anisotropy", disable=None if progress is None else not progress):
        P = len(batch)
        cond = _prompt_rows(model, batch, n_gen)
        x = noise.repeat(P, *([1] * (noise.ndim - 1)))
        with torch.no_grad():
            eu, ec = model.branch_epsilons(x, t_hi, cond, uncond)
            norm = (ec - eu).double().flatten(1).norm(dim=1)
            eu, ec = model.branch_epsilons(x, t_lo, cond, uncond)
            cos = torch.nn.functional.cosine_similarity(eu.double().flatten(1), (ec - eu).double().flatten(1), dim=1)
        norms.append(norm.cpu().reshape(P, n_gen).mean(1).numpy())
        coss.append(cos.cpu().reshape(P, n_gen).mean(1).numpy())
    return np.concatenate(norms), np.concatenate(coss)


def anisotropy_score(
    model: TextToImageModel,
    prompts: str | Sequence[str],
    *,
    n_generations: int = 4,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    batch_size: int = 8,
    n_probes: int = 1,
    gamma_norm: float = ANISOTROPY_GAMMA_NORM,
    gamma_cos: float = ANISOTROPY_GAMMA_COS,
    progress: bool | None = None,
) -> np.ndarray:
    """Asthana & Belagiannis' denoising-free metric: gamma_norm * norm + gamma_cos * cos.

    Asthana & Belagiannis, "Detecting and Mitigating Memorization in Diffusion Models through
    Anisotropy of the Log-Probability", ICLR 2026, arXiv 2601.20642, Sec. 4: norm-based metrics
    (the isotropic term, Sec. 3-4.1) are effective at high noise; at low noise the log-probability
    is anisotropic and memorized prompts show a strong angular alignment between the guidance
    vector s_Delta and the unconditional score (Sec. 4.1-4.2); the detection metric integrates the
    two, computed on pure noise with one conditional and one unconditional pass at each of the two
    timesteps (4 UNet evaluations per generation, no denoising step). Terms and timesteps:
    :func:`anisotropy_terms`. The weights default to the authors' Stable Diffusion v1.4 setting
    (gamma_1 = 1 on the norm, gamma_2 = 2 on the cosine, their ``detect_eval.py``); the paper tunes
    them per model (SD v2: 1 and 0.1). The equation numbers of the arXiv HTML could not be read from
    the stored copy; the definitions follow the paper's Sec. 4 text and the authors' code.

    Larger = memorized. ``guidance_scale`` and ``n_probes`` are accepted for the common signature
    and unused (the metric never combines the branches).

    Returns
    -------
    ndarray of shape (len(prompts),), float64
    """
    g1 = check_finite(gamma_norm, "gamma_norm")
    g2 = check_finite(gamma_cos, "gamma_cos")
    _check_common(n_generations, num_inference_steps, guidance_scale, batch_size, n_probes)
    norm, cos = anisotropy_terms(model, prompts, n_generations=n_generations, num_inference_steps=num_inference_steps,
                                 seed=seed, batch_size=batch_size, progress=progress)
    return g1 * norm + g2 * cos


# ---------------------------------------------------------------- lidmem's existing metrics
def _wrap_prompt_metric(metric: str) -> Callable[..., np.ndarray]:
    def fn(
        model: TextToImageModel,
        prompts: str | Sequence[str],
        *,
        n_generations: int = 4,
        num_inference_steps: int = 20,
        guidance_scale: float = 5.0,
        seed: int = 0,
        batch_size: int = 8,
        n_probes: int = 1,
        progress: bool | None = None,
    ) -> np.ndarray:
        df = prompt_metrics(model, _check_prompts(prompts), metrics=[metric], n_generations=n_generations,
                            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                            batch_size=batch_size, n_probes=n_probes, progress=progress)
        return df[metric].to_numpy(dtype=np.float64)

    fn.__name__ = f"{metric}_score"
    fn.__doc__ = f"lidmem's ``{metric}`` from :func:`lidmem.text2image.prompt_metrics` (its defaults for the other settings)."
    return fn


def _flipd_steps(model: TextToImageModel, steps: int) -> int:
    lo, hi = metric_time_support("a_flipd")
    return sum(1 for k in model.ddim_scheduler(steps).timesteps if 0 < model.timestep_to_time(k) and lo <= model.timestep_to_time(k) <= hi)


_PAPER_LIDMEM = "Ross, Kamkari et al., ICLR 2025 (this project's paper), App. D.2"

#: The registry, in table order.
DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector("a_cfg", "A^CFG", f"{_PAPER_LIDMEM}, eq. 24", higher_is_memorized("a_cfg"), "all DDIM steps",
                 _wrap_prompt_metric("a_cfg"), lambda m, n, s, p: 2 * s * n),
        Detector("a_scfg", "A^{s_CFG}", f"{_PAPER_LIDMEM}, eq. 25", higher_is_memorized("a_scfg"), "all DDIM steps",
                 _wrap_prompt_metric("a_scfg"), lambda m, n, s, p: 2 * s * n),
        Detector("a_flipd", "A^FLIPD", f"{_PAPER_LIDMEM}, eq. 26-28", higher_is_memorized("a_flipd"), "trajectory; FLIPD at t in [0.01, 0.2]",
                 _wrap_prompt_metric("a_flipd"), lambda m, n, s, p: n * (2 * s + 4 * p * _flipd_steps(m, s))),
        Detector("wen", "Wen et al.", "Wen et al., ICLR 2024, 'Detecting, explaining and mitigating memorization in diffusion models', Sec. 3",
                 higher_is_memorized("wen"), "all DDIM steps", _wrap_prompt_metric("wen"), lambda m, n, s, p: 2 * s * n),
        Detector("sharpness", "Jeon et al. sharpness", "Jeon, Kim & No, ICML 2025, arXiv 2412.04140, Sec. 4-5 (||H_Delta s_Delta||)",
                 higher_is_memorized("sharpness"), "all DDIM steps (+1 JVP per step)", sharpness_score, lambda m, n, s, p: n * 6 * s),
        Detector("sharpness_step1", "Jeon et al. step one", "Jeon, Kim & No, ICML 2025, arXiv 2412.04140, Sec. 5 (initial stage, steps = 1)",
                 higher_is_memorized("sharpness_step1"), "x_T at the first timestep (no denoising)", sharpness_step1_score, lambda m, n, s, p: n * 6),
        Detector("anisotropy", "Asthana & Belagiannis", "Asthana & Belagiannis, ICLR 2026, arXiv 2601.20642, Sec. 4 (norm + gamma * cosine)",
                 higher_is_memorized("anisotropy"), "x_T at t = T and at the 3rd-last timestep (no denoising)", anisotropy_score, lambda m, n, s, p: n * 4),
    )
}

def detector_names() -> tuple[str, ...]:
    """Names of the registered detectors, in table order."""
    return tuple(DETECTORS)


def run_detector(
    name: str,
    model: TextToImageModel,
    prompts: str | Sequence[str],
    *,
    n_generations: int = 4,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    batch_size: int = 8,
    n_probes: int = 1,
    progress: bool | None = None,
) -> np.ndarray:
    """Scores ``(len(prompts),)`` of the registered detector ``name`` (direction:
    ``DETECTORS[name].higher_is_memorized``)."""
    check_choice(name, "detector", detector_names())
    return DETECTORS[name].fn(model, prompts, n_generations=n_generations, num_inference_steps=num_inference_steps,
                              guidance_scale=guidance_scale, seed=seed, batch_size=batch_size, n_probes=n_probes, progress=progress)


def benchmark_detectors(
    model: TextToImageModel,
    memorized: Sequence[str],
    generic: Sequence[str],
    *,
    detectors: Sequence[str] | None = None,
    n_generations: int = 4,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    batch_size: int = 8,
    n_probes: int = 1,
    progress: bool | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Any, Any]:
    """Run detectors on the same prompt sets with the same seeds; AUROC, TPR@1%FPR and cost.

    Parameters
    ----------
    memorized, generic : list of str
        Prompts labelled memorized (positives) and not.
    detectors : list of str, optional
        Registry names (default: all of :data:`DETECTORS`).
    on_result : callable, optional
        Called with each finished table row (progress output).

    Returns
    -------
    table : pandas.DataFrame
        One row per detector: ``detector``, ``label``, ``auroc``, ``tpr_at_1pct_fpr``, their 95%
        bootstrap intervals over prompts (``auroc_ci_low`` / ``_high``, ``tpr_at_1pct_fpr_ci_low`` /
        ``_high``, ``ci_note``; :func:`lidmem.memorization.metrics.bootstrap_interval` seeded with
        ``seed``), ``model_calls_per_prompt``, ``seconds_per_prompt``, ``higher_is_memorized``,
        ``steps_used``, ``paper``, the settings (``n_generations``, ``num_inference_steps``,
        ``guidance_scale``, ``seed``, ``n_probes``) and the counts.
    scores : pandas.DataFrame
        One row per prompt: ``prompt``, ``memorized``, one column per detector.
    """
    import pandas as pd

    from ..memorization.metrics import detection_table, interval_columns

    for value, label in ((memorized, "memorized"), (generic, "generic")):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{label} must be a non-empty list of prompt strings; got {type(value).__name__}")
    mem = _check_prompts(list(memorized))
    gen = _check_prompts(list(generic))
    names = detector_names() if detectors is None else tuple(detectors)
    if not names:
        raise ValueError(f"detectors is empty; choose from {', '.join(detector_names())}")
    for n in names:
        check_choice(n, "detectors", detector_names())
    n_gen, steps, lam = _check_common(n_generations, num_inference_steps, guidance_scale, batch_size, n_probes)
    if "anisotropy" in names and steps < 3:
        raise ValueError(f"num_inference_steps={steps} must be >= 3 for the anisotropy detector")
    if "a_flipd" in names and _flipd_steps(model, steps) == 0:
        lo, hi = metric_time_support("a_flipd")
        raise ValueError(f"no DDIM step of num_inference_steps={steps} falls in A^FLIPD's [{lo}, {hi}]; increase num_inference_steps or leave out a_flipd")
    prompts = mem + gen
    labels = np.array([True] * len(mem) + [False] * len(gen))
    scores = pd.DataFrame({"prompt": prompts, "memorized": labels})
    rows = []
    for name in names:
        det = DETECTORS[name]
        t0 = time.perf_counter()
        s = det.fn(model, prompts, n_generations=n_gen, num_inference_steps=steps, guidance_scale=lam, seed=seed,
                   batch_size=batch_size, n_probes=n_probes, progress=progress)
        elapsed = time.perf_counter() - t0
        scores[name] = s
        (r,) = detection_table(labels, {name: s}, higher_is_positive=det.higher_is_memorized, seed=seed)
        row = {
            "detector": name, "label": det.label, "auroc": r["auroc"], "tpr_at_1pct_fpr": r["tpr_at_1pct_fpr"], **interval_columns(r),
            "model_calls_per_prompt": det.model_calls(model, n_gen, steps, n_probes), "seconds_per_prompt": elapsed / len(prompts),
            "higher_is_memorized": det.higher_is_memorized, "steps_used": det.steps_used, "paper": det.paper,
            "n_generations": n_gen, "num_inference_steps": steps, "guidance_scale": lam, "seed": seed, "n_probes": n_probes,
            "n_memorized": r["n_positive"], "n_generic": r["n_negative"],
        }
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return pd.DataFrame(rows), scores


def shipped_prompt_sets(path: str | None = None, *, n_other_prompts: int = 32, seed: int = 0) -> tuple[list[str], list[str]]:
    """The memorized and generic prompt sets of ``lidmem demo text2image`` for a model built by
    ``scripts/train_text2image.py`` (default: the shipped one): the planted memorized captions
    (from the model's ``lidmem.json`` data settings) and ``toydata.non_memorized_prompts(
    n_other_prompts, seed=seed + 1)``, exactly as the demo builds them.

    Raises
    ------
    ValueError
        If the folder has no ``lidmem.json`` (then give prompt files instead).
    """
    import json
    from pathlib import Path

    from . import toydata

    folder = Path(toydata.shipped_text2image_path() if path is None else path)
    meta_file = folder / "lidmem.json"
    if not meta_file.is_file():
        raise ValueError(f"{folder} has no lidmem.json, so it has no planted prompt sets; give prompt files (--prompts MEM,GEN)")
    meta = json.loads(meta_file.read_text())
    data = toydata.make_captioned_digits(**{k: meta["data"][k] for k in ("n_memorized", "n_duplicates", "seed")})
    mem = [data.captions[i] for i in data.memorized_indices]
    gen = toydata.non_memorized_prompts(check_positive_int(n_other_prompts, "n_other_prompts"), seed=seed + 1)
    return mem, gen


def plot_detector_benchmark(table: Any, path: Any, *, title: str | None = None) -> None:
    """AUROC against cost (UNet evaluations per prompt, log x-axis), one labelled point per
    detector, saved to ``path`` (format from the suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    markers = "osD^vP*Xh<>"
    for i, (_, r) in enumerate(table.iterrows()):
        ax.scatter(float(r["model_calls_per_prompt"]), float(r["auroc"]), s=44, marker=markers[i % len(markers)], alpha=0.85,
                   label=f"{r['label']} (AUROC {float(r['auroc']):.2f})")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel("UNet evaluations per prompt (log scale; a JVP counts 2)")
    ax.set_ylabel("AUROC (memorized vs generic prompts)")
    ax.set_ylim(min(0.0, float(table["auroc"].min()) - 0.05), 1.05)
    ax.axhline(0.5, color="0.7", lw=0.8, ls="--")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
