"""End-to-end text-to-image memorization experiment on the shipped small model (paper Sec. 3,
4.1, 4.2; App. C, D), as a library function returning data.

The shipped model (``lidmem/weights/text2image``, built by ``scripts/train_text2image.py``) is a
pixel-space 1x8x8 text-conditional diffusion model (diffusers ``UNet2DConditionModel`` + a tiny
``CLIPTextModel`` + an offline CLIP BPE tokenizer) trained on scikit-learn's digits with template
captions, where 16 images carry a unique caption ending in a made-up trigger word and are
duplicated 20 times (:mod:`lidmem.text2image.toydata`). Ground truth is therefore planted:

1. **Prompt detection**: A^CFG, A^{s_CFG}, A^FLIPD and Wen et al.'s per-step CFG norm
   (:func:`lidmem.text2image.prompt_metrics`) for the 16 memorized prompts vs ``n_other_prompts``
   generic template prompts; AUROC and TPR@1%FPR.
2. **Image detection**: unconditional FLIPD (no captions), conditional FLIPD and the CFG norm
   after 3 Euler steps (:func:`lidmem.text2image.score_images`) of the 16 duplicated training
   images vs ``n_other_images`` other training images.
3. **Token attribution** (:func:`lidmem.text2image.token_attribution`) of each memorized prompt
   under A^FLIPD, A^CFG (and the others): hit rate = share of prompts whose top token is the
   trigger.
4. **Mitigation** (:func:`lidmem.text2image.mitigation.evaluate_mitigation`): rewrite k tokens
   chosen from the A^FLIPD attributions vs uniformly (offline Box-1 rule rewriter with the
   digits' synonym table) vs random token addition; similarity of new generations to the
   memorized training image (pixel Pearson correlation) and alignment (a logistic-regression
   digit classifier's probability of the prompt's digit).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ..text2image.toydata import shipped_text2image_path

__all__ = ["Text2ImageDemoConfig", "Text2ImageDemoResult", "shipped_text2image_path", "run_text2image_demo", "write_text2image_demo"]


@dataclass
class Text2ImageDemoConfig:
    """Settings of :func:`run_text2image_demo` (defaults: the documented demo, < 5 min on 2 CPU cores).

    Attributes
    ----------
    model : str or None
        Model folder; None = the shipped model.
    n_other_prompts : int
        Generic (non-memorized) prompts for prompt detection.
    n_other_images : int
        Non-duplicated training images for image detection.
    guidance_scale : float
        lambda of the CFG sampler and of every CFG quantity.
    num_inference_steps : int
        DDIM steps of every sampler (A^FLIPD uses the steps with flipd_t_min <= t <= flipd_t_max).
    n_generations : int
        Trajectories per prompt for the prompt metrics.
    flipd_t_max, flipd_t_min : float
        Support [flipd_t_min, flipd_t_max] of A^FLIPD's scheduling distribution.
    flipd_t0 : float
        t0 of the image FLIPD scores. 0.2 is the best of a sweep of exact-trace caption-free FLIPD
        on the shipped model (AUROC 0.73 / 0.81 / 0.83 / 0.87 / 0.85 at t0 = 0.01 / 0.05 / 0.1 /
        0.2 / 0.3), so it is tuned on the demo's own data.
    image_trace : {"exact", "hutchinson"}
        Trace estimator of the image FLIPD scores (exact: d = 64 JVPs per image, affordable for
        8x8 images and free of probe noise).
    image_probes : int
        Hutchinson probes per image.
    attribution_metrics : tuple of str
        Metrics whose token attributions are computed.
    mitigation_metric : str
        Attribution used by the attribution-guided rewriting.
    attribution_generations : int
        Trajectories per attribution.
    ks : tuple of int
        Numbers of tokens to perturb.
    repeats : int
        Repeats per (method, k).
    mitigation_generations : int
        Images per rewritten prompt.
    mitigation_steps : int
        DDIM steps of the mitigation generations.
    seed : int
    """

    model: str | None = None
    n_other_prompts: int = 32
    n_other_images: int = 200
    guidance_scale: float = 5.0
    num_inference_steps: int = 20
    n_generations: int = 4
    flipd_t_max: float = 0.2
    flipd_t_min: float = 0.01
    flipd_t0: float = 0.2
    image_trace: str = "exact"
    image_probes: int = 4
    attribution_metrics: tuple[str, ...] = ("a_flipd", "a_cfg")
    attribution_generations: int = 1
    mitigation_metric: str = "a_flipd"
    ks: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    repeats: int = 2
    mitigation_generations: int = 4
    mitigation_steps: int = 10
    seed: int = 0


@dataclass
class Text2ImageDemoResult:
    """Everything the demo measured (tables are pandas DataFrames).

    Attributes
    ----------
    prompt_scores : DataFrame
        One row per prompt: ``prompt``, ``memorized``, one column per prompt metric.
    prompt_detection : DataFrame
        One row per prompt metric: AUROC, TPR@1%FPR, direction, counts.
    image_scores : DataFrame
        One row per training image scored: ``sklearn_index``, ``duplicated``, ``caption``,
        ``flipd_uncond``, ``flipd_cond``, ``cfg_norm``.
    image_detection : DataFrame
        One row per image score (duplicated vs other training images).
    attribution : DataFrame
        One row per (memorized prompt, metric): ``trigger``, ``top_token``, ``top_word``, ``hit``,
        ``trigger_score``.
    attribution_hit_rate : dict
        Metric -> share of memorized prompts whose top-attributed token is the trigger.
    mitigation_rows : DataFrame
        Every rewritten prompt: ``prompt_index``, ``method``, ``k``, ``k_used``, ``repeat``,
        ``prompt``, ``similarity``, ``alignment``.
    mitigation : DataFrame
        Means and standard errors per (method, k) over prompts and repeats.
    acceptance : dict
        The demo's checks (what it is meant to show), each with the measured value, target and ``passed``.
    info : dict
        Settings, model provenance, runtime per stage.
    gallery : dict or None
        Images for the report (not used by any number): ``train`` (the memorized training
        images, ``(m, c, h, w)`` in [-1, 1]), ``original`` (one generation per memorized prompt),
        ``attribution`` / ``uniform`` (one generation per prompt after rewriting ``k`` tokens
        chosen from the attributions / uniformly: the first repeat's rewritten prompt),
        ``prompts``, ``prompts_attribution``, ``prompts_uniform`` (lists of m strings) and ``k``.
    """

    prompt_scores: Any
    prompt_detection: Any
    image_scores: Any
    image_detection: Any
    attribution: Any
    attribution_hit_rate: dict[str, float]
    mitigation_rows: Any
    mitigation: Any
    acceptance: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    gallery: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (what ``summary.json`` holds)."""

        def records(df: Any) -> list[dict[str, Any]]:
            return json.loads(df.to_json(orient="records"))

        return {
            "prompt_detection": records(self.prompt_detection),
            "image_detection": records(self.image_detection),
            "attribution_hit_rate": self.attribution_hit_rate,
            "attribution": records(self.attribution),
            "mitigation": records(self.mitigation),
            "acceptance": self.acceptance,
            "info": self.info,
        }


def _detection_table(labels: np.ndarray, scores: Any, directions: dict[str, bool], what: str) -> Any:
    import pandas as pd

    from ..memorization.metrics import detection_table

    present = {name: higher for name, higher in directions.items() if name in scores}
    rows = detection_table(labels, {name: np.asarray(scores[name], dtype=np.float64) for name in present}, higher_is_positive=present)
    return pd.DataFrame([{**r, "task": what} for r in rows])


def run_text2image_demo(config: Text2ImageDemoConfig | None = None, *, progress: bool | None = None) -> Text2ImageDemoResult:
    """Run detection, attribution and mitigation on the small text-to-image model.

    Parameters
    ----------
    config : Text2ImageDemoConfig, optional
        Defaults to :class:`Text2ImageDemoConfig()` (the documented demo).
    progress : bool or None
        Progress bars (None: tqdm's default).

    Returns
    -------
    Text2ImageDemoResult
    """
    import pandas as pd
    import torch

    from ..memorization.metrics import HIGHER_IS_MEMORIZED
    from ..text2image import load_text2image, prompt_metrics, score_images, token_attribution
    from ..text2image import toydata
    from ..text2image.mitigation import RuleRewriter, evaluate_mitigation

    cfg = Text2ImageDemoConfig() if config is None else config
    if not isinstance(cfg, Text2ImageDemoConfig):
        raise TypeError(f"config must be a Text2ImageDemoConfig; got {type(cfg).__name__}")
    n_other_prompts = check_positive_int(cfg.n_other_prompts, "n_other_prompts")
    n_other_images = check_positive_int(cfg.n_other_images, "n_other_images")
    path = shipped_text2image_path() if cfg.model is None else str(cfg.model)
    meta_file = Path(path) / "lidmem.json"
    if not meta_file.is_file():
        raise ValueError(f"{path!r} has no lidmem.json; the demo needs a model built by scripts/train_text2image.py")
    meta = json.loads(meta_file.read_text())
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    model = load_text2image(path)
    data = toydata.make_captioned_digits(**{k: meta["data"][k] for k in ("n_memorized", "n_duplicates", "seed")})
    mem = data.memorized_indices
    mem_prompts = [data.captions[i] for i in mem]
    other_prompts = toydata.non_memorized_prompts(n_other_prompts, seed=cfg.seed + 1)
    sampling = dict(num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale)

    # 1. prompt detection --------------------------------------------------------------------
    t0 = time.perf_counter()
    prompts = mem_prompts + other_prompts
    pscores = prompt_metrics(model, prompts, n_generations=cfg.n_generations, flipd_t_max=cfg.flipd_t_max, flipd_t_min=cfg.flipd_t_min, seed=cfg.seed, progress=progress, **sampling)
    pscores.insert(1, "memorized", [True] * len(mem_prompts) + [False] * len(other_prompts))
    prompt_det = _detection_table(pscores["memorized"].to_numpy(), pscores, HIGHER_IS_MEMORIZED, "memorized vs non-memorized prompts")
    timings["prompt_detection_s"] = time.perf_counter() - t0

    # 2. image detection ---------------------------------------------------------------------
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    others = np.sort(rng.choice(np.flatnonzero(~data.memorized), size=min(n_other_images, int((~data.memorized).sum())), replace=False))
    idx = np.concatenate([mem, others])
    images = data.images[torch.from_numpy(idx)]
    captions = [data.captions[i] for i in idx]
    iscores = score_images(model, images, captions, flipd_t0=cfg.flipd_t0, trace=cfg.image_trace, n_probes=cfg.image_probes, seed=cfg.seed, batch_size=64, progress=progress)
    iscores.insert(0, "sklearn_index", data.sklearn_index[idx])
    iscores.insert(1, "duplicated", data.memorized[idx])
    image_det = _detection_table(
        iscores["duplicated"].to_numpy(), iscores, {"flipd_uncond": False, "flipd_cond": False, "cfg_norm": True}, "duplicated vs other training images"
    )
    timings["image_detection_s"] = time.perf_counter() - t0

    # 3. attribution -------------------------------------------------------------------------
    t0 = time.perf_counter()
    att_rows = []
    attributions: dict[tuple[int, str], Any] = {}
    for j, i in enumerate(mem):
        for metric in cfg.attribution_metrics:
            att = token_attribution(model, data.captions[i], metric=metric, n_generations=cfg.attribution_generations, flipd_t_max=cfg.flipd_t_max, flipd_t_min=cfg.flipd_t_min, seed=cfg.seed, **sampling)
            attributions[(j, metric)] = att
            trig = data.triggers[i]
            trig_score = float(sum(s for tok, s in zip(att.tokens, att.scores) if tok.replace("</w>", "") == trig))
            att_rows.append({
                "prompt_index": j, "prompt": data.captions[i], "metric": metric, "trigger": trig,
                "top_token": att.top_token.replace("</w>", ""), "top_word": att.top_word,
                "hit": att.top_token.replace("</w>", "") == trig, "trigger_score": trig_score,
            })
    att_df = pd.DataFrame(att_rows)
    hit_rate = {m: float(att_df.loc[att_df.metric == m, "hit"].mean()) for m in cfg.attribution_metrics}
    timings["attribution_s"] = time.perf_counter() - t0

    # 4. mitigation --------------------------------------------------------------------------
    t0 = time.perf_counter()
    align = toydata.DigitAlignment().fit()
    rewriter = RuleRewriter(synonyms=toydata.SYNONYMS)
    if cfg.mitigation_metric not in cfg.attribution_metrics:
        raise ValueError(f"mitigation_metric={cfg.mitigation_metric!r} must be one of attribution_metrics={cfg.attribution_metrics}")
    mit_frames = []
    for j, i in enumerate(mem):
        df = evaluate_mitigation(
            model, data.captions[i], data.images[int(i)], attribution=attributions[(j, cfg.mitigation_metric)],
            ks=cfg.ks, repeats=cfg.repeats, rewriter=rewriter,
            similarity=lambda imgs, ref: torch.as_tensor(toydata.image_similarity(imgs, ref)),
            alignment=lambda imgs, p: torch.as_tensor(align.score(imgs, [p] * imgs.shape[0])),
            n_generations=cfg.mitigation_generations, num_inference_steps=cfg.mitigation_steps,
            guidance_scale=cfg.guidance_scale, seed=cfg.seed, progress=False,
        )
        df.insert(0, "prompt_index", j)
        mit_frames.append(df)
    mit_rows = pd.concat(mit_frames, ignore_index=True)
    grouped = mit_rows.groupby(["method", "k"], sort=False)
    mit = grouped.agg(
        similarity=("similarity", "mean"), similarity_se=("similarity", "sem"),
        alignment=("alignment", "mean"), alignment_se=("alignment", "sem"), n=("similarity", "size"),
    ).reset_index()
    timings["mitigation_s"] = time.perf_counter() - t0

    # images for the report only (after every measurement, so no number depends on them) ---------
    t0 = time.perf_counter()
    gallery = _gallery(model, data, mem, mit_rows, cfg)
    timings["report_images_s"] = time.perf_counter() - t0

    acceptance = _acceptance(prompt_det, image_det, hit_rate, mit)
    info = {
        "model": path,
        "model_training": meta.get("training", {}),
        "memorized": meta.get("memorized", []),
        "config": asdict(cfg),
        "n_memorized_prompts": len(mem_prompts),
        "n_other_prompts": len(other_prompts),
        "n_duplicated_images": int(len(mem)),
        "n_other_images": int(len(others)),
        "prompt_metric_settings": dict(pscores.attrs),
        "image_score_settings": dict(iscores.attrs),
        "similarity": "Pearson correlation of pixels with the memorized training image",
        "alignment": "P(prompt's digit | image) under a logistic-regression digit classifier",
        "rewriter": "RuleRewriter(synonyms=toydata.SYNONYMS): Box 1 rules offline",
        "timings_s": {**timings, "total_s": time.perf_counter() - t_start},
    }
    return Text2ImageDemoResult(pscores, prompt_det, iscores, image_det, att_df, hit_rate, mit_rows, mit, acceptance, info, gallery)


def _gallery(model: Any, data: Any, mem: np.ndarray, mit_rows: Any, cfg: Text2ImageDemoConfig) -> dict[str, Any]:
    """One generation per memorized prompt before and after rewriting (report images)."""
    ks = sorted(int(k) for k in mit_rows.loc[mit_rows.method == "attribution", "k"].unique())
    k = 2 if 2 in ks else (ks[0] if ks else 0)
    prompts = [data.captions[int(i)] for i in mem]

    def rewritten(method: str) -> list[str]:
        rows = mit_rows[(mit_rows.method == method) & (mit_rows.k == k) & (mit_rows["repeat"] == 0)].sort_values("prompt_index")
        by_index = dict(zip(rows["prompt_index"], rows["prompt"]))
        return [str(by_index.get(j, prompts[j])) for j in range(len(prompts))]

    def generate(ps: list[str]) -> np.ndarray:
        return model.generate(ps, n_per_prompt=1, num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                              seed=cfg.seed, progress=False).detach().cpu().numpy()

    out: dict[str, Any] = {"k": k, "prompts": prompts, "train": data.images[np.asarray(mem)].detach().cpu().numpy(), "original": generate(prompts)}
    for method in ("attribution", "uniform"):
        ps = rewritten(method)
        out[f"prompts_{method}"] = ps
        out[method] = generate(ps)
    return out


def _acceptance(prompt_det: Any, image_det: Any, hit_rate: dict[str, float], mit: Any) -> dict[str, Any]:
    """The demo's checks (what it is meant to show), from measured numbers."""
    checks: dict[str, Any] = {}
    for _, r in prompt_det.iterrows():
        checks[f"prompt_auroc_{r['metric']}"] = {"value": float(r["auroc"]), "target": ">= 0.9", "passed": bool(r["auroc"] >= 0.9)}
    unc = image_det.loc[image_det.metric == "flipd_uncond", "auroc"]
    if len(unc):
        checks["image_auroc_flipd_uncond"] = {"value": float(unc.iloc[0]), "target": ">= 0.8", "passed": bool(unc.iloc[0] >= 0.8)}
    for m in ("a_flipd", "a_cfg"):
        if m in hit_rate:
            checks[f"attribution_hit_rate_{m}"] = {"value": hit_rate[m], "target": ">= 0.8", "passed": bool(hit_rate[m] >= 0.8)}
    piv_s = mit.pivot(index="k", columns="method", values="similarity")
    piv_a = mit.pivot(index="k", columns="method", values="alignment")
    if {"attribution", "uniform"} <= set(piv_s.columns):
        diff = (piv_s["uniform"] - piv_s["attribution"]).dropna()
        checks["mitigation_similarity_attribution_below_uniform"] = {
            "value": {int(k): float(v) for k, v in diff.items()},
            "target": "uniform - attribution similarity > 0 at every k",
            "passed": bool((diff > 0).all()),
        }
    if {"attribution", "rta"} <= set(piv_a.columns):
        diff = (piv_a["attribution"] - piv_a["rta"]).dropna()
        checks["mitigation_alignment_attribution_above_rta"] = {
            "value": {int(k): float(v) for k, v in diff.items()},
            "target": "attribution - RTA alignment > 0 at every k",
            "passed": bool((diff > 0).all()),
        }
    checks["all_passed"] = all(c["passed"] for c in checks.values() if isinstance(c, dict))
    return checks


_CHECK_NAMES = {
    "prompt_auroc_a_cfg": "prompt detection AUROC, A^CFG",
    "prompt_auroc_a_scfg": "prompt detection AUROC, A^{s_CFG}",
    "prompt_auroc_a_flipd": "prompt detection AUROC, A^FLIPD",
    "prompt_auroc_wen": "prompt detection AUROC, Wen et al.",
    "image_auroc_flipd_uncond": "duplicated-image AUROC, caption-free FLIPD",
    "attribution_hit_rate_a_flipd": "attribution hit rate, A^FLIPD",
    "attribution_hit_rate_a_cfg": "attribution hit rate, A^CFG",
    "mitigation_similarity_attribution_below_uniform": "similarity drop, attribution vs uniform rewriting (per k)",
    "mitigation_alignment_attribution_above_rta": "alignment gain, attribution rewriting vs RTA (per k)",
}
_METRIC_NAMES = {"a_cfg": "A^CFG", "a_scfg": "A^{s_CFG}", "a_flipd": "A^FLIPD", "wen": "Wen et al.",
                 "flipd_uncond": "caption-free FLIPD", "flipd_cond": "conditional FLIPD", "cfg_norm": "CFG norm (3 Euler steps)"}


def _check_value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"k={k}: {float(x):+.3f}" for k, x in v.items())
    return f"{float(v):.3f}"


