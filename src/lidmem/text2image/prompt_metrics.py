"""Prompt-level memorization metrics (App. D.2) and Wen et al.'s detection score.

With the DDIM variable x~ = x / psi, sigma~ s~ = sigma s, so every metric can be written with the
noise predictions eps = -sigma s of the model at the sampler's states x_t:

=========== ================================================================ ================
metric      per-step value at (x_t, t)                                        T (steps used)
=========== ================================================================ ================
``a_cfg``   sigma^2 ||s_CFG - s_empty||^2 = ||eps_CFG - eps_empty||^2 (eq. 24)  U(0, 1]: all
``a_scfg``  sigma^2 ||s_CFG||^2 = ||eps_CFG||^2                      (eq. 25)  U(0, 1]: all
``a_flipd`` FLIPD_CFG(x_t; t, c) = d - sigma tr grad eps_CFG + ||eps_CFG||^2     U[0.01, 0.2]
            (eq. 26-28; Hutchinson trace, both CFG branches)
``wen``     ||eps_c - eps_empty|| (Wen et al. 2024, not squared, no lambda)    U(0, 1]: all
=========== ================================================================ ================

Estimator (documented, deterministic under ``seed``): ``n_generations`` DDIM trajectories
(eta = 0, ``num_inference_steps`` steps, guidance ``lambda = guidance_scale``) start from the same
noise for every prompt (common random numbers, drawn from ``seed``); the x_t are the states at
which the sampler evaluates the UNet, and the expectation over t ~ T is the average over the
sampler's timesteps that fall in T's support (the DDIM grid is uniform in t, so this is a
midpoint-style quadrature of the uniform distribution).

A^FLIPD's support starts at ``flipd_t_min`` = 0.01 rather than 0 (the paper's (0, 0.2]): FLIPD at
t0 -> 0 measures the network's error at vanishing noise, not LID (Kamkari et al. 2024 choose t0
away from 0), and DDIM grids with ``steps_offset=1`` (Stable Diffusion's) end with a step at
t = 0.001. On the shipped small model that one step reverses the ranking (per-step AUROC 0.00
there, 0.96-1.00 at t = 0.05-0.15; docs/text2image-demo.md); ``flipd_t_min=0`` restores (0, 0.2]. A^CFG and A^{s_CFG} (eq. 24-25) drop
the constant lambda^-2 as the paper does; large = memorized. A^FLIPD: small = memorized.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..memorization.metrics import higher_is_memorized
from .._validation import check_choice, check_positive_int, check_probability, make_generator, renamed_argument
from ..data.io import CAPTION_COLUMNS  # the one list of caption column names (re-exported here)
from ..utils import progress as _progress
from .adapters import TextToImageModel
from .image_scores import cfg_flipd_at

__all__ = ["PROMPT_METRICS", "FLIPD_POINTS", "step_metric", "metric_time_support", "prompt_metrics", "read_prompts", "detection_table"]

PROMPT_METRICS: tuple[str, ...] = ("a_cfg", "a_scfg", "a_flipd", "wen")
#: Where A^FLIPD evaluates FLIPD_CFG: the sampler state x_t, or psi(t) times its denoised estimate.
FLIPD_POINTS: tuple[str, ...] = ("state", "denoised")
#: Direction of each metric: True when a larger value means "memorized".
# the direction of each metric is stated once, in lidmem.memorization.metrics.HIGHER_IS_MEMORIZED


def __getattr__(name: str) -> Any:
    if name == "LARGER_IS_MEMORIZED":  # deprecated alias (one release)
        import warnings

        warnings.warn("LARGER_IS_MEMORIZED is deprecated; use lidmem.memorization.metrics.higher_is_memorized(name)", DeprecationWarning, stacklevel=2)
        return {m: higher_is_memorized(m) for m in PROMPT_METRICS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def metric_time_support(metric: str, flipd_t_min: float = 0.01, flipd_t_max: float = 0.2) -> tuple[float, float]:
    """Support ``(lo, hi)`` of the scheduling distribution T of ``metric``: the sampler steps with
    ``0 < t`` and ``lo <= t <= hi`` are used. (0, 1] for A^CFG, A^{s_CFG} and Wen's score,
    [flipd_t_min, flipd_t_max] for A^FLIPD.

    Raises
    ------
    ValueError
        If not ``0 <= flipd_t_min < flipd_t_max <= 1``.
    """
    check_choice(metric, "metric", PROMPT_METRICS)
    lo = check_probability(flipd_t_min, "flipd_t_min", low=0.0, high=1.0)
    hi = check_probability(flipd_t_max, "flipd_t_max", low=0.0, high=1.0)
    if not lo < hi:
        raise ValueError(f"flipd_t_min={lo} must be smaller than flipd_t_max={hi}; the paper's A^FLIPD uses (0, 0.2]")
    return (lo, hi) if metric == "a_flipd" else (0.0, 1.0)


def _in_support(t: float, support: tuple[float, float]) -> bool:
    return t > 0 and support[0] <= t <= support[1]


def _no_step_error(steps: int, support: tuple[float, float]) -> ValueError:
    return ValueError(
        f"no DDIM step of num_inference_steps={steps} falls in [{support[0]}, {support[1]}] (A^FLIPD's flipd_t_min, flipd_t_max); "
        "increase num_inference_steps or widen flipd_t_min / flipd_t_max"
    )


def _denoised_point(model: TextToImageModel, x_t: torch.Tensor, t: float, eps_cfg: torch.Tensor) -> torch.Tensor:
    """psi(t) x0_hat = x_t - sigma(t) eps_CFG(x_t): where ``flipd_point="denoised"`` evaluates FLIPD."""
    sigma = float(model.sde.sigma(torch.tensor(float(t), dtype=torch.float64)))
    return x_t - sigma * eps_cfg


def _eps_metric(metric: str, eps_u: torch.Tensor, eps_c: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Per-sample ``(n,)`` integrand of ``a_cfg``, ``a_scfg`` or ``wen`` from the two branch
    noise predictions (the table in the module docstring)."""
    eps_u, eps_c = eps_u.float(), eps_c.float()
    lam = float(guidance_scale)
    if metric == "wen":
        return (eps_c - eps_u).flatten(1).norm(dim=1)
    if metric == "a_cfg":
        return (lam * (eps_c - eps_u)).flatten(1).pow(2).sum(1)
    return (eps_u + lam * (eps_c - eps_u)).flatten(1).pow(2).sum(1)


