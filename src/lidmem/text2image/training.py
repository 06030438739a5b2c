"""Training a small text-conditional diffusion model (diffusers components) by denoising score matching.

The UNet (``UNet2DConditionModel``, epsilon prediction) and the text encoder (``CLIPTextModel``)
are trained JOINTLY on (image, caption) pairs. Caption dropout replaces a caption by the empty
prompt ``""`` with probability ``caption_dropout`` so that the same network also learns the
unconditional score s(x; t, ∅) needed for classifier-free guidance.

Time convention: continuous t in [0, 1] with the scheduler's real ᾱ table
(:class:`lidmem.diffusion.sde.DDPMSchedule`): x_t = ψ(t) x_0 + σ(t) ε, and the UNet receives
the fractional timestep ``sde.model_time(t) = t (N - 1)`` — exactly what the lidmem adapters feed it
at inference. The loss is ``E ||ε_θ(x_t, t, c) − ε||²``. t is drawn uniformly on [t_min, 1] for a
fraction ``1 − log_uniform_fraction`` of each batch and log-uniformly on [t_min, 1] for the rest, so
that the small noise levels FLIPD probes are well trained.

The result is saved as a diffusers folder (``unet/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``; no VAE: pixel space) that ``lidmem.text2image.load_text2image`` reads.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import check_positive_int, check_probability
from ..diffusion.training import ema_update, sample_times
from ..utils import progress as progress_bar

__all__ = ["Text2ImageTrainResult", "train_text2image", "save_text2image_folder"]


@dataclass
class Text2ImageTrainResult:
    """What :func:`train_text2image` returns.

    Attributes
    ----------
    unet, text_encoder : torch.nn.Module
        EMA weights, in eval mode.
    tokenizer, scheduler
        The tokenizer and diffusers scheduler the model was trained with.
    losses : ndarray of shape (steps,)
        Training loss per step (of the raw, non-EMA weights).
    info : dict
        ``steps``, ``cpu_time_s`` (process CPU seconds spent in this call), ``wall_time_s``, ...
    """

    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    losses: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def save_text2image_folder(
    path: str | os.PathLike[str], *, unet: Any, text_encoder: Any, tokenizer: Any, scheduler: Any, extra: dict[str, Any] | None = None
) -> None:
    """Save components as a diffusers folder: ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``.

    ``extra`` (JSON-serialisable) is written to ``lidmem.json`` beside them (data set provenance).
    """
    os.makedirs(path, exist_ok=True)
    unet.save_pretrained(os.path.join(path, "unet"))
    text_encoder.save_pretrained(os.path.join(path, "text_encoder"))
    tokenizer.save_pretrained(os.path.join(path, "tokenizer"))
    scheduler.save_pretrained(os.path.join(path, "scheduler"))
    if extra is not None:
        with open(os.path.join(path, "lidmem.json"), "w", encoding="utf-8") as fh:
            json.dump(extra, fh, indent=2)


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a resumable training state written by :func:`train_text2image`.

    Loaded with ``torch.load(..., weights_only=True)``: only tensors, numbers, strings and
    plain containers are accepted, so a crafted file cannot run code (a pickle with any other
    object is refused with ValueError before anything in it is called).
    """
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {path} is not a lidmem training state (refused by torch.load(weights_only=True): {first})") from None
    keys = ("unet", "text_encoder", "ema_unet", "ema_text_encoder", "optimizer", "generator", "losses", "step")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise ValueError(f"checkpoint {path} is not a lidmem training state (needs the keys {', '.join(keys)})")
    return state