def _detection_html(df: Any) -> str:
    from ..reports.html import table_to_html

    from ..memorization.metrics import format_with_interval

    keep = [c for c in ("metric", "auroc", "tpr_at_1pct_fpr", "higher_is_positive", "n_positive", "n_negative") if c in df]
    t = df[keep].copy()
    for key in ("auroc", "tpr_at_1pct_fpr"):
        if f"{key}_ci" in df:
            t[key] = [format_with_interval(v, ci) for v, ci in zip(df[key], df[f"{key}_ci"])]
    t["metric"] = t["metric"].map(lambda m: _METRIC_NAMES.get(m, m))
    if "higher_is_positive" in t:
        t["higher_is_positive"] = t["higher_is_positive"].map(lambda h: "high" if h else "low")
    return table_to_html(t, headers={"auroc": "AUROC [95% CI]", "tpr_at_1pct_fpr": "TPR at 1% FPR [95% CI]", "higher_is_positive": "memorized when",
                                     "n_positive": "n positive", "n_negative": "n negative"})


def _gallery_html(result: Text2ImageDemoResult) -> str:
    import torch

    from ..reports.html import image_to_html, table_to_html
    from ..text2image import toydata

    g = result.gallery
    if not g:
        return "<p>No images (the result was built without a gallery).</p>"
    rows = []
    for j, prompt in enumerate(g["prompts"]):
        ref = g["train"][j]
        sims = {m: float(toydata.image_similarity(torch.as_tensor(g[m][j : j + 1]), torch.as_tensor(ref))[0]) for m in ("original", "attribution", "uniform")}
        rows.append({
            "prompt": prompt,
            "training image": image_to_html(ref, scale=6, alt="training image"),
            "generated": image_to_html(g["original"][j], scale=6, alt="generation") + f"<br>{sims['original']:.2f}",
            "rewritten prompt (attribution)": g["prompts_attribution"][j],
            "after (attribution)": image_to_html(g["attribution"][j], scale=6, alt="after attribution rewriting") + f"<br>{sims['attribution']:.2f}",
            "after (uniform)": image_to_html(g["uniform"][j], scale=6, alt="after uniform rewriting") + f"<br>{sims['uniform']:.2f}",
        })
    return table_to_html(rows, raw_columns=("training image", "generated", "after (attribution)", "after (uniform)"))