def step_metric(
    model: TextToImageModel,
    metric: str,
    x_t: torch.Tensor,
    t: float,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
    *,
    n_probes: int = 1,
    trace: str = "hutchinson",
    seed: int | torch.Generator | None = 0,
    flipd_point: str = "state",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample value ``(n,)`` of ``metric``'s integrand at (x_t, t), differentiable in ``cond``.

    ``flipd_point`` (A^FLIPD only): "state" evaluates FLIPD_CFG at the sampler state x_t (eq. 28
    as written); "denoised" at psi(t) x0_hat = x_t - sigma(t) eps_CFG(x_t) (eq. 6's clean-point
    form, x0_hat held fixed). ``seed`` (int or ``torch.Generator``) draws A^FLIPD's Hutchinson
    probes; ``generator`` is its deprecated alias.
    """
    seed = renamed_argument(seed, generator, new="seed", old="generator", default=0, func="step_metric")
    check_choice(metric, "metric", PROMPT_METRICS)
    check_choice(flipd_point, "flipd_point", FLIPD_POINTS)
    x_t = x_t.detach()
    if metric == "a_flipd":
        if flipd_point == "denoised":
            with torch.no_grad():
                x_t = _denoised_point(model, x_t, t, model.epsilon(x_t, t, cond.detach(), uncond, guidance_scale))
        return cfg_flipd_at(model, x_t, t, cond, uncond, guidance_scale, trace=trace, n_probes=n_probes, seed=seed)
    eps_u, eps_c = model.branch_epsilons(x_t, t, cond, uncond)
    return _eps_metric(metric, eps_u, eps_c, guidance_scale)


def prompt_metrics(
    model: TextToImageModel,
    prompts: str | Sequence[str],
    *,
    metrics: Sequence[str] = PROMPT_METRICS,
    n_generations: int = 4,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    flipd_t_max: float = 0.2,
    flipd_t_min: float = 0.01,
    n_probes: int = 1,
    trace: str = "hutchinson",
    seed: int = 0,
    batch_size: int = 8,
    flipd_point: str = "state",
    progress: bool | None = None,
) -> Any:
    """Estimate prompt memorization metrics for each prompt.

    Parameters
    ----------
    prompts : str or list of str
    metrics : subset of {"a_cfg", "a_scfg", "a_flipd", "wen"}
    n_generations : int, default=4
        DDIM trajectories per prompt (N in eq. 15).
    num_inference_steps : int, default=50
        DDIM steps (the paper uses 50); A^FLIPD uses the steps with
        ``flipd_t_min <= t <= flipd_t_max`` (9 of 50 for Stable Diffusion, t = 0.021 .. 0.181).
    guidance_scale : float, default=7.5
        lambda of the CFG sampler and of s_CFG.
    flipd_t_max, flipd_t_min : float, default=0.2, 0.01
        Support [flipd_t_min, flipd_t_max] of T for A^FLIPD (the paper: (0, 0.2]; see the
        module docstring for the lower end).
    n_probes : int, default=1
        Hutchinson probes per state for A^FLIPD.
    seed : int, default=0
        Initial noise (the same for every prompt) and Hutchinson probes.
    flipd_point : {"state", "denoised"}, default="state"
        Where A^FLIPD evaluates FLIPD_CFG: at the sampler state x_t (eq. 28 as written) or at
        psi(t) x0_hat(x_t) = x_t - sigma eps_CFG (the clean-point form of eq. 6). At noisy states
        the ||eps||^2 term is about d for every prompt (for an exact score E[FLIPD(x_t)] = d), which
        can swamp the trace term on small models; "denoised" avoids that.
    batch_size : int, default=8
        Prompts sampled together (``batch_size * n_generations`` trajectories per UNet batch).
        The Hutchinson probes depend on the batch composition; everything else does not.

    Returns
    -------
    pandas.DataFrame
        One row per prompt: ``prompt`` and one column per metric; ``df.attrs`` holds the
        estimator settings and ``higher_is_memorized``.
    """
    import pandas as pd

    prompts_l = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts_l or not all(isinstance(p, str) for p in prompts_l):
        raise TypeError("prompts must be a string or a non-empty list of strings")
    metrics = list(metrics)
    for m in metrics:
        check_choice(m, "metrics", PROMPT_METRICS)
    check_choice(flipd_point, "flipd_point", FLIPD_POINTS)
    n_gen = check_positive_int(n_generations, "n_generations")
    steps = check_positive_int(num_inference_steps, "num_inference_steps")
    support = {m: metric_time_support(m, flipd_t_min, flipd_t_max) for m in metrics}
    flipd_support = metric_time_support("a_flipd", flipd_t_min, flipd_t_max)
    if "a_flipd" in metrics:
        grid = [model.timestep_to_time(k) for k in model.ddim_scheduler(steps).timesteps]
        if not any(_in_support(t, flipd_support) for t in grid):
            raise _no_step_error(steps, flipd_support)
    lam = float(guidance_scale)
    rows = []
    noise = model.initial_noise(n_gen, seed)
    uncond = model.unconditional_embeds(1)
    pb = check_positive_int(batch_size, "batch_size")
    batches = [prompts_l[i : i + pb] for i in range(0, len(prompts_l), pb)]
    for batch in _progress(batches, desc="prompts", disable=None if progress is None else not progress):
        P = len(batch)
        # prompt-major rows: prompt j's generations are rows j*n_gen .. (j+1)*n_gen - 1
        cond = model.encode_prompt(batch)[0].repeat_interleave(n_gen, dim=0)
        sums = {m: torch.zeros(P, dtype=torch.float64) for m in metrics}
        counts = {m: 0 for m in metrics}
        g = make_generator(seed + 1)

        def callback(state: dict[str, Any]) -> None:
            t = state["t"]
            if t <= 0:
                return
            for m in metrics:
                if not _in_support(t, support[m]):
                    continue
                if m == "a_flipd":
                    # the sampler's own eps_CFG at x_t: no extra UNet call for the denoised point
                    x_eval = _denoised_point(model, state["x"], t, state["eps"]) if flipd_point == "denoised" else state["x"]
                    with torch.no_grad():
                        v = cfg_flipd_at(model, x_eval, t, cond, uncond, lam, trace=trace, n_probes=n_probes, seed=g)
                else:
                    # the sampler's own branch predictions: no extra UNet call
                    v = _eps_metric(m, state["eps_uncond"], state["eps_cond"], lam)
                sums[m] += v.detach().double().cpu().reshape(P, n_gen).sum(1)
                counts[m] += n_gen

        model.sample(cond, uncond, n=P * n_gen, num_inference_steps=steps, guidance_scale=lam, latents=noise.repeat(P, *([1] * (noise.ndim - 1))), callback=callback, progress=False)
        for j, prompt in enumerate(batch):
            rows.append({"prompt": prompt, **{m: float(sums[m][j]) / counts[m] for m in metrics}})
    df = pd.DataFrame(rows)
    df.attrs.update(
        {
            "n_generations": n_gen,
            "num_inference_steps": steps,
            "guidance_scale": lam,
            "flipd_t_min": flipd_support[0],
            "flipd_t_max": flipd_support[1],
            "n_probes": n_probes,
            "trace": trace,
            "seed": seed,
            "batch_size": pb,
            "flipd_point": flipd_point,
            "higher_is_memorized": {m: higher_is_memorized(m) for m in metrics},
        }
    )
    return df


def read_prompts(path: str | Any, *, column: str | None = None) -> list[str]:
    """Read prompts from a ``.txt`` file (one per line, blank lines skipped) or a ``.csv`` /
    ``.tsv`` / ``.parquet`` table (delimiter sniffed, e.g. the ``;``-separated LAION sets).

    Parameters
    ----------
    column : str, optional
        Column holding the prompts; default the first of ``caption``, ``prompt``, ``text``
        (case-insensitive).
    """
    from pathlib import Path

    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".txt":
        from .._validation import ArgumentError, read_text_file

        if column is not None:
            raise ArgumentError(f"column={column!r} names a column of a .csv, .tsv or .parquet prompt table; {p} is a text file "
                                "with one prompt per line", argument="column")

        prompts = [line.strip() for line in read_text_file(p, "text file with one prompt per line").splitlines()]
        prompts = [q for q in prompts if q]
    elif suffix in (".csv", ".tsv", ".parquet"):
        if suffix == ".parquet":
            df = pd.read_parquet(p)
        else:
            import csv

            head = p.read_text(encoding="utf-8", errors="replace")[:4096]
            try:
                sep = csv.Sniffer().sniff(head.splitlines()[0], delimiters=";,\t|").delimiter
            except (csv.Error, IndexError):
                sep = "\t" if suffix == ".tsv" else ","
            try:
                df = pd.read_csv(p, sep=sep, keep_default_na=False)
            except UnicodeDecodeError as exc:
                raise ValueError(f"{p}: not UTF-8 text (byte at offset {exc.start}); save the prompt table as UTF-8") from None
        col = caption_column(df, column, p.name)
        prompts = [str(v).strip() for v in df[col].tolist() if str(v).strip()]
    else:
        raise ValueError(f"prompt file {p.name} must be .txt (one prompt per line), .csv, .tsv or .parquet")
    if not prompts:
        raise ValueError(f"prompt file {p} holds no prompts")
    return prompts


def caption_column(df: Any, column: str | None = None, name: str = "table") -> Any:
    """The column of ``df`` holding captions: ``column`` (case-insensitive) or the first of
    :data:`CAPTION_COLUMNS` (:func:`lidmem.data.io.find_caption_column`, the rule of ``lidmem
    score`` too); the error lists the table's columns."""
    from ..data.io import find_caption_column

    return find_caption_column(df.columns, column, name)


def detection_table(scores: Any, labels: Sequence[bool] | Any, metrics: Sequence[str] | None = None) -> Any:
    """AUROC and TPR@1%FPR of each metric column of ``scores`` (memorized = True in ``labels``),
    with 95% bootstrap intervals (``auroc_ci_low`` ... ``ci_note``, :func:`lidmem.memorization.metrics.interval_columns`).

    Uses :func:`lidmem.memorization.metrics.detection_metrics` with each metric's direction
    (:func:`lidmem.memorization.metrics.higher_is_memorized`).
    """
    import pandas as pd

    from ..memorization.metrics import detection_table as _table
    from ..memorization.metrics import interval_columns

    cols = [m for m in PROMPT_METRICS if m in scores.columns] if metrics is None else list(metrics)
    table = _table(labels, {m: scores[m].to_numpy() for m in cols}, higher_is_positive={m: higher_is_memorized(m) for m in cols})
    rows = [{"metric": r["metric"], "auroc": r["auroc"], "tpr_at_1pct_fpr": r["tpr_at_1pct_fpr"], "n_memorized": r["n_positive"],
             "n_other": r["n_negative"], "higher_is_memorized": r["higher_is_positive"], **interval_columns(r)} for r in table]
    return pd.DataFrame(rows)
