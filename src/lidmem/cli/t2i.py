"""CLI: ``lidmem t2i`` - text-to-image memorization (score images, detect prompts, attribute, mitigate).

Every command takes ``--model`` (a diffusers model folder such as a saved Stable Diffusion
pipeline, a hub id already in the local cache, or a lidmem text-to-image checkpoint folder),
``--device`` and ``--dtype``, and writes tables (CSV or Parquet) and PNG figures into ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..defaults import CFG_T0, EULER_STEPS, FLIPD_T0
from ._common import check_device_option, check_out, console, renamed_option, user_errors

t2i_app = typer.Typer(help="Text-to-image memorization: image scores, prompt detection, token attribution, mitigation.", no_args_is_help=True)

_MODEL_HELP = "Diffusers model folder (unet/, text_encoder/, tokenizer/, scheduler/, optional vae/) or a cached hub id."


def _load(model: str, device: str, dtype: str, allow_download: bool) -> Any:
    from ..text2image import load_text2image

    try:
        return load_text2image(model, device=device, dtype=None if dtype == "auto" else dtype, local_files_only=not allow_download)
    except (OSError, EnvironmentError) as exc:  # transformers/diffusers: missing or incomplete model files
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ValueError(f"--model {model} cannot be loaded: {first}") from None


def _check_common(*, out: Path, fmt: str, device: str, dtype: str, model: str, allow_download: bool, seed: int = 0) -> None:
    """The options every ``lidmem t2i`` command shares, checked before anything is read or loaded."""
    from .._validation import check_choice, check_seed

    check_seed(seed, "--seed")
    check_out(out, "--out")
    check_choice(fmt, "--format", ("csv", "parquet"))
    check_choice(dtype, "--dtype", ("auto", "float32", "float16", "bfloat16"))
    check_device_option(device)
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"--model {model} is a file; give a diffusers model folder (unet/, text_encoder/, tokenizer/, scheduler/)")
        missing = [d for d in ("unet", "text_encoder", "tokenizer", "scheduler") if not (p / d).is_dir()] if not (p / "model_index.json").is_file() else []
        if missing:
            raise ValueError(f"--model {model} is not a diffusers model folder: it has no {', '.join(s + '/' for s in missing)}")
        from ..models.loader import check_scheduler_class

        check_scheduler_class(p, model)
    elif model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith("/"):
        raise ValueError(f"--model {model} does not exist (neither a model folder nor a hub id such as org/name)")


def _check_flipd_window(flipd_t_min: float, flipd_t_max: float) -> None:
    """A^FLIPD's time window ``--flipd-t-min < --flipd-t-max``, both in (0, 1]."""
    from .._validation import check_t0

    check_t0(flipd_t_max, "--flipd-t-max")
    check_t0(flipd_t_min, "--flipd-t-min")
    if not flipd_t_min < flipd_t_max:
        raise ValueError(f"--flipd-t-min={flipd_t_min} must be < --flipd-t-max={flipd_t_max}")


def _check_guided_sampling(guidance_scale: float, num_inference_steps: int, steps: int | None) -> int:
    """A finite ``--guidance-scale``; ``--num-inference-steps`` with the deprecated ``--steps``
    resolved (its positivity is checked with the command's other counts)."""
    from .._validation import check_finite

    check_finite(guidance_scale, "--guidance-scale")
    return renamed_option(num_inference_steps, steps, new="--num-inference-steps", old="--steps", default=50)  # type: ignore[return-value]


def _check_metrics(value: str, option: str, allowed: tuple[str, ...]) -> list[str]:
    from .._validation import check_choice

    items = _split(value, option.lstrip("-"))
    for m in items:
        check_choice(m, option, allowed)
    return items