def write_text2image_demo(result: Text2ImageDemoResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.json``, the tables (CSV) and ``report.html`` to ``out_dir``.

    Returns
    -------
    dict
        Name -> written path.
    """
    from ..reports.html import Section, figure_to_html, settings_table, table_to_html, write_html_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["summary"] = out / "summary.json"
    paths["summary"].write_text(json.dumps(result.summary(), indent=2, default=float))
    for name in ("prompt_scores", "prompt_detection", "image_scores", "image_detection", "attribution", "mitigation_rows", "mitigation"):
        p = out / f"{name}.csv"
        getattr(result, name).to_csv(p, index=False)
        paths[name] = p
    checks = [{"check": _CHECK_NAMES.get(k, k.replace("_", " ")), "measured": _check_value(v["value"]), "target": v["target"], "passed": v["passed"]}
              for k, v in result.acceptance.items() if isinstance(v, dict)]
    info = result.info
    k = (result.gallery or {}).get("k")
    sections = [
        Section("Summary", table_to_html(checks),
                note=f"{info.get('n_memorized_prompts')} memorized vs {info.get('n_other_prompts')} other prompts; "
                     f"{info.get('n_duplicated_images')} duplicated vs {info.get('n_other_images')} other training images."),
        Section("Memorized generations and mitigation", _gallery_html(result),
                note=f"One generation per memorized prompt (same seed in every column) beside the training image it memorized, "
                     f"then after rewriting k = {k} tokens chosen from the A^FLIPD attributions or uniformly. Numbers under the "
                     "images: pixel correlation with the training image (1 = copy)."),
    ]
    figs: list[Section] = []
    try:
        from ..reports.figures import mitigation_figure, score_histograms
        from ..memorization.metrics import HIGHER_IS_MEMORIZED

        ps = result.prompt_scores
        metrics = [m for m in ("a_cfg", "a_scfg", "a_flipd", "wen") if m in ps]
        pfig = score_histograms({m: ps[m].to_numpy(float) for m in metrics}, ps["memorized"].to_numpy(bool),
                                low_is_positive={m: not HIGHER_IS_MEMORIZED[m] for m in metrics}, ncols=2)
        ims = result.image_scores
        icols = [c for c in ("flipd_uncond", "flipd_cond", "cfg_norm") if c in ims]
        ifig = score_histograms({c: ims[c].to_numpy(float) for c in icols}, ims["duplicated"].to_numpy(bool), positive="duplicated",
                                low_is_positive={c: not HIGHER_IS_MEMORIZED[c] for c in icols}, ncols=3)
        mfig = mitigation_figure(result.mitigation)
        figs = [figure_to_html(pfig, alt="prompt metric histograms"), figure_to_html(ifig, alt="image score histograms"),
                figure_to_html(mfig, alt="mitigation")]
    except ImportError:  # pragma: no cover - matplotlib missing
        figs = ["", "", ""]
    att = result.attribution.copy()
    att["metric"] = att["metric"].map(lambda m: _METRIC_NAMES.get(m, m))
    att = att.drop(columns=[c for c in ("prompt_index", "top_token") if c in att])
    mit = result.mitigation.copy()
    sections += [
        Section("Prompt detection (memorized vs other prompts)", figs[0] + _detection_html(result.prompt_detection),
                note="A^CFG, A^{s_CFG}, Wen: large = memorized; A^FLIPD: small = memorized (App. D.2)."),
        Section("Image detection (duplicated vs other training images)", figs[1] + _detection_html(result.image_detection),
                note="Caption-free FLIPD uses no caption (unconditional score)."),
        Section("Token attribution",
                table_to_html([{"metric": _METRIC_NAMES.get(k, k), "hit rate": v} for k, v in result.attribution_hit_rate.items()])
                + table_to_html(att, headers={"top_word": "top word", "trigger_score": "trigger score"}),
                note="Hit: the top-attributed token is the planted trigger word."),
        Section("Mitigation", figs[2] + table_to_html(mit, headers={"similarity_se": "± se", "alignment_se": "± se"}),
                note="Similarity to the memorized training image (lower is better) and P(prompt's digit) under a digit classifier "
                     "(higher is better); mean ± standard error over prompts and repeats."),
        Section("Settings", settings_table({**info.get("config", {}), "model": info.get("model")})),
    ]
    timings = info.get("timings_s", {})
    sub = "run time: " + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {float(v):.0f} s" for k, v in timings.items())
    paths["report"] = write_html_report(out / "report.html", "Text-to-image memorization on the small digits model", sections, subtitle=sub)
    return paths