def train_text2image(
    images: torch.Tensor,
    captions: list[str],
    *,
    unet: Any,
    text_encoder: Any,
    tokenizer: Any,
    scheduler: Any,
    steps: int = 6000,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: int = 200,
    train_text_encoder: bool = True,
    caption_dropout: float = 0.15,
    ema_decay: float = 0.999,
    ema_start: int = 0,
    t_min: float = 1e-4,
    log_uniform_fraction: float = 0.3,
    seed: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 500,
    resume: bool = True,
    log_file: str | os.PathLike[str] | None = None,
    log_every: int = 100,
    progress: bool | None = None,
) -> Text2ImageTrainResult:
    """Train ``unet`` and ``text_encoder`` jointly by conditional DSM with caption dropout.

    Parameters
    ----------
    images : Tensor of shape (n, c, h, w)
        Training images (duplicates included as repeated rows), in the model's data range.
    captions : list of str, length n
        The caption of each row.
    unet : diffusers.UNet2DConditionModel
        Epsilon-prediction network; ``cross_attention_dim`` = the text encoder's hidden size.
    text_encoder : transformers.CLIPTextModel
    tokenizer : transformers.CLIPTokenizer
        Captions are padded/truncated to ``tokenizer.model_max_length`` (as ``encode_prompt`` does).
    scheduler : diffusers scheduler with ``alphas_cumprod``
        Its ᾱ table defines the forward process.
    steps : int, default=6000
    batch_size : int, default=128
        Rows drawn uniformly with replacement per step.
    lr : float, default=1e-3
        AdamW learning rate (linear warm-up over ``warmup`` steps, then constant).
    train_text_encoder : bool, default=True
        False keeps the text encoder frozen at its (random) initialisation: its per-position
        outputs then stay close to each token's own embedding, so the UNet has to attend to the
        positions of the words it uses (selective cross-attention, as in Stable Diffusion with
        its frozen CLIP).
    caption_dropout : float, default=0.15
        Probability of replacing a caption by ``""`` (for classifier-free guidance).
    ema_decay : float, default=0.999
    ema_start : int, default=0
        The EMA copies are reset to the raw weights after step ``ema_start`` and averaged from
        there on (the first steps' near-random weights otherwise linger in a 0.999 EMA of a
        short run).
    t_min, log_uniform_fraction : float
        Training-time distribution, see :func:`lidmem.diffusion.training.sample_times`.
    seed : int, default=0
        Seeds initialisation-independent randomness (batches, noise, times, dropout).
    checkpoint : path or None
        ``.pt`` file for resumable state (weights, EMA, optimiser, RNG, losses) written every
        ``checkpoint_every`` steps and at the end; with ``resume=True`` an existing one is resumed.
    log_file : path or None
        Appends ``step loss elapsed`` lines every ``log_every`` steps.
    progress : bool or None
        Show a progress bar (None: tqdm's default).

    Returns
    -------
    Text2ImageTrainResult
    """
    from ..diffusion.sde import DDPMSchedule

    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    caption_dropout = check_probability(caption_dropout, "caption_dropout")
    ema_decay = check_probability(ema_decay, "ema_decay")
    ema_start = check_positive_int(ema_start, "ema_start", minimum=0)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise TypeError(f"images must be a tensor of shape (n, c, h, w); got {type(images).__name__} {getattr(images, 'shape', '')}")
    if len(captions) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(captions)} captions; pass one caption per image")
    if not 0 < t_min < 1:
        raise ValueError(f"t_min={t_min} must lie in (0, 1); try t_min=1e-4")

    sde = DDPMSchedule.from_scheduler(scheduler)
    max_len = int(tokenizer.model_max_length)
    enc = lambda texts: torch.tensor(tokenizer(texts, padding="max_length", max_length=max_len, truncation=True).input_ids)  # noqa: E731
    ids_all = enc(list(captions))
    ids_empty = enc([""])[0]
    data = images.detach().float()

    if not isinstance(train_text_encoder, bool):
        raise TypeError(f"train_text_encoder must be a bool; got {type(train_text_encoder).__name__}")
    if not train_text_encoder:
        text_encoder.requires_grad_(False)
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if train_text_encoder else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    ema_te = copy.deepcopy(text_encoder).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(int(seed))
    losses: list[float] = []
    start = 0
    cpu_before = 0.0
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        state = load_train_state(checkpoint)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_te.load_state_dict(state["ema_text_encoder"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        losses = list(state["losses"])
        start = int(state["step"])
        cpu_before = float(state.get("cpu_time_s", 0.0))

    def save_state(step: int) -> None:
        if checkpoint is None:
            return
        tmp = f"{checkpoint}.tmp"
        torch.save(
            {
                "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                "ema_unet": ema_unet.state_dict(), "ema_text_encoder": ema_te.state_dict(),
                "optimizer": opt.state_dict(), "generator": gen.get_state(), "losses": [float(v) for v in losses],
                "step": int(step), "cpu_time_s": float(cpu_before + time.process_time() - cpu0),
            },
            tmp,
        )
        os.replace(tmp, checkpoint)

    unet.train()
    text_encoder.train(train_text_encoder)
    cpu0, wall0 = time.process_time(), time.time()
    log = open(log_file, "a", encoding="utf-8") if log_file is not None else None
    try:
        for step in progress_bar(range(start, steps), total=steps - start, desc="train t2i", disable=None if progress is None else not progress):
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / max(warmup, 1))
            idx = torch.randint(data.shape[0], (batch_size,), generator=gen)
            x0 = data[idx]
            ids = ids_all[idx].clone()
            drop = torch.rand(batch_size, generator=gen) < caption_dropout
            ids[drop] = ids_empty
            t = sample_times(batch_size, t_min=t_min, log_uniform_fraction=log_uniform_fraction, seed=gen)
            noise = torch.randn(x0.shape, generator=gen)
            xt = sde.perturb(x0, t, noise)
            with torch.set_grad_enabled(train_text_encoder):
                hidden = text_encoder(ids)[0]
            eps = unet(xt, sde.model_time(t), encoder_hidden_states=hidden).sample
            loss = (eps - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            done = step + 1
            decay = 0.0 if done <= ema_start else ema_decay
            ema_update(ema_unet, unet, decay)
            if train_text_encoder:
                ema_update(ema_te, text_encoder, decay)
            losses.append(float(loss.detach()))
            if log is not None and (done % log_every == 0 or done == steps):
                recent = float(np.mean(losses[-log_every:]))
                log.write(f"step {done} loss {recent:.4f} cpu_s {cpu_before + time.process_time() - cpu0:.0f} wall_s {time.time() - wall0:.0f}\n")
                log.flush()
            if done % checkpoint_every == 0 and done < steps:
                save_state(done)
        save_state(steps)
    finally:
        if log is not None:
            log.close()
    info = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "caption_dropout": caption_dropout, "ema_decay": ema_decay, "ema_start": ema_start,
        "train_text_encoder": train_text_encoder,
        "t_min": t_min, "log_uniform_fraction": log_uniform_fraction, "seed": seed,
        "cpu_time_s": cpu_before + time.process_time() - cpu0, "wall_time_s": time.time() - wall0,
        "final_loss": float(np.mean(losses[-200:])) if losses else float("nan"),
    }
    return Text2ImageTrainResult(ema_unet, ema_te, tokenizer, scheduler, np.asarray(losses), info)