def _write(df: Any, out: Path, name: str, fmt: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        path = out / f"{name}.parquet"
        df.to_parquet(path, index=False)
    elif fmt == "csv":
        path = out / f"{name}.csv"
        df.to_csv(path, index=False)
    else:
        raise ValueError(f"--format={fmt!r} must be 'csv' or 'parquet'")
    return path


def _split(value: str, name: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError(f"--{name} must be a comma-separated list; got {value!r}")
    return items


def _ints(value: str, name: str) -> list[int]:
    try:
        return [int(v) for v in _split(value, name)]
    except ValueError:
        raise ValueError(f"--{name}={value!r} must be comma-separated integers, e.g. 1,2,3,4,6,8") from None


def _read_images(path: Path, model: Any) -> tuple[Any, list[str]]:
    """Images of a folder (or a single file) as a float tensor in [-1, 1], converted to the model's
    channels and resized (bilinear) to its native resolution ``model.image_shape``."""
    import torch

    from ..data.io import decode_image, load_image_folder

    if path.is_dir():
        arr, names = load_image_folder(path)
    elif path.is_file():
        arr, names = (2.0 * decode_image(path, name=path.name) - 1.0)[None], [path.name]  # the decoder of lidmem score
    else:
        raise FileNotFoundError(f"image path {path} does not exist")
    x = torch.from_numpy(arr)  # [-1, 1], as load_image_folder
    c, h, w = model.image_shape
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True).repeat(1, c, 1, 1) if c in (1, 3) else x
    if tuple(x.shape[-2:]) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x, names


def _check_images(path: Path) -> None:
    """Decode every image once before the model loads: a corrupt or truncated file is named now."""
    from ..data.io import convert_image, list_images, open_image

    for f in list_images(path) if path.is_dir() else [path]:
        with open_image(f) as im:
            convert_image(im, "RGB" if im.mode not in ("L", "1") else "L", f)


def _read_captions(path: Path | None, names: list[str], column: str | None) -> list[str] | None:
    if path is None:
        return None
    from ..text2image import read_prompts

    if path.suffix.lower() in (".csv", ".tsv", ".parquet"):
        import pandas as pd

        from ..text2image.prompt_metrics import caption_column

        df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, sep=None, engine="python", keep_default_na=False)
        lower = {str(c).lower(): c for c in df.columns}
        key = lower.get("file", lower.get("image"))
        if key is not None:
            col = caption_column(df, column, path.name)
            mapping = dict(zip(df[key].astype(str), df[col].astype(str)))
            missing = [n for n in names if n not in mapping]
            if missing:
                raise ValueError(f"{path.name} has no caption for {missing[:3]}; add rows with their file names")
            return [mapping[n] for n in names]
    caps = read_prompts(path, column=column)
    if len(caps) != len(names):
        raise ValueError(f"{path.name} holds {len(caps)} captions for {len(names)} images; give one per image (in file-name order) or a table with a file column")
    return caps


