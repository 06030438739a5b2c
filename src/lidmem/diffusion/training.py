"""Denoising score matching (DSM) for any score network under any lidmem SDE.

One training step draws a minibatch ``x0`` (with replacement), times ``t`` in ``[t_min, 1]``
and noise ``eps ~ N(0, I)``, forms ``x_t = psi(t) x0 + sigma(t) eps`` and regresses the network
output on the target of its parametrisation (mean squared error over all features):

============ ============================== ===============================================
prediction   target                         equivalent score-matching weight lambda(t)
============ ============================== ===============================================
"epsilon"    ``eps``                        ``sigma(t)^2``  (Ho et al. 2020)
"score"      ``-eps / sigma(t)``            ``1`` (the loss is taken on ``sigma * out``,
                                            i.e. weight ``sigma^2`` as well, for stability)
"x0"         ``x0``                         ``sigma^4 / psi^2``
"v"          ``psi eps - sigma x0``         VP/DDPM only (Salimans & Ho 2022)
============ ============================== ===============================================

Times: a fraction ``1 - log_uniform_fraction`` of each batch is uniform on ``[t_min, 1]``, the
rest log-uniform on ``[t_min, 1]``. The log-uniform part puts enough weight on tiny ``t``, which
point masses (LID 0) need: with uniform times only, a VP model of the von Mises mixture misses
the point mass at the origin after 5k steps.

Weights are tracked with an exponential moving average (EMA); the EMA weights are what the
returned :class:`~lidmem.diffusion.score.ScoreModel` and the checkpoint carry.

Checkpoints: ``checkpoint="model.safetensors"`` writes the EMA network every
``checkpoint_every`` steps (and at the end, and on Ctrl-C) with
:func:`lidmem.diffusion.checkpoint.save_checkpoint` (SDE, prediction, data shape and training
settings in its metadata), and the resumable training state (raw weights, optimizer, step,
random-generator state, loss history) in the sidecar ``model.safetensors.train_state.safetensors``
(tensors in safetensors, everything else as JSON in its metadata; nothing is pickled).
With ``resume=True`` a later call continues from it, and the result is bit-identical to an
uninterrupted run (same seed, same settings; CPU).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .._validation import check_choice, check_points, check_positive_int, check_probability, make_generator, renamed_argument
from ..utils import append_dims, progress as _progress, resolve_device
from .checkpoint import save_checkpoint
from .score import PREDICTIONS, ScoreModel
from .sde import SDE

__all__ = ["TrainResult", "StopTraining", "train_score_model", "sample_times", "dsm_target", "train_state_path"]

_STATE_SUFFIX = ".train_state.safetensors"


@dataclass
class TrainResult:
    """Output of :func:`train_score_model`.

    Attributes
    ----------
    model : ScoreModel
        The EMA network wrapped as a score model (eval mode; ``forward`` returns the score).
    net : nn.Module
        The raw (non-EMA) trained network.
    losses : ndarray of shape (steps,)
        DSM loss of every step taken so far (including steps restored from a checkpoint).
    steps : int
        Total number of optimisation steps the weights have seen.
    resumed_from : int
        Step the run resumed from (0 for a fresh run).
    elapsed_s : float
        Wall-clock seconds spent in this call.
    checkpoint : Path or None
        Where the EMA checkpoint was written.
    stopped_at : int or None
        Step at which ``callback`` raised :class:`StopTraining` (None: ran to ``steps``); the
        checkpoint then holds the last periodic save before that step, not the stopped step.
    """

    model: ScoreModel
    net: nn.Module
    losses: np.ndarray
    steps: int
    resumed_from: int = 0
    elapsed_s: float = 0.0
    checkpoint: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    stopped_at: int | None = None


class StopTraining(Exception):
    """Raised by a ``callback`` of :func:`train_score_model` to stop the run; the step in progress
    is not saved, so the checkpoint keeps the last periodic save before it."""


def train_state_path(checkpoint: str | Path) -> Path:
    """Path of the resumable-state sidecar that belongs to ``checkpoint``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + _STATE_SUFFIX)