@t2i_app.command("score-images")
def score_images_command(
    images: Path = typer.Argument(..., help="Folder of images (or one image file)."),
    model: str = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    captions: Path | None = typer.Option(None, help="Captions: .txt one per image (file-name order) or a table with file + caption columns."),
    column: str | None = typer.Option(None, help="Caption column of a --captions table."),
    metrics: str = typer.Option("flipd_uncond,flipd_cond,cfg_norm", help="Any of flipd_uncond, flipd_cond, cfg_norm (the last two need --captions)."),
    flipd_t0: float = typer.Option(FLIPD_T0, help="FLIPD time t0 (the fixed default of commands without the training data, README Conventions; the paper's value for Stable Diffusion)."),
    cfg_t0: float = typer.Option(CFG_T0, help="Time of the CFG norm after the Euler steps (paper: 0.01)."),
    euler_steps: int = typer.Option(EULER_STEPS, help="Probability-flow Euler steps before the CFG norm (paper: 3)."),
    n_probes: int = typer.Option(1, help="Hutchinson probes for FLIPD."),
    batch_size: int = typer.Option(8, help="Images per batch."),
    seed: int = typer.Option(0, help="Seed of the Hutchinson probes."),
    out: Path = typer.Option(Path("t2i_scores"), "--out", "-o", help="Output folder."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16."),
    allow_download: bool = typer.Option(False, help="Let from_pretrained download a hub id."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Memorization scores of IMAGES: unconditional FLIPD (no captions), conditional FLIPD, CFG norm."""
    with user_errors("t2i"):
        from .._validation import check_positive_int, check_t0
        from ..text2image import score_images
        from ..text2image.image_scores import IMAGE_METRICS

        _check_common(out=out, fmt=fmt, device=device, dtype=dtype, model=model, allow_download=allow_download, seed=seed)
        mets = _check_metrics(metrics, "--metrics", IMAGE_METRICS)
        check_t0(flipd_t0, "--flipd-t0")
        check_t0(cfg_t0, "--cfg-t0")
        for value, name in ((euler_steps, "--euler-steps"), (n_probes, "--n-probes"), (batch_size, "--batch-size")):
            check_positive_int(value, name)
        if captions is None and any(m != "flipd_uncond" for m in mets):
            raise ValueError(f"--metrics {','.join(m for m in mets if m != 'flipd_uncond')} need --captions; use --metrics flipd_uncond without captions")
        if captions is not None and not captions.is_file():
            raise ValueError(f"--captions {captions} is not a file")
        if column is not None and captions is None:
            raise ValueError(f"--column {column} names the caption column of a --captions table; give --captions too")
        if not images.exists():
            raise ValueError(f"image path {images} does not exist")
        _check_images(images)
        mdl = _load(model, device, dtype, allow_download)
        x, names = _read_images(images, mdl)
        caps = _read_captions(captions, names, column)
        if caps is None:
            needs = [m for m in mets if m != "flipd_uncond"]
            if needs:
                raise ValueError(f"--metrics {','.join(needs)} need --captions; use --metrics flipd_uncond without captions")
        df = score_images(mdl, x, caps, metrics=mets, flipd_t0=flipd_t0, cfg_t0=cfg_t0, euler_steps=euler_steps, n_probes=n_probes, seed=seed, batch_size=batch_size, progress=None if progress else False)
        df.insert(0, "file", names)
        path = _write(df, out, "image_scores", fmt)
        _hist_figure(df, [m for m in mets if m in df.columns], out / "image_scores.png")
    console.print(f"wrote {path} ({len(df)} images) and {out / 'image_scores.png'}")


def _hist_figure(df: Any, cols: list[str], path: Path, labels: Any = None) -> None:
    from ..reports.figures import write_t2i_score_histograms

    write_t2i_score_histograms(df, cols, path, labels)


@t2i_app.command("detect-prompts")
def detect_prompts_command(
    model: str = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    prompts: list[Path] = typer.Option(..., "--prompts", "-p", help="Prompt file(s): .txt one per line, or .csv/.parquet with a caption column. Repeatable."),
    memorized: list[Path] = typer.Option([], "--memorized", help="Prompt file(s) of known memorized prompts (label 1); with --prompts as the others, adds a detection table."),
    column: str | None = typer.Option(None, help="Caption column of table files (default caption/prompt/text)."),
    metrics: str = typer.Option("a_cfg,a_scfg,a_flipd,wen", help="Any of a_cfg, a_scfg, a_flipd, wen."),
    n_generations: int = typer.Option(4, help="DDIM generations per prompt."),
    num_inference_steps: int = typer.Option(50, "--num-inference-steps", help="DDIM steps (A^FLIPD uses those with --flipd-t-min <= t <= --flipd-t-max)."),
    steps: int | None = typer.Option(None, "--steps", hidden=True, help="Deprecated spelling of --num-inference-steps."),
    guidance_scale: float = typer.Option(7.5, help="Classifier-free guidance scale lambda."),
    flipd_t_max: float = typer.Option(0.2, help="A^FLIPD: T uniform on \\[flipd_t_min, flipd_t_max]."),
    flipd_t_min: float = typer.Option(0.01, help="A^FLIPD: lower end of T (the paper: 0; FLIPD near t = 0 measures network error)."),
    n_probes: int = typer.Option(1, help="Hutchinson probes per state for A^FLIPD."),
    batch_size: int = typer.Option(8, help="Prompts sampled together (batch_size * n_generations trajectories per UNet call)."),
    flipd_point: str = typer.Option("state", help="A^FLIPD at the sampler 'state' x_t (eq. 28) or at psi(t) x0_hat ('denoised')."),
    limit: int | None = typer.Option(None, help="Use only the first LIMIT prompts of each file."),
    seed: int = typer.Option(0, help="Seed of the initial noise (shared by all prompts) and probes."),
    out: Path = typer.Option(Path("t2i_detect"), "--out", "-o", help="Output folder."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16."),
    allow_download: bool = typer.Option(False, help="Let from_pretrained download a hub id."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Prompt memorization metrics A^CFG, A^{s_CFG}, A^FLIPD and Wen et al.'s score for every prompt."""
    with user_errors("t2i"):
        import numpy as np
        import pandas as pd

        from ..text2image import detection_table, prompt_metrics, read_prompts

        from .._validation import check_choice, check_positive_int
        from ..text2image.prompt_metrics import FLIPD_POINTS, PROMPT_METRICS

        _check_common(out=out, fmt=fmt, device=device, dtype=dtype, model=model, allow_download=allow_download, seed=seed)
        _check_metrics(metrics, "--metrics", PROMPT_METRICS)
        check_choice(flipd_point, "--flipd-point", FLIPD_POINTS)
        _check_flipd_window(flipd_t_min, flipd_t_max)
        num_inference_steps = _check_guided_sampling(guidance_scale, num_inference_steps, steps)
        for value, name in ((n_generations, "--n-generations"), (num_inference_steps, "--num-inference-steps"), (n_probes, "--n-probes"), (batch_size, "--batch-size")):
            check_positive_int(value, name)
        if limit is not None and limit < 1:
            raise ValueError(f"--limit={limit} must be >= 1")
        rows: list[tuple[str, str, bool]] = []
        for files, label in ((memorized, True), (prompts, False)):
            for f in files:
                ps = read_prompts(f, column=column)
                rows += [(p, f.name, label) for p in (ps[:limit] if limit else ps)]
        mdl = _load(model, device, dtype, allow_download)
        df = prompt_metrics(
            mdl, [r[0] for r in rows], metrics=_split(metrics, "metrics"), n_generations=n_generations, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, flipd_t_max=flipd_t_max, flipd_t_min=flipd_t_min, n_probes=n_probes, seed=seed, batch_size=batch_size, flipd_point=flipd_point, progress=None if progress else False,
        )
        df.insert(1, "source", [r[1] for r in rows])
        labels = np.array([r[2] for r in rows])
        if memorized:
            df.insert(2, "memorized", labels)
        path = _write(df, out, "prompt_metrics", fmt)
        mets = [m for m in _split(metrics, "metrics") if m in df.columns]
        _hist_figure(df, mets, out / "prompt_metrics.png", labels if memorized and prompts else None)
        if memorized and prompts:
            table = detection_table(df, labels, mets)
            _write(table, out, "detection", fmt)
            console.print(table.to_string(index=False))
    console.print(f"wrote {path} ({len(df)} prompts)")


@t2i_app.command("attribute")
def attribute_command(
    model: str = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    prompt: list[str] = typer.Option([], "--prompt", help="A prompt (repeatable)."),
    prompts: Path | None = typer.Option(None, "--prompts", "-p", help="Prompt file (.txt or table)."),
    column: str | None = typer.Option(None, help="Caption column of a table file."),
    metric: str = typer.Option("a_cfg", help="a_cfg, a_scfg, a_flipd or wen."),
    n_generations: int = typer.Option(1, help="DDIM generations."),
    num_inference_steps: int = typer.Option(50, "--num-inference-steps", help="DDIM steps."),
    steps: int | None = typer.Option(None, "--steps", hidden=True, help="Deprecated spelling of --num-inference-steps."),
    guidance_scale: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    flipd_t_max: float = typer.Option(0.2, help="A^FLIPD: T uniform on \\[flipd_t_min, flipd_t_max]."),
    flipd_t_min: float = typer.Option(0.01, help="A^FLIPD: lower end of T (the paper: 0; FLIPD near t = 0 measures network error)."),
    batch_size: int = typer.Option(8, help="Prompts attributed together."),
    flipd_point: str = typer.Option("state", help="A^FLIPD at the sampler 'state' x_t (eq. 28) or at psi(t) x0_hat ('denoised')."),
    wrt: str = typer.Option("output", help="Gradient w.r.t. the text encoder's 'output' embeddings (paper, Wen et al.) or its 'input' token embeddings."),
    limit: int | None = typer.Option(None, help="Use only the first LIMIT prompts of the file."),
    figures: int = typer.Option(20, help="Bar charts for the first FIGURES prompts."),
    seed: int = typer.Option(0, help="Seed."),
    out: Path = typer.Option(Path("t2i_attribution"), "--out", "-o", help="Output folder."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    device: str = typer.Option("cpu", help="cpu, cuda, ..."),
    dtype: str = typer.Option("auto", help="auto, float32, float16, bfloat16."),
    allow_download: bool = typer.Option(False, help="Let from_pretrained download a hub id."),
) -> None:
    """Per-token attribution of a prompt metric (gradient w.r.t. the text-encoder output, normalised)."""
    with user_errors("t2i"):
        import pandas as pd

        from .._validation import check_choice, check_positive_int
        from ..text2image import read_prompts, token_attributions
        from ..text2image.prompt_metrics import FLIPD_POINTS, PROMPT_METRICS

        _check_common(out=out, fmt=fmt, device=device, dtype=dtype, model=model, allow_download=allow_download, seed=seed)
        check_choice(metric, "--metric", PROMPT_METRICS)
        check_choice(flipd_point, "--flipd-point", FLIPD_POINTS)
        check_choice(wrt, "--wrt", ("output", "input"))
        _check_flipd_window(flipd_t_min, flipd_t_max)
        num_inference_steps = _check_guided_sampling(guidance_scale, num_inference_steps, steps)
        for value, name in ((n_generations, "--n-generations"), (num_inference_steps, "--num-inference-steps"), (batch_size, "--batch-size")):
            check_positive_int(value, name)
        check_positive_int(figures, "--figures", minimum=0)
        if limit is not None and limit < 1:
            raise ValueError(f"--limit={limit} must be >= 1")
        ps = list(prompt)
        if column is not None and prompts is None:
            raise ValueError(f"--column {column} names the caption column of a --prompts table; give --prompts too")
        if prompts is not None:
            fp = read_prompts(prompts, column=column)
            ps += fp[:limit] if limit else fp
        if not ps:
            raise ValueError("give --prompt TEXT (repeatable) or --prompts FILE")
        mdl = _load(model, device, dtype, allow_download)
        frames, tops = [], []
        atts = token_attributions(
            mdl, ps, metric=metric, n_generations=n_generations, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            flipd_t_max=flipd_t_max, flipd_t_min=flipd_t_min, seed=seed, batch_size=batch_size, wrt=wrt, flipd_point=flipd_point,
        )
        for i, (p, a) in enumerate(zip(ps, atts)):
            f = a.to_frame()
            f.insert(0, "prompt_index", i)
            f.insert(1, "prompt", p)
            frames.append(f)
            tops.append({"prompt_index": i, "prompt": p, "top_word": a.top_word, "top_token": a.top_token, "top_word_score": float(a.word_scores.max())})
            if i < figures:
                _attribution_figure(a, out / f"attribution_{i:04d}.png")
        path = _write(pd.concat(frames, ignore_index=True), out, "attribution", fmt)
        _write(pd.DataFrame(tops), out, "top_words", fmt)
    console.print(f"wrote {path} ({len(ps)} prompts)")


def _attribution_figure(a: Any, path: Path) -> None:
    from ..reports.figures import write_attribution_figure

    write_attribution_figure(a, path)


@t2i_app.command("mitigate")
def mitigate_command(
    model: str = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    prompt: str = typer.Option(..., "--prompt", help="The memorized prompt."),
    reference: Path = typer.Option(..., "--reference", help="The memorized training image (file)."),
    metric: str = typer.Option("a_flipd", help="Metric whose attributions choose the tokens."),
    ks: str = typer.Option("1,2,3,4,6,8", help="Numbers of tokens to perturb."),
    methods: str = typer.Option("attribution,uniform,rta", help="Any of attribution, uniform, rta."),
    repeats: int = typer.Option(5, help="Repeats per (method, k)."),
    rewriter: str = typer.Option("rules", help="rules (offline, Box 1) or chat (OpenAI-compatible endpoint from $LIDMEM_LLM_URL / $OPENAI_API_KEY)."),
    chat_model: str = typer.Option("gpt-4", help="Model name for --rewriter chat."),
    alignment_model: str | None = typer.Option(None, help="Local CLIP model folder for prompt-image alignment (CLIP score); none: alignment is NaN."),
    n_generations: int = typer.Option(4, help="Generations per rewritten prompt."),
    num_inference_steps: int = typer.Option(50, "--num-inference-steps", help="DDIM steps."),
    steps: int | None = typer.Option(None, "--steps", hidden=True, help="Deprecated spelling of --num-inference-steps."),
    guidance_scale: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Seed."),
    out: Path = typer.Option(Path("t2i_mitigation"), "--out", "-o", help="Output folder."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    device: str = typer.Option("cpu", help="cpu, cuda, ..."),
    dtype: str = typer.Option("auto", help="auto, float32, float16, bfloat16."),
    allow_download: bool = typer.Option(False, help="Let from_pretrained download a hub id."),
) -> None:
    """Rewrite the attributed tokens of a memorized prompt; similarity to the training image per k and method."""
    with user_errors("t2i"):
        from ..text2image import ChatRewriter, RuleRewriter, clip_alignment, evaluate_mitigation

        from .._validation import check_choice, check_positive_int
        from ..text2image.prompt_metrics import PROMPT_METRICS

        _check_common(out=out, fmt=fmt, device=device, dtype=dtype, model=model, allow_download=allow_download, seed=seed)
        check_choice(metric, "--metric", PROMPT_METRICS)
        _check_metrics(methods, "--methods", ("attribution", "uniform", "rta"))
        from .._validation import check_int_list

        check_int_list(ks, "--ks")
        num_inference_steps = _check_guided_sampling(guidance_scale, num_inference_steps, steps)
        for value, name in ((repeats, "--repeats"), (n_generations, "--n-generations"), (num_inference_steps, "--num-inference-steps")):
            check_positive_int(value, name)
        if not reference.is_file():
            raise ValueError(f"--reference {reference} is not an image file")
        _check_images(reference)
        if alignment_model is not None and not Path(alignment_model).is_dir():
            raise ValueError(f"--alignment-model {alignment_model} is not a folder (a local CLIP model)")
        if rewriter not in ("rules", "chat"):
            raise ValueError(f"--rewriter={rewriter!r} must be 'rules' or 'chat'")
        rw = RuleRewriter() if rewriter == "rules" else ChatRewriter(chat_model)
        if rewriter == "chat":
            rw.endpoint()  # $LIDMEM_LLM_URL set, https (http only for localhost): checked before the model loads
        mdl = _load(model, device, dtype, allow_download)
        ref, _ = _read_images(reference, mdl)
        align = clip_alignment(alignment_model, device=device) if alignment_model else None
        df = evaluate_mitigation(
            mdl, prompt, ref[0], metric=metric, ks=_ints(ks, "ks"), methods=_split(methods, "methods"), repeats=repeats, rewriter=rw, alignment=align,
            n_generations=n_generations, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
        )
        path = _write(df, out, "mitigation", fmt)
        _mitigation_figure(df, out / "mitigation.png")
    console.print(f"wrote {path} and {out / 'mitigation.png'}")


def _mitigation_figure(df: Any, path: Path) -> None:
    from ..reports.figures import write_mitigation_figure

    write_mitigation_figure(df, path)


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add the ``lidmem t2i`` command group."""
    app.add_typer(t2i_app, name="t2i")