def sample_times(
    n: int,
    *,
    t_min: float,
    log_uniform_fraction: float,
    seed: int | torch.Generator | None = None,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training times of shape ``(n,)``: the first ``round(n * log_uniform_fraction)`` are
    log-uniform on ``[t_min, 1]``, the others uniform on ``[t_min, 1]``. ``seed``: an int, a
    ``torch.Generator`` (consumed) or None (a fresh seed); ``generator`` is its deprecated alias."""
    seed = renamed_argument(seed, generator, new="seed", old="generator", func="sample_times")
    u = torch.rand(n, generator=make_generator(seed, device=device), device=device)
    n_log = int(round(n * log_uniform_fraction))
    t = t_min + (1.0 - t_min) * u
    if n_log:
        t[:n_log] = torch.exp(math.log(t_min) + (0.0 - math.log(t_min)) * u[:n_log])
    return t


def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """One exponential-moving-average step: ``p_ema <- decay * p_ema + (1 - decay) * p``
    for every parameter; buffers are copied."""
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), net.parameters()):
            pe.lerp_(pm.detach(), 1.0 - decay)
        for be, bm in zip(ema.buffers(), net.buffers()):
            be.copy_(bm)


def dsm_target(prediction: str, x0: torch.Tensor, eps: torch.Tensor, psi: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Regression target of a parametrisation; ``psi`` and ``sigma`` are broadcast to ``x0``."""
    if prediction == "epsilon":
        return eps
    if prediction == "score":
        return -eps / sigma
    if prediction == "x0":
        return x0
    if prediction == "v":
        return psi * eps - sigma * x0
    raise ValueError(f"prediction={prediction!r} is not supported; choose one of {', '.join(map(repr, PREDICTIONS))}")


def _settings(net: nn.Module, sde: SDE, prediction: str, data: torch.Tensor, batch_size: int, lr: float, ema_decay: float,
              seed: int, t_min: float, log_uniform_fraction: float) -> dict[str, Any]:
    return {
        "network": getattr(net, "config", None),
        "sde": sde.to_config(),
        "prediction": prediction,
        "n_train": int(data.shape[0]),
        "data_shape": list(data.shape[1:]),
        "batch_size": batch_size,
        "lr": lr,
        "ema_decay": ema_decay,
        "seed": seed,
        "t_min": t_min,
        "log_uniform_fraction": log_uniform_fraction,
    }


def _save(path: Path, ema: nn.Module, net: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, step: int,
          losses: list[float], sde: SDE, prediction: str, data_shape: list[int], settings: dict[str, Any],
          extra: dict[str, Any] | None) -> None:
    meta_extra = {"training": {**settings, "steps": step}, **(extra or {})}
    save_checkpoint(path, ema, kind="score_model", sde=sde, prediction=prediction, data_shape=data_shape, extra=meta_extra)
    write_train_state(train_state_path(path), step=step, net=net, ema=ema, opt=opt, gen=gen, losses=losses, settings=settings)


def write_train_state(path: Path, *, step: int, net: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                      losses: list[float], settings: dict[str, Any]) -> None:
    """Write the resumable state as safetensors (tensors) + JSON metadata (the rest); atomic rename."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("net", net), ("ema", ema)):
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous().clone()
    opt_state = opt.state_dict()
    opt_json: dict[str, Any] = {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, entries in opt_state["state"].items():
        opt_json["state"][str(pid)] = {}
        for k, v in entries.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
                opt_json["state"][str(pid)][k] = "tensor"
            else:
                opt_json["state"][str(pid)][k] = v
    tensors["generator"] = gen.get_state().cpu().clone()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    meta = {"step": str(int(step)), "optimizer": json.dumps(opt_json), "settings_json": json.dumps(settings, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def read_train_state(path: Path, device: torch.device) -> dict[str, Any]:
    """Inverse of :func:`write_train_state`: ``{"step", "net", "ema", "optimizer", "generator", "losses", "settings_json"}``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    opt_json = json.loads(meta["optimizer"])
    opt_state: dict[int, dict[str, Any]] = {}
    for pid, entries in opt_json["state"].items():
        opt_state[int(pid)] = {k: (tensors[f"opt.{pid}.{k}"].to(device) if v == "tensor" else v) for k, v in entries.items()}
    return {
        "step": int(meta["step"]),
        "net": {k[4:]: v for k, v in tensors.items() if k.startswith("net.")},
        "ema": {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")},
        "optimizer": {"state": opt_state, "param_groups": opt_json["param_groups"]},
        "generator": tensors["generator"],
        "losses": tensors["losses"],
        "settings_json": meta["settings_json"],
    }


def train_score_model(
    net: nn.Module,
    data: Any,
    sde: SDE,
    *,
    prediction: str = "epsilon",
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    ema_decay: float = 0.999,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    resume: bool = True,
    t_min: float = 1e-4,
    log_uniform_fraction: float = 0.5,
    extra: dict[str, Any] | None = None,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    callback: Callable[[int, nn.Module, nn.Module], str | None] | None = None,
) -> TrainResult:
    """Train ``net`` by denoising score matching under ``sde`` (see the module docstring).

    Parameters
    ----------
    net : nn.Module
        Called as ``net(x_t, sde.model_time(t))`` with ``x_t`` of the data's shape ``(b, ...)``
        and times ``(b,)``; returns a tensor of ``x_t``'s shape. It is *not* modified: a deep
        copy is trained. It needs a ``config`` dict (see :mod:`lidmem.diffusion.networks`)
        when ``checkpoint`` is given.
    data : array-like of shape (n, d) or (n, c, h, w)
        Training points (numpy or torch; not modified), cast to the dtype of ``net``'s
        parameters.
    sde : SDE
        Forward process (:class:`~lidmem.diffusion.sde.VPSDE`, ``VESDE``, ``DDPMSchedule``).
    prediction : {"epsilon", "score", "x0", "v"}, default="epsilon"
        What the network learns to predict; the returned ScoreModel converts it to the score.
    steps : int
        Total number of optimisation steps (when resuming, the steps already taken count).
    batch_size : int, default=128
        Minibatch size; points are drawn with replacement, so it may exceed ``n``.
    lr : float, default=1e-3
        Adam learning rate (constant).
    ema_decay : float, default=0.999
        EMA decay of the weights; the decay used at step k is ``min(ema_decay, (1 + k) / (10 + k))``
        (warm-up, so short runs are not dominated by the initial weights); 0 disables the
        average (EMA = raw weights).
    seed : int, default=0
        Seeds weight-independent randomness (minibatches, times, noise). Initialise ``net``
        under your own seed for fully reproducible runs.
    checkpoint : path, optional
        ``.safetensors`` file for the EMA weights; a ``.train_state.safetensors`` sidecar holds the
        resumable state. Written every ``checkpoint_every`` steps, at the end and on Ctrl-C.
    checkpoint_every : int, default=1000
    resume : bool, default=True
        Continue from ``checkpoint``'s sidecar when it exists (settings must match).
    t_min : float, default=1e-4
        Smallest training time; times lie in ``[t_min, 1]``.
    log_uniform_fraction : float, default=0.5
        Fraction of each batch whose times are log-uniform (the rest uniform).
    extra : dict, optional
        Free-form JSON metadata stored in the checkpoint (e.g. a data description).
    progress : bool or None, default=None
        Progress bar with the running loss (None: only on a terminal).
    device : str or torch.device, optional
        Where to train; default: the device of ``net``'s parameters.
    callback : callable, optional
        ``callback(step, net, ema)`` after every step (``step`` = steps taken so far; the raw and
        EMA networks); a returned string is shown in the progress bar; raising
        :class:`StopTraining` ends the run before the step is checkpointed (e.g.
        :class:`lidmem.monitor.MemorizationMonitor`'s alarm).

    Returns
    -------
    TrainResult
        ``.model`` is the EMA score model (eval mode), ``.losses`` the per-step losses.

    Raises
    ------
    ValueError
        On invalid arguments, or when a checkpoint to resume was written with other settings.
    KeyboardInterrupt
        Re-raised after the checkpoint (if any) has been saved.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module called as net(x, t); got {type(net).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a lidmem SDE (VPSDE, VESDE, DDPMSchedule); got {type(sde).__name__}")
    check_choice(prediction, "prediction", PREDICTIONS)
    if prediction == "v" and not sde.variance_preserving:
        raise ValueError(f"prediction='v' needs a variance-preserving SDE; got {sde!r}; use prediction='epsilon'")
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr={lr!r} must be a positive float; try lr=1e-3")
    ema_decay = check_probability(ema_decay, "ema_decay", low=0.0, high=1.0)
    if ema_decay == 1.0:
        raise ValueError("ema_decay=1.0 would never update the average; use a value in [0, 1), e.g. 0.999")
    t_min = check_probability(t_min, "t_min", low=0.0, high=1.0, closed=False)
    log_uniform_fraction = check_probability(log_uniform_fraction, "log_uniform_fraction")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {seed!r}")
    if checkpoint is not None and not isinstance(getattr(net, "config", None), dict):
        raise TypeError(f"{type(net).__name__} has no config dict, so it cannot be checkpointed; pass checkpoint=None or give it a config")

    dev = resolve_device(device, net)
    param = next(iter(net.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.get_default_dtype()
    x_all = check_points(data, "data", min_samples=1, min_ndim=2).to(device=dev, dtype=dtype, copy=True)
    if x_all.ndim == 4:  # images: lidmem's [-1, 1] convention (raises for 0..255, warns for [0, 1])
        from .._validation import check_image_range

        check_image_range(x_all, "data")
    settings = _settings(net, sde, prediction, x_all, batch_size, float(lr), ema_decay, int(seed), t_min, log_uniform_fraction)

    model_net = copy.deepcopy(net).to(dev).train()
    ema = copy.deepcopy(model_net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model_net.parameters(), lr=float(lr))
    gen = make_generator(int(seed), device=dev)
    losses: list[float] = []
    step = 0

    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and resume and train_state_path(ckpt_path).is_file():
        state = read_train_state(train_state_path(ckpt_path), dev)
        stored = json.loads(state["settings_json"])
        mine = json.loads(json.dumps(settings, sort_keys=True))
        if stored != mine:
            diff = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
            raise ValueError(
                f"cannot resume from {ckpt_path}: it was trained with different settings ({', '.join(diff)}); "
                "pass resume=False to start over or use another checkpoint path"
            )
        model_net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"].cpu() if dev.type == "cpu" else state["generator"])
        losses = [float(v) for v in state["losses"]]
        step = int(state["step"])
    resumed_from = step

    n = x_all.shape[0]
    ndim = x_all.ndim
    start = time.perf_counter()

    def save() -> None:
        if ckpt_path is not None:
            _save(ckpt_path, ema, model_net, opt, gen, step, losses, sde, prediction, settings["data_shape"], settings, extra)

    stopped_at: int | None = None
    note: str | None = None
    bar = _progress(range(step, steps), total=steps, desc="training", disable=None if progress is None else not progress)
    if hasattr(bar, "update") and step:
        bar.update(step)  # type: ignore[union-attr]
    try:
        for _ in bar:
            gen_state = gen.get_state()
            idx = torch.randint(n, (batch_size,), generator=gen, device=dev)
            x0 = x_all[idx]
            t = sample_times(batch_size, t_min=t_min, log_uniform_fraction=log_uniform_fraction, seed=gen, device=dev)
            eps = torch.randn(x0.shape, generator=gen, device=dev, dtype=x0.dtype)
            t = t.to(x0.dtype)
            psi = append_dims(sde.psi(t).to(x0.dtype), ndim)
            sigma = append_dims(sde.sigma(t).to(x0.dtype), ndim)
            xt = psi * x0 + sigma * eps
            out = model_net(xt, sde.model_time(t))
            target = dsm_target(prediction, x0, eps, psi, sigma)
            if prediction == "score":
                loss = ((sigma * (out - target)) ** 2).mean()
            else:
                loss = ((out - target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay = min(ema_decay, (1.0 + step) / (10.0 + step))  # EMA warm-up, as in diffusers' EMAModel
            ema_update(ema, model_net, decay)
            losses.append(float(loss.detach()))
            step += 1
            if callback is not None:
                try:
                    note = callback(step, model_net, ema) or note
                except StopTraining:
                    stopped_at = step
                    break
            if hasattr(bar, "set_postfix") and step % 50 == 0:
                post = {"loss": f"{np.mean(losses[-50:]):.4f}"}
                if note:
                    post["monitor"] = note
                bar.set_postfix(**post)  # type: ignore[union-attr]
            if ckpt_path is not None and step % checkpoint_every == 0 and step < steps:
                save()
    except KeyboardInterrupt:
        # discard the step in progress: rewind the generator to where it stood before it
        if "gen_state" in locals() and len(losses) == step:
            gen.set_state(gen_state)
        save()
        raise
    finally:
        if hasattr(bar, "close"):
            bar.close()  # type: ignore[union-attr]
    if stopped_at is None and (step > resumed_from or (ckpt_path is not None and not ckpt_path.is_file())):
        save()

    model_net.eval()
    model = ScoreModel(ema, sde, prediction=prediction).eval()
    return TrainResult(
        model=model,
        net=model_net,
        losses=np.asarray(losses, dtype=np.float64),
        steps=step,
        resumed_from=resumed_from,
        elapsed_s=time.perf_counter() - start,
        checkpoint=ckpt_path,
        settings=settings,
        stopped_at=stopped_at,
    )
